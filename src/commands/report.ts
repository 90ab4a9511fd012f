/** `bake report [run]`: a run's report drawn again from its record (the latest run by default), or the record itself. */
import path from "node:path";
import { readRunRecord, runFolder } from "../report/record.js";
import { writeRunReport } from "../report/write.js";

export interface ReportCommandOptions {
  file: string;
  run?: string;
  json: boolean;
}

export function reportCommand(options: ReportCommandOptions, out: (text: string) => void): void {
  const folder = runFolder(path.dirname(path.resolve(options.file)), options.run);
  const record = readRunRecord(folder);
  out(options.json ? JSON.stringify(record, null, 2) : writeRunReport(folder, record));
}
