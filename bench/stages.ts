/**
 * Staged host bakes on `--target local`, on a copy of the reference pipeline in a folder of its
 * own: a release-only change (one line of the `replays` release) bakes the release stage alone,
 * against a bake that starts below it (a playbook input changed: the host stage and the release
 * stage), both with the boot test, measured in one run on one engine, each side in turn.
 * Also: the bytes the release stage ships against one archive of every shipped image.
 * With --target vm, the same on `--target vm` (the host stage by Packer's qemu builder, the release
 * written on its disk, each bake boot-tested twice under QEMU): no warm-up bake there, so the first
 * round's bake from the host stage up is also the first (the debootstrap disk comes from bake's
 * cache when another run made it). Under emulation a round takes about 20 minutes.
 * Usage: node dist/bench/stages.js [rounds] [--target vm]   (default 2 rounds; a few minutes a round on local)
 */
import { execa } from "execa";
import {
  appendFileSync,
  cpSync,
  existsSync,
  mkdtempSync,
  readFileSync,
  rmSync,
  statSync,
  writeFileSync,
} from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { env, mid, ratio, seconds } from "./graph.js";

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../..");
const CLI = path.join(ROOT, "dist/src/bake.cjs");
const args = process.argv.slice(2);
const target = args.includes("--target") ? args[args.indexOf("--target") + 1] : "local";
if (target !== "local" && target !== "vm") throw new Error(`--target ${target}: local or vm`);
const rounds = Number(args.find((a) => /^\d+$/.test(a)) ?? 2);

const dir = mkdtempSync(path.join(tmpdir(), "bake-bench-stages-"));
for (const part of ["bake.yml", "bake.lock", "containers", "ansible"])
  if (existsSync(path.join(ROOT, part))) cpSync(path.join(ROOT, part), path.join(dir, part), { recursive: true });
const project = `bench-stages-${process.pid}`;
writeFileSync(
  path.join(dir, "bake.yml"),
  readFileSync(path.join(dir, "bake.yml"), "utf8").replace(/^project: .*$/m, `project: ${project}`),
);
// A value of its own: bake redacts a secret's value wherever it appears in its output (a word as
// common as "bench" would be hidden in every path).
const runEnv = { ...env, DIAGNOSTICS_TOKEN: `stages-token-${process.pid}` };
const bake = async (args: string[]) => {
  const r = await execa(process.execPath, [CLI, ...args], { cwd: dir, env: runEnv, reject: false });
  if (r.exitCode !== 0)
    throw new Error(`bake ${args.join(" ")} failed (exit ${r.exitCode}):\n${r.stderr.slice(-3000)}`);
  return r;
};
const ami = ["ami", "app-host", "--target", target];
let edits = 0;
/** A release-only change: a line in the replays release's code. */
const releaseChange = () => appendFileSync(path.join(dir, "containers/replays/replays/__init__.py"), `# ${++edits}\n`);
/** A change below the release: the playbook (the host stage bakes again). */
const hostChange = () => appendFileSync(path.join(dir, "ansible/host.yml"), `# ${++edits}\n`);

try {
  await bake(["build"]);
  if (target === "local") await bake(ami); // both stages once: the engine's caches warm for both sides
  const full: number[] = [];
  const release: number[] = [];
  for (let round = 0; round < rounds; round++) {
    hostChange();
    full.push(await seconds(() => bake(ami)));
    // On local a release-only bake first, unmeasured, so that both sides run with warm caches;
    // under emulation that is ten minutes more, and the measured bake is the first.
    if (target === "local") {
      releaseChange();
      await bake(ami);
    }
    releaseChange();
    let r: Awaited<ReturnType<typeof bake>> | undefined;
    release.push(await seconds(async () => (r = await bake(ami))));
    if (!/stage host: .* has this key: reused/.test(r!.stderr)) throw new Error("the host stage was not reused");
  }
  const [f, r] = [mid(full), mid(release)];
  console.log(
    `release-only change -> ${target} AMI, boot test included: ${r.toFixed(1)} s; a bake from the host stage up ${f.toFixed(1)} s; ratio ${ratio(r, f)} (goal ${target === "local" ? "<= 12 s and " : ""}<= 0.25x); runs ${release.map((x) => x.toFixed(1)).join(", ")} / ${full.map((x) => x.toFixed(1)).join(", ")}`,
  );
  // What the release stage ships (its archive in the local image), against one archive of every image the AMI ships.
  if (target === "local") {
    const manifest = JSON.parse(readFileSync(path.join(dir, "bake-manifest.json"), "utf8"));
    const image = manifest.amis["app-host"].regions.local;
    const out = mkdtempSync(path.join(tmpdir(), "bake-bench-archives-"));
    const { stdout: container } = await execa("docker", ["create", image, "true"]);
    try {
      await execa("docker", ["cp", `${container}:/var/lib/bake/preload/release.tar`, out]);
    } finally {
      await execa("docker", ["rm", container]);
    }
    const shipped = ["base", "runtime", "diagnostics", "replays"].map(
      (n) => `${project}/${n}:${manifest.images[n].key.slice(0, 12)}`,
    );
    await execa("docker", ["save", "-o", path.join(out, "whole.tar"), ...shipped]);
    const [releaseMb, wholeMb] = ["release.tar", "whole.tar"].map((f) => statSync(path.join(out, f)).size / 1e6);
    rmSync(out, { recursive: true, force: true });
    console.log(
      `preload bytes shipped by the release stage: ${releaseMb.toFixed(1)} MB against ${wholeMb.toFixed(1)} MB for every shipped image in one archive (${ratio(releaseMb, wholeMb)})`,
    );
  }
} finally {
  await execa(process.execPath, [CLI, "prune", "--yes", "--keep-images", "0"], { cwd: dir, env, reject: false });
  const { stdout } = await execa("docker", ["images", "-q", "--filter", `label=bake.project=${project}`]);
  const ids = [...new Set(stdout.split("\n").filter(Boolean))];
  if (ids.length) await execa("docker", ["rmi", "-f", ...ids], { reject: false });
  rmSync(dir, { recursive: true, force: true });
}
