/**
 * The one lock module: every command that writes `.bake/` or bakes takes its locks here.
 *
 * A lock is proper-lockfile's folder beside a path (made atomically by mkdir, refreshed while
 * held, taken over after 10 s without a refresh, so a holder that died frees it by itself), and
 * the holder's pid, host and command are written beside it, so that a waiting process says which
 * process it waits for. Locks are for one machine: across machines, the AWS lease (ami/lease.ts).
 */
import { mkdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { hostname, homedir } from "node:os";
import path from "node:path";
import lockfile from "proper-lockfile";
import { BakeError, interruption } from "../errors.js";

export interface LockHolder {
  pid: number;
  host: string;
  command: string;
  since: string;
}

/** bake's folder for what outlives a project: the rootfs cache, and the locks of one machine. */
export function bakeCacheDir(env = process.env): string {
  return env.BAKE_CACHE_DIR || path.join(env.XDG_CACHE_HOME || path.join(homedir(), ".cache"), "bake");
}

/** Locks every checkout on this machine shares: one per image key, one per AMI key. */
export function machineLock(name: string, env = process.env): string {
  return path.join(bakeCacheDir(env), "locks", safeName(name));
}

/** Locks of one project's `.bake/` state (the manifest, bake.lock). */
export function projectLock(projectDir: string, name: string): string {
  return path.join(projectDir, ".bake", "locks", safeName(name));
}

const safeName = (name: string) => name.replace(/[^\w.-]+/g, "_");
const holderFile = (lock: string) => `${lock}.holder.json`;
export const STALE_MS = 10_000;

export interface LockOptions {
  signal?: AbortSignal;
  /** Called when the lock is held by another process, and again when its holder changes. */
  onWait?: (holder: string) => void;
  pollMs?: number;
}

/**
 * Runs fn holding the lock; waits for it first when another process holds it. fn gets a signal
 * that aborts when the lock is taken over (this process stalled past STALE_MS, a suspended laptop
 * or a starved event loop, and another bake took it): the holder must then stop before it touches
 * what the lock guards, and leave it to the new holder.
 */
export async function withLock<T>(
  lock: string,
  fn: (lost: AbortSignal) => Promise<T>,
  options: LockOptions = {},
): Promise<T> {
  const release = await acquireLock(lock, options);
  try {
    return await fn(release.lost);
  } finally {
    await release();
  }
}

/** Releases a held lock; `lost` aborts (with a LockLostError) if another process took it over. */
export type LockRelease = (() => Promise<void>) & { lost: AbortSignal };

export class LockLostError extends BakeError {}

export async function acquireLock(lock: string, options: LockOptions = {}): Promise<LockRelease> {
  mkdirSync(path.dirname(lock), { recursive: true });
  let told = "";
  for (;;) {
    const lost = new AbortController();
    try {
      const release = await lockfile.lock(lock, {
        realpath: false,
        stale: STALE_MS,
        update: STALE_MS / 5,
        // The default throws from a timer and ends the process; a lock taken over is said once,
        // and the holder's work is told to stop (withLock's signal).
        onCompromised: (e) => {
          process.stderr.write(`warning: lost the lock ${lock}: ${e.message}\n`);
          lost.abort(
            new LockLostError(
              `lost the lock ${path.basename(lock)} to another bake (this one stalled for over ${STALE_MS / 1000} s): stopped before touching what it guards`,
            ),
          );
        },
      });
      const holder: LockHolder = {
        pid: process.pid,
        host: hostname(),
        command: `bake ${process.argv.slice(2).join(" ")}`.trim(),
        since: new Date().toISOString(),
      };
      writeFileSync(holderFile(lock), JSON.stringify(holder));
      return Object.assign(
        async () => {
          // A lock taken over is the new holder's: its holder file and folder stay.
          if (lost.signal.aborted) return;
          rmSync(holderFile(lock), { force: true });
          await release().catch(() => undefined);
        },
        { lost: lost.signal },
      );
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== "ELOCKED") throw e;
    }
    const holder = describeHolder(lock);
    if (holder !== told) {
      options.onWait?.(holder);
      told = holder;
    }
    if (options.signal?.aborted) throw interruption(options.signal);
    await new Promise((r) => setTimeout(r, options.pollMs ?? 200));
  }
}

/** "pid 1234 on ci-7 (bake build), since 2026-12-04T10:00:00Z", as far as the holder wrote it. */
export function describeHolder(lock: string): string {
  try {
    const h = JSON.parse(readFileSync(holderFile(lock), "utf8")) as LockHolder;
    return `pid ${h.pid} on ${h.host} (${h.command}), since ${h.since}`;
  } catch {
    return "another bake process";
  }
}

/** Whether some process holds the lock now (a stale one counts as free). */
export async function isLocked(lock: string): Promise<boolean> {
  return lockfile.check(lock, { realpath: false, stale: STALE_MS });
}

/** Whether a process with that pid runs on this machine. */
export function processRuns(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === "EPERM";
  }
}
