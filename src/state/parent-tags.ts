/**
 * The tags that name a parent for a BuildKit build in flight: `bake-parent/<host>/<pid>:<id>`,
 * removed when the build ends. The host name is in the tag so that `bake prune`, on an engine
 * that several machines or CI containers share, removes only tags whose bake it can prove dead:
 * this machine's, whose pid no longer runs.
 */
import { hostname } from "node:os";
import { processRuns } from "../files/process-lock.js";

/** The host as a Docker repository path component: lower-case letters, digits, `.`, `-`. */
export function hostComponent(host = hostname()): string {
  return (
    host
      .toLowerCase()
      .replace(/[^a-z0-9.-]+/g, "-")
      .replace(/^[.-]+|[.-]+$/g, "")
      .slice(0, 63) || "host"
  );
}

export function parentTagRepository(host = hostname(), pid = process.pid): string {
  return `bake-parent/${hostComponent(host)}/${pid}`;
}

/**
 * Whether the bake that made a parent tag still runs: true or false for this machine's tags,
 * undefined (keep it) for another machine's and for tags without a host.
 */
export function parentTagOwnerRunning(ref: string, host = hostname()): boolean | undefined {
  const m = /^bake-parent\/([^/:]+)\/(\d+):/.exec(ref);
  if (!m || m[1] !== hostComponent(host)) return undefined;
  return processRuns(Number(m[2]));
}
