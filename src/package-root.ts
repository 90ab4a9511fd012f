/** The folder of bake's own package.json: packer/ and ansible/ ship beside it. */
import { existsSync, readFileSync } from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";

// Found by walking up rather than by a fixed "../..", because the same code runs from
// dist/src/** (tests) and from the bundle in dist/bin/.
function findPackageRoot(from: string): string {
  for (let dir = from; ; dir = path.dirname(dir)) {
    if (existsSync(path.join(dir, "package.json")) && existsSync(path.join(dir, "packer"))) return dir;
    if (path.dirname(dir) === dir) throw new Error(`bake's package folder not found above ${from}`);
  }
}

export const PACKAGE_ROOT = findPackageRoot(path.dirname(fileURLToPath(import.meta.url)));

/** bake's version, as its package.json says. */
export function bakeVersion(): string {
  return (JSON.parse(readFileSync(path.join(PACKAGE_ROOT, "package.json"), "utf8")) as { version: string }).version;
}
