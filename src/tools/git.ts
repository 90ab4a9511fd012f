/** The only module that asks git: the revision and source of the pipeline, for labels and the manifest. */
import { run } from "./exec.js";

export interface GitInfo {
  revision?: string;
  source?: string;
}

export async function gitInfo(dir: string): Promise<GitInfo> {
  const ask = (args: string[]) => run("git", args, { cwd: dir, timeoutMs: 5000 }).then((r) => r.stdout.trim() || undefined, () => undefined);
  const [revision, remote] = await Promise.all([ask(["rev-parse", "HEAD"]), ask(["config", "--get", "remote.origin.url"])]);
  return { revision, source: remote ? stripCredentials(remote) : undefined };
}

/** A remote URL may carry a token (https://user:token@host/...): it never reaches a label. */
export function stripCredentials(url: string): string {
  return url.replace(/^([a-z][a-z0-9+.-]*:\/\/)[^@/]*@/i, "$1");
}
