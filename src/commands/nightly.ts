/** `bake nightly`: refresh bases from upstream → build what changed → bake AMIs → prune → report. */
import type { Tools } from "../state/read.js";
import { humanReport, runNightly, type NightlyOptions, type NightlyReport } from "../nightly/run.js";

export async function nightlyCommand(
  options: NightlyOptions,
  tools: Tools,
  out: (t: string) => void,
  err: (t: string) => void,
): Promise<NightlyReport> {
  const report = await runNightly(options, tools, err);
  if (options.json) out(JSON.stringify(report, null, 2));
  err(humanReport(report));
  return report;
}
