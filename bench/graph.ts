/** What the build benchmarks share: timing, the generated 20-image graph, raw docker builds, a 1 GiB context. */
import { execa } from "execa";
import { closeSync, mkdirSync, mkdtempSync, openSync, writeFileSync, writeSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { ROOT } from "../test/helpers/bake.js";

/**
 * The docker CLI here has no buildx: the raw side is the classic builder, as it falls back to.
 * The benchmarks' pipelines name the busybox rootfs the tests share, outside each project.
 *
 * NODE_EXTRA_CA_CERTS is left out: some of these machines set it to the system's whole CA bundle,
 * which Node reads and parses before any script runs (a bare `node -e ''` took 100 ms with it
 * and 25 ms without, on one machine). That is a cost of the machine's setup to every Node
 * process, not of bake's path, and the docker CLI on the other side does not pay it; the bench
 * prints what it is on the machine it ran on (nodeStartWith below). Every run given this env
 * passes `extendEnv: false`: execa otherwise merges process.env back in, variable and all.
 */
export const env: NodeJS.ProcessEnv = {
  ...process.env,
  CI: "true",
  DOCKER_BUILDKIT: "0",
  BAKE_ALLOW_PATHS: path.join(ROOT, ".bake", "test-cache"),
};
delete env.NODE_EXTRA_CA_CERTS;

/** How long a bare `node -e ''` takes with the environment as given and as the bench runs bake (median of 5). */
export async function nodeStartWith(): Promise<{ given: number; bench: number }> {
  const start = (e: NodeJS.ProcessEnv) =>
    median(5, () => execa(process.execPath, ["-e", ""], { env: e, extendEnv: false }));
  return { given: await start(process.env), bench: await start(env) };
}

export const seconds = async (fn: () => Promise<unknown>): Promise<number> => {
  const t = process.hrtime.bigint();
  await fn();
  return Number(process.hrtime.bigint() - t) / 1e9;
};
export const mid = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
export const median = async (runs: number, fn: () => Promise<unknown>) => {
  const s: number[] = [];
  for (let i = 0; i < runs; i++) s.push(await seconds(fn));
  return mid(s);
};
/**
 * Two commands timed in turn (a, b, a, b, …), `runs` times each: their medians. Taken in turn, a
 * drift in the machine's load (another process, the page cache) falls on both sides alike.
 */
export const pairedMedians = async (runs: number, a: () => Promise<unknown>, b: () => Promise<unknown>) => {
  const [as, bs]: number[][] = [[], []];
  for (let i = 0; i < runs; i++) {
    as.push(await seconds(a));
    bs.push(await seconds(b));
  }
  return { a: mid(as), b: mid(bs) };
};
export const ratio = (a: number, b: number) => `${(a / b).toFixed(2)}x`;

export interface Node {
  name: string;
  parent?: string;
  dockerfile: string;
  context: string;
}

/**
 * Raw docker builds of the graph, parents first, each FROM its parent's id like bake's.
 * `dockerfiles` replaces a node's Dockerfile (kept outside its context, as bake's is).
 */
/**
 * What names this run's images (`bench20-<run>/…`, `bench-raw-<run>/…`): two benches on one engine
 * (a second checkout's, one left running by an interrupted run) never remove each other's images.
 */
export const RUN = String(process.pid);
/** Removes this run's images with these repository prefixes, by tag: an image another project also tags stays. */
export async function removeBenchImages(...prefixes: string[]): Promise<void> {
  const refs = (
    await Promise.all(
      prefixes.map((p) =>
        execa("docker", ["images", "--format", "{{.Repository}}:{{.Tag}}", `${p}-${RUN}/*`]).then((r) => r.stdout),
      ),
    )
  )
    .join("\n")
    .split("\n")
    .filter(Boolean);
  if (refs.length) await execa("docker", ["rmi", ...refs], { reject: false });
}

export async function rawBuilds(
  nodes: Node[],
  rootfsImage: string,
  noCache: boolean,
  dockerfiles?: Map<string, string>,
): Promise<void> {
  const ids = new Map<string, string>();
  for (const n of nodes) {
    const parent = n.parent ? ids.get(n.parent)! : rootfsImage;
    const tag = `bench-raw-${RUN}/${n.name}:latest`;
    // -q prints only the image id: one docker command per node, as a hand-written script would.
    const { stdout } = await execa(
      "docker",
      [
        "build",
        "-q",
        ...(noCache ? ["--no-cache"] : []),
        "--build-arg",
        `BAKE_PARENT=${parent}`,
        "-f",
        dockerfiles?.get(n.name) ?? n.dockerfile,
        "-t",
        tag,
        n.context,
      ],
      { env, extendEnv: false },
    );
    ids.set(n.name, stdout.trim().split("\n").at(-1)!);
  }
}

/** 20 images: a base on the rootfs, four on the base, fifteen on those; each copies 20 files and runs one command. */
export function generatedGraph(rootfs: string): { dir: string; nodes: Node[] } {
  const dir = mkdtempSync(path.join(tmpdir(), "bake-bench-graph-"));
  const nodes: Node[] = [
    { name: "base", dockerfile: path.join(dir, "base/Dockerfile"), context: path.join(dir, "base") },
  ];
  let yaml = `project: bench20-${RUN}\nimages:\n  base: { rootfs: { tar: ${rootfs} }, dockerfile: base/Dockerfile }\n`;
  mkdirSync(path.join(dir, "base"));
  writeFileSync(path.join(dir, "base/Dockerfile"), "ARG BAKE_PARENT\nFROM ${BAKE_PARENT}\nRUN mkdir -p /srv\n");
  for (let i = 1; i < 20; i++) {
    const name = `n${String(i).padStart(2, "0")}`;
    const parent = i <= 4 ? "base" : `n${String(((i - 1) % 4) + 1).padStart(2, "0")}`;
    mkdirSync(path.join(dir, name));
    writeFileSync(
      path.join(dir, name, "Dockerfile"),
      `ARG BAKE_PARENT\nFROM \${BAKE_PARENT}\nCOPY . /srv/${name}\nRUN echo ${name} > /srv/${name}.txt\n`,
    );
    for (let f = 0; f < 20; f++) writeFileSync(path.join(dir, name, `file${f}.txt`), `${name} ${f}\n`.repeat(50));
    yaml += `  ${name}: { parent: ${parent}, dockerfile: ${name}/Dockerfile }\n`;
    nodes.push({ name, parent, dockerfile: path.join(dir, name, "Dockerfile"), context: path.join(dir, name) });
  }
  writeFileSync(path.join(dir, "bake.yml"), yaml);
  return { dir, nodes };
}

/**
 * 16 files of 64 MiB in `dir`, each of one repeated byte per MiB (written, not sparse). The bytes
 * differ from one bench run to the next: the engine keeps what an earlier run sent under bake's
 * session key, and the same files again would measure no transfer at all.
 */
export function gibibyteOfFiles(dir: string, seed = Math.floor(Math.random() * 256)): void {
  mkdirSync(dir, { recursive: true });
  const chunk = Buffer.alloc(1 << 20);
  for (let f = 0; f < 16; f++) {
    const fd = openSync(path.join(dir, `blob${f}.bin`), "w");
    for (let i = 0; i < 64; i++) {
      chunk.fill((f * 64 + i + seed) & 0xff);
      writeSync(fd, chunk);
    }
    closeSync(fd);
  }
}
