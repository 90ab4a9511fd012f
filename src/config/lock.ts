/**
 * bake.lock beside bake.yml: upstream pins that `bake nightly` refreshes and the nightly job
 * commits, so every machine with the same checkout computes the same keys. Today it pins the
 * Debian release index (InRelease) each debootstrap base was built from.
 */
import { readFileSync, writeFileSync } from "node:fs";
import path from "node:path";

export interface BakeLock {
  debootstrap: Record<string, { release: string; url: string }>;
}

export function lockPath(dir: string): string {
  return path.join(dir, "bake.lock");
}

export function readLock(dir: string): BakeLock {
  try {
    const parsed = JSON.parse(readFileSync(lockPath(dir), "utf8"));
    return { debootstrap: parsed.debootstrap ?? {} };
  } catch {
    return { debootstrap: {} };
  }
}

export function writeLock(dir: string, lock: BakeLock): void {
  writeFileSync(lockPath(dir), `${JSON.stringify(lock, null, 2)}\n`);
}
