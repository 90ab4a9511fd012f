/** `bake doctor`: one line per check, and for each failing one the command that fixes it (doctor/checks.ts). */
import type { Tools } from "../state/read.js";
import { formatCheck, runChecks, type Check } from "../doctor/checks.js";

export async function doctorCommand(
  options: { file: string; json: boolean },
  tools: Tools,
  out: (text: string) => void,
): Promise<Check[]> {
  const checks = await runChecks(options, tools);
  out(options.json ? JSON.stringify({ checks }, null, 2) : checks.map(formatCheck).join("\n"));
  return checks;
}
