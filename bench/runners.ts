/**
 * Two CI runners, one registry: the second runner's build of a graph the first built and pushed,
 * as a ratio of the first's. Runner one is this engine building the graph cold and pushing it;
 * runner two is the same engine made clean for this graph (its images removed, its build steps'
 * cache records removed), as a fresh runner is. A second engine cannot run beside the first on
 * these machines, and `docker builder prune` would empty every other user's cache: run alone.
 *   1. the same graph on runner two: every node is in the registry under its key (pulled);
 *   2. one file changed in every leaf, copied after the leaf's costly step: the leaves' keys move,
 *      and their costly step comes from the registry's inline cache instead of running again
 *      (the leaves whose logs say so are counted).
 * Usage: node dist/bench/runners.js
 */
import { execa } from "execa";
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { busyboxRootfs, forgetBuildSteps, removeProject } from "../test/helpers/engine.js";
import { env, RUN, ratio, seconds } from "./graph.js";

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../..");
const CLI = path.join(ROOT, "dist/src/bake.cjs");
const REGISTRY = "127.0.0.1:5000";
const project = `benchrunners-${RUN}`;
const marker = `work-${project}`;

const dir = mkdtempSync(path.join(tmpdir(), "bake-bench-runners-"));
// 12 images: a base, three on it, eight leaves on those. Each image's costly step (2 s of work and
// a 10 MB layer, standing for a package install) runs before a small file is copied.
const names = ["base", "m1", "m2", "m3", ...Array.from({ length: 8 }, (_, i) => `leaf${i + 1}`)];
const parentOf = (n: string) =>
  n === "base" ? undefined : n.startsWith("m") ? "base" : `m${(Number(n.slice(4)) % 3) + 1}`;
let yaml = `project: ${project}\nregistry: ${REGISTRY}\nimages:\n  root: { rootfs: { tar: ${await busyboxRootfs()} } }\n`;
for (const n of names) {
  mkdirSync(path.join(dir, n));
  writeFileSync(
    path.join(dir, n, "Dockerfile"),
    `ARG BAKE_PARENT\nFROM \${BAKE_PARENT}\nRUN echo ${marker} && sleep 2 && head -c 10000000 /dev/urandom > /${n}.bin\nCOPY late.txt /${n}.txt\n`,
  );
  writeFileSync(path.join(dir, n, "late.txt"), `${n} one\n`);
  yaml += `  ${n}: { parent: ${parentOf(n) ?? "root"}, dockerfile: ${n}/Dockerfile }\n`;
}
writeFileSync(path.join(dir, "bake.yml"), yaml);

const bake = (args: string[]) => execa(process.execPath, [CLI, ...args], { cwd: dir, env, extendEnv: false });
/** A run's whole output: the table on stdout, the log folder's line on stderr. */
const both = async (args: string[]) => {
  const r = await bake(args);
  return `${r.stdout}\n${r.stderr}`;
};
/** This engine as a clean runner for the graph: none of its images, none of its steps' cache. */
const cleanRunner = async () => {
  await removeProject(project);
  await forgetBuildSteps(marker);
};
const outcomes = (stdout: string) => {
  const counts: Record<string, number> = {};
  for (const m of stdout.matchAll(/^\S+\s+(built|pulled|cached)\s/gm)) counts[m[1]] = (counts[m[1]] ?? 0) + 1;
  return Object.entries(counts)
    .map(([k, v]) => `${v} ${k}`)
    .join(", ");
};

/** How many images of a run took their costly step from the cache (their logs say "(cached)"). */
const stepsFromRegistry = (stdout: string) => {
  const logs = /logs in (\S+)/.exec(stdout)?.[1];
  return logs
    ? readdirSync(logs).filter((f) => /RUN echo work-[^\n]*\(cached\)/.test(readFileSync(path.join(logs, f), "utf8")))
        .length
    : 0;
};

try {
  let out = "";
  const first = await seconds(async () => (out = await both(["build", "--push"])));
  console.log(`runner one, cold, pushing: ${first.toFixed(2)} s (${outcomes(out)})`);

  await cleanRunner();
  const same = await seconds(async () => (out = await both(["build"])));
  console.log(
    `runner two, clean, the same graph: ${same.toFixed(2)} s (${outcomes(out)}); ratio ${ratio(same, first)}`,
  );

  await cleanRunner();
  for (const n of names.filter((x) => x.startsWith("leaf"))) writeFileSync(path.join(dir, n, "late.txt"), `${n} two\n`);
  const moved = await seconds(async () => (out = await both(["build"])));
  console.log(
    `runner two, clean, every leaf's key moved (a file after its costly step): ${moved.toFixed(2)} s (${outcomes(out)}, ${stepsFromRegistry(out)} of 8 leaves' costly steps from the registry's cache); ratio ${ratio(moved, first)}`,
  );
} finally {
  await removeProject(project);
  await forgetBuildSteps(marker);
  rmSync(dir, { recursive: true, force: true });
}
