/** The only module that runs debootstrap (and tar, to pack the folder it fills). */
import type { DebootstrapSpec } from "../config/model.js";
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

export async function debootstrap(spec: DebootstrapSpec, dir: string, options: { onLine?: (l: string) => void; signal?: AbortSignal } = {}): Promise<void> {
  if (process.getuid?.() !== 0) throw new BakeError("debootstrap needs root: run bake as root (or with sudo) to build a debootstrap base");
  await run("debootstrap", debootstrapArgs(spec, dir), { onLine: options.onLine, signal: options.signal });
}

export async function packRootfs(dir: string, out: string, signal?: AbortSignal): Promise<void> {
  await run("tar", packRootfsArgs(dir, out), { signal });
}
