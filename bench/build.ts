/**
 * `bake build` against raw `docker build` (classic builder) of the same Dockerfiles, measured
 * side by side in one run:
 *   1. no-op: bake with everything cached vs docker build with a warm layer cache, on the
 *      reference graph and on a generated 20-node graph;
 *   2. cold: `bake build --no-cache` vs the same docker builds with --no-cache, one after another;
 *   3. a 1 GiB build context: bake's peak memory and time vs docker build's, when the build reads
 *      one file of it and when it copies all of it.
 * Usage: node dist/bench/build.js [--quick | --only-big]  (quick skips the 1 GiB context)
 *
 * A gate, not a report: every line has a target, and the run exits 1 when a figure misses its
 * target by more than GATE_SLACK (these machines are noisy; medians of several runs, each side in
 * turn, keep a clean tree inside it). Ratios against a baseline measured in the same run, and the
 * peak memory of a 1 GiB context; no absolute time is a target.
 */
import { execa } from "execa";
import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { withLabels } from "../src/images/context-tar.js";
import { busyboxRootfs } from "../test/helpers/engine.js";
import {
  env,
  generatedGraph,
  gibibyteOfFiles,
  median,
  mid,
  nodeStartWith,
  pairedMedians,
  removeBenchImages,
  RUN,
  ratio,
  rawBuilds,
  seconds,
  type Node,
} from "./graph.js";

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../..");
const CLI = path.join(ROOT, "dist/src/bake.cjs");
const quick = process.argv.includes("--quick");
const onlyBig = process.argv.includes("--only-big");

/**
 * The log folders of the bake runs: the figures compare BuildKit builds with docker build's, and
 * a fallback to the classic builder (an engine that would not open a session) measures something
 * else. Read after the runs, outside their time; every reason found is printed with the gate.
 */
const runLogs: string[] = [];
const bake = async (cwd: string, args: string[]) => {
  const r = await execa(process.execPath, [CLI, ...args], { cwd, env, extendEnv: false });
  const logs = /logs in (\S+)/.exec(r.stdout + r.stderr)?.[1];
  if (logs) runLogs.push(logs);
  return r;
};
/** Why builds of the bench's bake runs took the classic builder (read before the folders go). */
const classicBuilds = new Set<string>();
const readBuilders = () => {
  for (const dir of runLogs.splice(0))
    for (const f of readdirSync(dir).filter((f) => f.endsWith(".log")))
      for (const why of readFileSync(path.join(dir, f), "utf8").matchAll(/building with the classic builder: (.*)/g))
        classicBuilds.add(why[1]);
};

async function rootfsImageOf(dir: string, node: string): Promise<string> {
  // The imported rootfs bake made for this base, so both sides start from the same image.
  const manifest = JSON.parse(readFileSync(path.join(dir, "bake-manifest.json"), "utf8"));
  const inputs = JSON.parse(
    (
      await execa("docker", [
        "image",
        "inspect",
        "-f",
        '{{index .Config.Labels "bake.inputs"}}',
        manifest.images[node].id,
      ])
    ).stdout,
  );
  const { stdout } = await execa("docker", [
    "images",
    "-q",
    "--no-trunc",
    "--filter",
    `label=bake.rootfs=${inputs.rootfs}`,
    "--filter",
    "reference=bake-rootfs",
  ]);
  return stdout.trim().split("\n")[0];
}

const lines: string[] = [];
const say = (s: string) => {
  lines.push(s);
  console.log(s);
};

/** How far past its target a figure may land before the gate fails: noise, not a slower build. */
const GATE_SLACK = 0.15;
const gates: { what: string; value: number; target: number; unit: string }[] = [];
/** Records a figure against its target (at most `target`). */
const gate = (what: string, value: number, target: number, unit = "x") => gates.push({ what, value, target, unit });

const rootfsTar = await busyboxRootfs();
if (!onlyBig) {
  // --- reference graph, no-op
  await bake(ROOT, ["build"]);
  const refNodes: Node[] = [
    { name: "base", dockerfile: "containers/base/Dockerfile", context: "containers/base" },
    { name: "runtime", parent: "base", dockerfile: "containers/runtime/Dockerfile", context: "containers/runtime" },
    {
      name: "diagnostics",
      parent: "runtime",
      dockerfile: "containers/diagnostics/Dockerfile",
      context: "containers/diagnostics",
    },
    { name: "replays", parent: "runtime", dockerfile: "containers/replays/Dockerfile", context: "containers/replays" },
  ].map((n) => ({ ...n, dockerfile: path.join(ROOT, n.dockerfile), context: path.join(ROOT, n.context) }));
  const refRootfs = await rootfsImageOf(ROOT, "base");
  await rawBuilds(refNodes, refRootfs, false); // warm the raw layer cache
  const { a: refBake, b: refRaw } = await pairedMedians(
    9,
    () => bake(ROOT, ["build"]),
    () => rawBuilds(refNodes, refRootfs, false),
  );
  gate("no-op, reference graph", refBake / refRaw, 0.6);
  say(
    `no-op, reference graph (4 images): bake ${refBake.toFixed(2)} s, docker build warm ${refRaw.toFixed(2)} s, ratio ${ratio(refBake, refRaw)} (target <= 0.6x)`,
  );
  const nodeStart = await nodeStartWith();
  if (process.env.NODE_EXTRA_CA_CERTS)
    say(
      `  (bake ran without NODE_EXTRA_CA_CERTS, which this machine sets: a bare node starts in ${nodeStart.bench.toFixed(2)} s without it, ${nodeStart.given.toFixed(2)} s with it)`,
    );

  // --- generated 20-node graph
  const graph = generatedGraph(rootfsTar);
  await bake(graph.dir, ["build"]);
  const genRootfs = await rootfsImageOf(graph.dir, "base");
  // The same images by hand: each Dockerfile with the LABEL instruction bake appends (labels of
  // bake's own build, so the engine does the same work), to tell bake's cost from the labels'.
  const labelled = new Map<string, string>();
  const labelledDir = mkdtempSync(path.join(tmpdir(), "bake-bench-labelled-"));
  for (const [name, image] of Object.entries<{ id: string }>(
    JSON.parse(readFileSync(path.join(graph.dir, "bake-manifest.json"), "utf8")).images,
  )) {
    const labels = JSON.parse(
      (await execa("docker", ["image", "inspect", "-f", "{{json .Config.Labels}}", image.id])).stdout,
    );
    delete labels["bake.rootfs"]; // the base's, inherited from its rootfs image, not appended by bake
    const file = path.join(labelledDir, `${name}.Dockerfile`);
    writeFileSync(file, withLabels(readFileSync(graph.nodes.find((n) => n.name === name)!.dockerfile, "utf8"), labels));
    labelled.set(name, file);
  }
  // Cold builds: three rounds, each side in turn, medians (single runs vary by ~10% here).
  const coldRawRuns: number[] = [];
  const coldLabelledRuns: number[] = [];
  const coldBakeRuns: number[] = [];
  const coldSerialRuns: number[] = [];
  for (let round = 0; round < 3; round++) {
    coldRawRuns.push(await seconds(() => rawBuilds(graph.nodes, genRootfs, true)));
    coldLabelledRuns.push(await seconds(() => rawBuilds(graph.nodes, genRootfs, true, labelled)));
    coldSerialRuns.push(await seconds(() => bake(graph.dir, ["build", "--no-cache", "--concurrency", "1"])));
    coldBakeRuns.push(await seconds(() => bake(graph.dir, ["build", "--no-cache"])));
  }
  const [coldRaw, coldLabelled, coldBake, coldBakeSerial] = [
    mid(coldRawRuns),
    mid(coldLabelledRuns),
    mid(coldBakeRuns),
    mid(coldSerialRuns),
  ];
  const noopBake = await median(5, () => bake(graph.dir, ["build"]));
  const noopRaw = await median(3, () => rawBuilds(graph.nodes, genRootfs, false));
  gate("no-op, generated graph (20 images)", noopBake / noopRaw, 0.2);
  // "< 1.0" is met at 0.99: the gate's bound is the same figure.
  gate("cold, 20 images, concurrency 2", coldBake / coldRaw, 1.0);
  gate("cold, 20 images, --concurrency 1", coldBakeSerial / coldRaw, 1.05);
  say(
    `no-op, generated graph (20 images): bake ${noopBake.toFixed(2)} s, docker build warm ${noopRaw.toFixed(2)} s, ratio ${ratio(noopBake, noopRaw)} (target <= 0.2x)`,
  );
  say(
    `cold, generated graph (20 images, --no-cache, concurrency 2): bake ${coldBake.toFixed(2)} s, docker build one after another ${coldRaw.toFixed(2)} s, ratio ${ratio(coldBake, coldRaw)} (target < 1 with parallel nodes)`,
  );
  say(
    `cold, generated graph, --concurrency 1: bake ${coldBakeSerial.toFixed(2)} s, ratio ${ratio(coldBakeSerial, coldRaw)} (target <= 1.05x)`,
  );
  say(
    `cold, generated graph, the same images by hand (bake's LABEL appended): docker build ${coldLabelled.toFixed(2)} s; bake --concurrency 1 against it ${ratio(coldBakeSerial, coldLabelled)}, the labels alone ${ratio(coldLabelled, coldRaw)}`,
  );
  readBuilders();
  rmSync(graph.dir, { recursive: true, force: true });
  rmSync(labelledDir, { recursive: true, force: true });
}

// --- 1 GiB context
// Both sides build one image from the same changed context: the Dockerfile gets a new comment
// line before every build, so bake's key is new (its parent stays cached) and docker build runs
// with --no-cache. Medians of 5, taken in turns.
if (!quick) {
  const big = mkdtempSync(path.join(tmpdir(), "bake-bench-big-"));
  gibibyteOfFiles(path.join(big, "ctx"));
  let run = 0;
  let copy = "COPY Dockerfile /context-arrived";
  const changeDockerfile = () =>
    writeFileSync(path.join(big, "ctx/Dockerfile"), `ARG BAKE_PARENT\nFROM \${BAKE_PARENT}\n# run ${run++}\n${copy}\n`);
  changeDockerfile();
  writeFileSync(
    path.join(big, "bake.yml"),
    `project: benchbig-${RUN}\nimages:\n  base: { rootfs: { tar: ${rootfsTar} } }\n  big: { parent: base, dockerfile: ctx/Dockerfile }\n`,
  );
  await bake(big, ["build", "base"]);
  const bigRootfs = (
    await execa("docker", ["image", "inspect", "-f", "{{.Id}}", `benchbig-${RUN}/base:latest`])
  ).stdout.trim();
  const timed = async (cmd: string[], cwd: string) => {
    changeDockerfile();
    const r = await execa("/usr/bin/time", ["-f", "%M %e", ...cmd], { cwd, env, extendEnv: false, reject: true });
    const [kb, s] = r.stderr.trim().split("\n").at(-1)!.split(" ").map(Number);
    return { mb: kb / 1024, s };
  };
  const medianOf = (runs: { mb: number; s: number }[]) => ({
    s: runs.map((r) => r.s).sort((a, b) => a - b)[Math.floor(runs.length / 2)],
    mb: Math.max(...runs.map((r) => r.mb)),
  });
  await new Promise((r) => setTimeout(r, 3500)); // past the digest cache's "racy" window
  const bakeBuild = () => timed([process.execPath, CLI, "build", "big"], big);
  const rawBuild = () =>
    timed(
      [
        "docker",
        "build",
        "-q",
        "--no-cache",
        "--build-arg",
        `BAKE_PARENT=${bigRootfs}`,
        "-t",
        `bench-raw-${RUN}/big`,
        "ctx",
      ],
      big,
    );
  // In turns, so that the disk's write-back of one build's 1 GiB weighs on every side alike.
  // "First run": the digest cache emptied before the build, so every file is hashed.
  const bakeFirstRuns: { mb: number; s: number }[] = [];
  const bakeRuns: { mb: number; s: number }[] = [];
  const rawRuns: { mb: number; s: number }[] = [];
  for (let i = 0; i < 5; i++) {
    rawRuns.push(await rawBuild());
    rmSync(path.join(big, ".bake/digests.json"), { force: true });
    bakeFirstRuns.push(await bakeBuild());
    bakeRuns.push(await bakeBuild());
  }
  const bakeFirst = medianOf(bakeFirstRuns);
  const bakeBig = medianOf(bakeRuns);
  const rawBig = medianOf(rawRuns);
  gate("1 GiB context, first run", bakeFirst.s / rawBig.s, 1.1);
  gate("1 GiB context, digests cached", bakeBig.s / rawBig.s, 1.1);
  gate("1 GiB context, peak RSS", Math.max(bakeFirst.mb, bakeBig.mb), 150, " MB");
  say(
    `1 GiB context, first run (every file hashed): bake ${bakeFirst.s.toFixed(2)} s, peak RSS ${bakeFirst.mb.toFixed(0)} MB; ratio ${ratio(bakeFirst.s, rawBig.s)} (target <= 1.1x)`,
  );
  say(
    `1 GiB context, digests cached: bake ${bakeBig.s.toFixed(2)} s, peak RSS ${bakeBig.mb.toFixed(0)} MB (target <= 150 MB); docker build ${rawBig.s.toFixed(2)} s, peak RSS ${rawBig.mb.toFixed(0)} MB; time ratio ${ratio(bakeBig.s, rawBig.s)} (target <= 1.1x)`,
  );
  // The whole context copied into the image: every byte goes to the engine on both sides.
  copy = "COPY . /data";
  const bakeCopyRuns: { mb: number; s: number }[] = [];
  const rawCopyRuns: { mb: number; s: number }[] = [];
  for (let i = 0; i < 3; i++) {
    rawCopyRuns.push(await rawBuild());
    bakeCopyRuns.push(await bakeBuild());
  }
  const [bakeCopy, rawCopy] = [medianOf(bakeCopyRuns), medianOf(rawCopyRuns)];
  gate("1 GiB context copied whole", bakeCopy.s / rawCopy.s, 1.1);
  say(
    `1 GiB context copied whole into the image (COPY . /data), digests cached: bake ${bakeCopy.s.toFixed(2)} s, peak RSS ${bakeCopy.mb.toFixed(0)} MB; docker build ${rawCopy.s.toFixed(2)} s; ratio ${ratio(bakeCopy.s, rawCopy.s)} (target <= 1.1x)`,
  );
  readBuilders();
  rmSync(big, { recursive: true, force: true });
  await removeBenchImages("benchbig", "bench-raw");
}
await removeBenchImages("bench-raw", "bench20");

// The gate: each figure against its target, and exit 1 when one misses it by more than the slack.
const missed = gates.filter((g) => g.value > g.target * (1 + GATE_SLACK));
console.log(`\nbench gate (a figure may land up to ${GATE_SLACK * 100}% past its target):`);
for (const g of gates) {
  const verdict = g.value <= g.target ? "met" : missed.includes(g) ? "MISSED" : "within the slack";
  console.log(`  ${g.what.padEnd(36)} ${g.value.toFixed(2)}${g.unit}  target <= ${g.target}${g.unit}  ${verdict}`);
}
readBuilders();
for (const why of classicBuilds) console.log(`  bake built with the classic builder in this run: ${why}`);
console.log(
  missed.length
    ? `bench gate: ${missed.length} of ${gates.length} missed`
    : `bench gate: ${gates.length} of ${gates.length} within their targets`,
);
if (missed.length) process.exitCode = 1;
