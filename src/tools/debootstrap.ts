/** The only module that runs debootstrap (and tar, to pack the folder it fills). */
import { existsSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import type { DebootstrapSpec } from "../config/model.js";
import { netrcEntry, type UrlCredentials } from "../config/url-credentials.js";
import { BakeError } from "../errors.js";
import { run } from "./exec.js";

/** debootstrap's arguments for a spec; without a mirror, debootstrap uses its own default. */
export function debootstrapArgs(spec: DebootstrapSpec, dir: string): string[] {
  const args = [];
  if (spec.variant) args.push(`--variant=${spec.variant}`);
  if (spec.include.length) args.push(`--include=${spec.include.join(",")}`);
  args.push(spec.suite, dir);
  if (spec.mirror) args.push(spec.mirror);
  return args;
}

/** tar's arguments to pack a rootfs folder reproducibly (numeric owners, sorted names). */
export function packRootfsArgs(dir: string, out: string): string[] {
  return ["--numeric-owner", "--xattrs", "--sort=name", "-C", dir, "-cf", out, "."];
}

/**
 * Runs debootstrap. A mirror's credentials never reach its arguments: they go to a .netrc (0600)
 * in a HOME of the run's own, which wget (debootstrap's downloader) reads, removed afterwards.
 */
export async function debootstrap(
  spec: DebootstrapSpec,
  dir: string,
  options: { credentials?: UrlCredentials; onLine?: (l: string) => void; signal?: AbortSignal } = {},
): Promise<void> {
  if (process.getuid?.() !== 0)
    throw new BakeError("debootstrap needs root: run bake as root (or with sudo) to build a debootstrap base");
  const c = options.credentials;
  const home = c ? mkdtempSync(path.join(tmpdir(), "bake-debootstrap-")) : undefined;
  try {
    if (home && c) writeFileSync(path.join(home, ".netrc"), netrcEntry(c), { mode: 0o600 });
    await run("debootstrap", debootstrapArgs(spec, dir), {
      env: home ? { HOME: home } : undefined,
      secrets: c ? [c.password, c.user] : [],
      onLine: options.onLine,
      signal: options.signal,
    });
  } finally {
    if (home) rmSync(home, { recursive: true, force: true });
  }
}

/**
 * What a debootstrap run leaves that no image needs, removed before the rootfs is packed, as
 * Debian's own images do: the downloaded packages and apt's lists and caches (a third of a minbase
 * rootfs with python3). An image installs packages after `apt-get update`, as on debian:bookworm.
 * A change here changes ROOTFS_TIDY (graph/keys.ts), part of a debootstrap rootfs's key.
 */
export function tidyRootfs(dir: string): void {
  const emptied: [string, (name: string) => boolean][] = [
    ["var/cache/apt/archives", (f) => f.endsWith(".deb")],
    ["var/cache/apt/archives/partial", () => true],
    ["var/cache/apt", (f) => f.endsWith(".bin")],
    ["var/lib/apt/lists", (f) => f !== "lock" && f !== "partial"],
    ["var/lib/apt/lists/partial", () => true],
  ];
  for (const [folder, remove] of emptied) {
    const at = path.join(dir, folder);
    if (!existsSync(at)) continue;
    for (const f of readdirSync(at)) if (remove(f)) rmSync(path.join(at, f), { recursive: true, force: true });
  }
}

export async function packRootfs(dir: string, out: string, signal?: AbortSignal): Promise<void> {
  await run("tar", packRootfsArgs(dir, out), { signal });
}
