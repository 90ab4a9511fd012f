/**
 * bake's JSON state beside bake.yml (bake-manifest.json, bake.lock): written atomically (a
 * temporary file renamed over the old one, so a reader sees the old or the new file, never half),
 * and read loudly: a file that is there but not JSON is a configuration error naming its line,
 * never read as empty (an empty manifest or lock means rebuilding and re-pinning everything).
 */
import { readFileSync } from "node:fs";
import writeFileAtomic from "write-file-atomic";
import { ConfigError } from "../errors.js";

/** The parsed file, or undefined when there is none. */
export function readJsonFile(file: string, what: string): unknown {
  let text: string;
  try {
    text = readFileSync(file, "utf8");
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === "ENOENT") return undefined;
    throw e;
  }
  try {
    const value = JSON.parse(text);
    if (value === null || typeof value !== "object" || Array.isArray(value)) throw new SyntaxError("not a JSON object");
    return value;
  } catch (e) {
    const at = /position (\d+)/.exec((e as Error).message);
    const offset = at ? Number(at[1]) : text.length;
    const before = text.slice(0, offset).split("\n");
    throw new ConfigError(
      { file, line: before.length, column: before.at(-1)!.length + 1 },
      `${what} is not valid JSON: ${(e as Error).message}`,
      `restore it from version control, or remove it to start over (${what === "the manifest" ? "AMIs and images are then found by key again" : "bases are then re-pinned by the next bake nightly"})`,
    );
  }
}

export function writeJsonFile(file: string, value: unknown): void {
  writeFileAtomic.sync(file, `${JSON.stringify(value, null, 2)}\n`);
}
