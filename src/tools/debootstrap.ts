/** The only module that runs debootstrap (and tar, to pack the folder it fills). */
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
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

export async function packRootfs(dir: string, out: string, signal?: AbortSignal): Promise<void> {
  await run("tar", packRootfsArgs(dir, out), { signal });
}
