/**
 * Keys of a 10,000-file tree: files per second for bake's context listing + digest, against
 * `find | xargs sha256sum` over the same files in the same run (cold-ish: each run after the
 * other, the page cache warm for both).
 */
import { execa } from "execa";
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { contextDigest, listContext } from "../src/graph/context-files.js";

const FILES = Number(process.env.BENCH_FILES ?? 10_000);
const RUNS = 3;

const dir = mkdtempSync(path.join(tmpdir(), "bake-bench-keys-"));
for (let i = 0; i < FILES; i++) {
  const sub = path.join(dir, `d${i % 100}`, `e${i % 7}`);
  if (i < 700) mkdirSync(sub, { recursive: true });
  writeFileSync(path.join(sub, `f${i}.txt`), `file ${i}\n`.repeat(1 + (i % 300)));
}
writeFileSync(path.join(dir, ".dockerignore"), "**/*.tmp\nd9/\n!d9/e1\n");

const time = async (fn: () => Promise<unknown>) => {
  const samples: number[] = [];
  for (let r = 0; r < RUNS; r++) {
    const t = process.hrtime.bigint();
    await fn();
    samples.push(Number(process.hrtime.bigint() - t) / 1e9);
  }
  return samples.sort((a, b) => a - b)[Math.floor(RUNS / 2)];
};

let digest = "";
let listed = 0;
const bakeSeconds = await time(async () => {
  const listing = await listContext(dir);
  listed = listing.entries.filter((e) => e.type === "file").length;
  digest = contextDigest(listing.entries);
});
const baseSeconds = await time(() =>
  execa("sh", ["-c", "find . -type f -print0 | xargs -0 sha256sum | sha256sum"], { cwd: dir }),
);
rmSync(dir, { recursive: true, force: true });

console.log(`keys of a ${FILES}-file tree (${listed} after .dockerignore), median of ${RUNS}:`);
console.log(
  `  bake listContext+digest: ${bakeSeconds.toFixed(3)} s  ${Math.round(listed / bakeSeconds)} files/s  (${digest.slice(0, 12)})`,
);
console.log(`  find | xargs sha256sum:  ${baseSeconds.toFixed(3)} s  ${Math.round(FILES / baseSeconds)} files/s`);
console.log(`  ratio bake / sha256sum: ${(bakeSeconds / baseSeconds).toFixed(2)}x`);
