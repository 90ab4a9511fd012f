/**
 * sha256 of large files on worker threads, one per core (at most two here), so that hashing a
 * big context does not queue behind the one JavaScript thread — and so that it can run while
 * that thread streams the same files to the engine.
 */
import { createRequire } from "node:module";
import { availableParallelism } from "node:os";
import type { Worker as WorkerType } from "node:worker_threads";

/** Loaded when a file is large enough to hash on a worker: a no-op run does not load worker_threads. */
const workerClass = (): typeof WorkerType => createRequire(import.meta.url)("node:worker_threads").Worker;

// Inline source: the CLI ships as one bundled file, so the worker has no module of its own.
const WORKER_SOURCE = `
const { parentPort, workerData } = require("node:worker_threads");
const { createHash } = require("node:crypto");
const { openSync, readSync, closeSync } = require("node:fs");
const buffer = Buffer.allocUnsafe(1 << 20);
for (const file of workerData.files) {
  let fd;
  try {
    fd = openSync(file, "r");
    const hash = createHash("sha256");
    let n;
    while ((n = readSync(fd, buffer, 0, buffer.length, null)) > 0) hash.update(buffer.subarray(0, n));
    parentPort.postMessage({ file, digest: hash.digest("hex") });
  } catch (e) {
    parentPort.postMessage({ file, error: String(e && e.message || e) });
  } finally {
    if (fd !== undefined) closeSync(fd);
  }
}
`;

/** Splits files over `threads` lists of about equal bytes (largest first onto the lightest). */
export function shareOut(files: { path: string; size: number }[], threads: number): string[][] {
  const lists = Array.from({ length: Math.max(1, threads) }, () => ({ bytes: 0, paths: [] as string[] }));
  for (const f of [...files].sort((a, b) => b.size - a.size || (a.path < b.path ? -1 : 1))) {
    const lightest = lists.reduce((a, b) => (b.bytes < a.bytes ? b : a));
    lightest.paths.push(f.path);
    lightest.bytes += f.size;
  }
  return lists.map((l) => l.paths).filter((p) => p.length > 0);
}

/** Digest per path; rejects with the first file that could not be read. */
export async function hashOnWorkers(
  files: { path: string; size: number }[],
  threads = Math.min(2, availableParallelism()),
): Promise<Map<string, string>> {
  const digests = new Map<string, string>();
  await Promise.all(
    shareOut(files, threads).map(
      (paths) =>
        new Promise<void>((resolve, reject) => {
          const Worker = workerClass();
          const worker = new Worker(WORKER_SOURCE, { eval: true, workerData: { files: paths } });
          worker.on("message", (m: { file: string; digest?: string; error?: string }) => {
            if (m.error) {
              reject(new Error(`cannot read ${m.file}: ${m.error}`));
              void worker.terminate();
            } else digests.set(m.file, m.digest!);
          });
          worker.on("error", reject);
          worker.on("exit", () => resolve());
        }),
    ),
  );
  return digests;
}
