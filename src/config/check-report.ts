/** How the semantic checks report a problem, and the small tests they share. */
import { statSync } from "node:fs";
import type { YamlPath } from "./source-map.js";

export const ENV_NAME = /^[A-Za-z_][A-Za-z0-9_]*$/;

/** Reports a problem at a place in bake.yml; `outside` reports a path outside the project (true when it is). */
export type Report = ((p: YamlPath, message: string, hint?: string, key?: boolean) => void) & {
  outside: (p: YamlPath, what: string, value: string, resolved: string) => boolean;
};

export function kindOf(p: string): "file" | "dir" | undefined {
  try {
    const s = statSync(p);
    return s.isDirectory() ? "dir" : s.isFile() ? "file" : undefined;
  } catch {
    return undefined;
  }
}
