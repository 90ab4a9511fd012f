/** Helpers for tests: run the real CLI, make temporary pipelines. */
import { execa } from "execa";
import { mkdtempSync, mkdirSync, readdirSync, readFileSync, writeFileSync, rmSync, symlinkSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";

export const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../../..");
export const CLI = path.join(ROOT, "dist/src/bake.cjs");

/** Environment for test runs: no AWS credentials, no instance metadata probes, plain output. */
export function testEnv(extra: Record<string, string | undefined> = {}): Record<string, string | undefined> {
  return {
    AWS_ACCESS_KEY_ID: undefined,
    AWS_SECRET_ACCESS_KEY: undefined,
    AWS_PROFILE: undefined,
    AWS_EC2_METADATA_DISABLED: "true",
    AWS_CONFIG_FILE: "/nonexistent",
    AWS_SHARED_CREDENTIALS_FILE: "/nonexistent",
    CI: "true",
    NO_COLOR: "1",
    // Fixtures name the busybox rootfs the tests share, outside each temporary project.
    BAKE_ALLOW_PATHS: path.join(ROOT, ".bake", "test-cache"),
    ...extra,
  };
}

export interface BakeRun {
  code: number;
  stdout: string;
  stderr: string;
  /** The bake process's id: the parent tags it made are named after it (`bake-parent/<host>/<pid>`). */
  pid: number;
}

export async function bake(
  args: string[],
  options: { cwd: string; env?: Record<string, string | undefined> },
): Promise<BakeRun> {
  const child = execa(process.execPath, [CLI, ...args], {
    cwd: options.cwd,
    env: testEnv(options.env),
    extendEnv: true,
    reject: false,
    timeout: 300_000,
  });
  const r = await child;
  return { code: r.exitCode ?? -1, stdout: String(r.stdout), stderr: String(r.stderr), pid: child.pid ?? -1 };
}

/** Temp folders of this test process, removed when it exits (a run of `make test` makes hundreds). */
const made: string[] = [];
process.on("exit", () => {
  for (const dir of made) rmSync(dir, { recursive: true, force: true });
});

/** A new empty temp folder of this test process, removed when it exits. */
export function tempDir(prefix = "bake-test-"): string {
  const dir = mkdtempSync(path.join(tmpdir(), prefix));
  made.push(dir);
  return dir;
}

/** Writes files (path → content; a `->target` content makes a symlink) into a new temp folder. */
export function tempTree(files: Record<string, string>, prefix = "bake-test-"): string {
  const dir = tempDir(prefix);
  writeTree(dir, files);
  return dir;
}

export function writeTree(dir: string, files: Record<string, string>): void {
  for (const [rel, content] of Object.entries(files)) {
    const file = path.join(dir, rel);
    mkdirSync(path.dirname(file), { recursive: true });
    if (content.startsWith("->")) symlinkSync(content.slice(2), file);
    else if (rel.endsWith("/")) mkdirSync(file, { recursive: true });
    else writeFileSync(file, content);
  }
}

export function removeTree(dir: string): void {
  rmSync(dir, { recursive: true, force: true });
}

/** Every process argument list on this machine that holds `secret`, read from /proc while `run` lasts. */
export async function argvWatch<T>(secret: string, run: () => Promise<T>): Promise<{ result: T; seen: string[] }> {
  const seen = new Set<string>();
  let done = false;
  const watch = (async () => {
    while (!done) {
      for (const pid of readdirSync("/proc").filter((p) => /^\d+$/.test(p))) {
        try {
          const argv = readFileSync(`/proc/${pid}/cmdline`, "utf8");
          if (argv.includes(secret)) seen.add(argv.replace(/\0/g, " ").trim());
        } catch {
          /* the process is gone */
        }
      }
      await new Promise((r) => setTimeout(r, 15));
    }
  })();
  try {
    return { result: await run(), seen: [...seen] };
  } finally {
    done = true;
    await watch;
  }
}
