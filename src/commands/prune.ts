/** `bake prune [--yes]`: retention for AMIs (with their snapshots), local images and leftovers; a plan unless --yes (prune/run.ts). */
import { runPrune, type PruneOptions, type PruneReport } from "../prune/run.js";
import type { Tools } from "../state/read.js";

export type { PruneOptions, PruneReport };

export function pruneCommand(
  options: PruneOptions,
  tools: Tools,
  out: (t: string) => void,
  err: (t: string) => void,
): Promise<PruneReport> {
  return runPrune(options, tools, out, err);
}
