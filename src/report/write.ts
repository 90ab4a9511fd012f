/** Writes a run's record and report beside its logs, and the CI job summary when the job asks for one. */
import { appendFileSync, existsSync, mkdirSync, readdirSync, writeFileSync } from "node:fs";
import path from "node:path";
import { reportHtml } from "./html.js";
import { runRecord, worthReporting, type RunRecord } from "./record.js";
import { stepSummary } from "./summary.js";

/** Writes run.json and report.html into the run's folder (for the owner only, as its logs); returns the report's path. */
export function writeRunReport(folder: string, record: RunRecord): string {
  mkdirSync(folder, { recursive: true, mode: 0o700 });
  writeFileSync(path.join(folder, "run.json"), `${JSON.stringify(record, null, 2)}\n`, { mode: 0o600 });
  const report = path.join(folder, "report.html");
  writeFileSync(report, reportHtml(record), { mode: 0o600 });
  return report;
}

/** Appends the run to the job summary file GitHub Actions names in GITHUB_STEP_SUMMARY, when it is set. */
export function appendStepSummary(record: RunRecord, reportPath: string, env = process.env): string | undefined {
  const file = env.GITHUB_STEP_SUMMARY;
  if (!file) return undefined;
  appendFileSync(file, `${stepSummary(record, reportPath)}\n`);
  return file;
}

/**
 * Records a run that built, pulled or failed something (a no-op run leaves nothing to look at):
 * run.json and report.html in its folder, and the job summary. Returns the report's path.
 */
export function reportRun(input: Omit<Parameters<typeof runRecord>[0], "ended" | "logs"> & { folder: string }): {
  report?: string;
  unwritten?: string;
} {
  const logs = existsSync(input.folder) ? readdirSync(input.folder) : [];
  const record = runRecord({ ...input, ended: new Date(), logs });
  if (!worthReporting(record)) return {};
  // The report never stands in the way of the run's own outcome (a full disk is the run's error to tell).
  try {
    const report = writeRunReport(input.folder, record);
    appendStepSummary(record, report);
    return { report };
  } catch (e) {
    return { unwritten: `the run's report was not written: ${(e as Error).message}` };
  }
}
