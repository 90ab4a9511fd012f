/**
 * The only module that knows goss: where its binary is (BAKE_GOSS, else `goss` on PATH), its
 * version, the arguments of a validation and what its output says. goss runs where the thing
 * tested runs (in a container, in the booted host, on the Packer instance); bake copies the
 * static binary there.
 */
import { accessSync, constants, readFileSync } from "node:fs";
import path from "node:path";
import { BakeError } from "../errors.js";
import { run } from "./exec.js";

export const GOSS_ENV = "BAKE_GOSS";

/** Where a test's files go in the container or host it runs in. */
export const GOSS_DIR = "/tmp/bake-goss";

/** The goss binary bake uses, or undefined when there is none. */
export function findGoss(env = process.env): string | undefined {
  const executable = (p: string) => {
    try {
      accessSync(p, constants.X_OK);
      return true;
    } catch {
      return false;
    }
  };
  if (env[GOSS_ENV]) return executable(env[GOSS_ENV]!) ? path.resolve(env[GOSS_ENV]!) : undefined;
  return (env.PATH ?? "")
    .split(":")
    .filter(Boolean)
    .map((d) => path.join(d, "goss"))
    .find(executable);
}

export function requireGoss(env = process.env): string {
  const found = findGoss(env);
  if (!found)
    throw new BakeError(
      env[GOSS_ENV]
        ? `${GOSS_ENV}=${env[GOSS_ENV]} is not an executable goss`
        : `goss is not installed (it runs the test: specs): run make setup, or set ${GOSS_ENV}`,
    );
  return found;
}

export async function gossVersion(binary: string): Promise<string> {
  const out = (await run(binary, ["--version"], { timeoutMs: 10_000 })).stdout;
  return /v?\d+\.\d+\.\d+\S*/.exec(out)?.[0] ?? out.trim();
}

export function gossBinary(binary: string): Buffer {
  return readFileSync(binary);
}

/**
 * What bake tells a spec about where it runs, as `.Vars.bake` (merged over the vars file):
 * `booted` is true where the node's services run (a release's container, the booted host) and
 * false where they do not (an image without a contract, the AWS instance before its snapshot).
 */
export interface BakeVars {
  /** bake.yml's project: the prefix of the host's service and container names. */
  project: string;
  node: string;
  booted: boolean;
}

export interface ValidateOptions {
  /** How long goss retries failing checks (a service still starting), and how long it sleeps between tries. */
  retryTimeout: string;
  sleep: string;
  withVars: boolean;
  bake: BakeVars;
}

/** `goss validate` inside GOSS_DIR, as dgoss runs it: documentation format, no colour. */
export function validateArgs(o: ValidateOptions): string[] {
  // "} }", not "}}": Packer reads "}}" in a shell provisioner's inline command as a template's end.
  const inline = JSON.stringify({
    bake: { project: o.bake.project, node: o.bake.node, booted: o.bake.booted },
  }).replace(/\}\}/g, "} }");
  return [
    "--gossfile",
    `${GOSS_DIR}/goss.yaml`,
    ...(o.withVars ? ["--vars", `${GOSS_DIR}/vars.yaml`] : []),
    "--vars-inline",
    inline,
    "validate",
    "--format",
    "documentation",
    "--no-color",
    "--retry-timeout",
    o.retryTimeout,
    "--sleep",
    o.sleep,
  ];
}

/** goss's summary of its last attempt: `Count: 12, Failed: 2, Skipped: 0`. */
export function gossSummary(output: string): { count: number; failed: number; skipped: number } | undefined {
  const m = [...output.matchAll(/Count: (\d+), Failed: (\d+)(?:, Skipped: (\d+))?/g)].at(-1);
  return m ? { count: +m[1], failed: +m[2], skipped: +(m[3] ?? 0) } : undefined;
}

/** What a failed run shows, as goss prints it: the last attempt's failures, its summary and goss's error. */
export function gossFailures(output: string): string[] {
  const lines = output.split("\n");
  const start = lines.map((l) => /^Failures(\/Skipped)?:/.test(l)).lastIndexOf(true);
  return (start >= 0 ? lines.slice(start + 1) : lines.slice(-20)).filter(
    (l) => l.trim() !== "" && !/^Retrying in /.test(l),
  );
}
