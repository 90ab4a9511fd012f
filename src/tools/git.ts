/** The only module that asks git: the revision and source of the pipeline, for labels and the manifest. */
import { stripCredentials } from "../config/url-credentials.js";
import { existsSync, readFileSync } from "node:fs";
import path from "node:path";
import { run } from "./exec.js";

export interface GitInfo {
  revision?: string;
  source?: string;
}

export async function gitInfo(dir: string): Promise<GitInfo> {
  const ask = (args: string[]) =>
    run("git", args, { cwd: dir, timeoutMs: 5000 }).then(
      (r) => r.stdout.trim() || undefined,
      () => undefined,
    );
  const [revision, remote] = await Promise.all([
    readRevision(dir) ?? ask(["rev-parse", "HEAD"]),
    ask(["config", "--get", "remote.origin.url"]),
  ]);
  return { revision, source: remote ? stripCredentials(remote) : undefined };
}

/**
 * HEAD's commit read from the .git folder (loose ref or packed-refs) without starting git, for
 * runs that build nothing. Undefined when it cannot tell (no repository, worktrees, odd refs).
 */
export function readRevision(dir: string): string | undefined {
  let at = path.resolve(dir);
  for (;;) {
    const gitDir = path.join(at, ".git");
    if (existsSync(gitDir)) {
      try {
        const head = readFileSync(path.join(gitDir, "HEAD"), "utf8").trim();
        if (/^[0-9a-f]{40}$/.test(head)) return head;
        const ref = /^ref: (refs\/\S+)$/.exec(head)?.[1];
        if (!ref) return undefined;
        const loose = path.join(gitDir, ref);
        if (existsSync(loose)) return readFileSync(loose, "utf8").trim();
        const packed = readFileSync(path.join(gitDir, "packed-refs"), "utf8");
        return packed
          .split("\n")
          .find((l) => l.endsWith(` ${ref}`))
          ?.split(" ")[0];
      } catch {
        return undefined;
      }
    }
    const up = path.dirname(at);
    if (up === at) return undefined;
    at = up;
  }
}

/** A remote URL may carry a token (https://user:token@host/...): it never reaches a label. */
export { stripCredentials };
