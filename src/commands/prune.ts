/** `bake prune [--yes]`: retention for AMIs (with their snapshots), local images and leftovers; a plan unless --yes (prune/run.ts). */
import path from "node:path";
import { runPrune, type PruneOptions, type PruneReport } from "../prune/run.js";
import type { PruneDecision } from "../prune/plan.js";
import type { Tools } from "../state/read.js";

export type { PruneOptions, PruneReport };

export async function pruneCommand(
  options: PruneOptions,
  tools: Tools,
  out: (t: string) => void,
  err: (t: string) => void,
): Promise<PruneReport> {
  const report = await runPrune(options, tools);
  const { decisions, removed, failed, notes } = report;
  if (options.json) {
    out(JSON.stringify({ dryRun: !options.yes, ...report }, null, 2));
    return report;
  }
  out(
    decisions
      .map(
        (d) =>
          `${d.action.padEnd(6)} ${d.kind.padEnd(8)} ${d.name.padEnd(16)} ${d.where.padEnd(10)} ${shortId(d).padEnd(24)} ${d.reason}${d.warning ? ` (warning: ${d.warning})` : ""}`,
      )
      .join("\n") || "nothing bake made was found",
  );
  for (const n of notes) err(`note: ${n}`);
  for (const f of failed) err(`FAILED ${f.kind} ${f.id} in ${f.where}: ${f.error}`);
  const count = decisions.filter((d) => d.action === "remove").length;
  err(
    options.yes
      ? `removed ${removed.length}${failed.length ? `, ${failed.length} failed` : ""}`
      : `${count} to remove; run bake prune --yes to remove them`,
  );
  return report;
}

/** A leftover's or VM disk's id is its path: its last part is what a person tells apart. */
const shortId = (d: PruneDecision) =>
  (d.kind === "leftover" || d.kind === "vm" ? path.basename(d.id) : d.id).slice(0, 24);
