/**
 * bake.lock beside bake.yml: upstream pins that `bake nightly` refreshes and the nightly job
 * commits, so every machine with the same checkout computes the same keys. Today it pins the
 * Debian release index (InRelease) each debootstrap base was built from.
 */
import path from "node:path";
import { readJsonFile, writeJsonFile } from "../files/json-file.js";

export interface BakeLock {
  debootstrap: Record<string, { release: string; url: string }>;
}

export function lockPath(dir: string): string {
  return path.join(dir, "bake.lock");
}

export function readLock(dir: string): BakeLock {
  const parsed = readJsonFile(lockPath(dir), "bake.lock") as Partial<BakeLock> | undefined;
  return { debootstrap: parsed?.debootstrap ?? {} };
}

/** Written atomically; the nightly run that writes it holds the project's lock (files/process-lock.ts). */
export function writeLock(dir: string, lock: BakeLock): void {
  writeJsonFile(lockPath(dir), lock);
}
