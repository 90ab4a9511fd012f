/**
 * `bake init [dir]`: a starter project a new user can bake at once — bake.yml (a base, one release
 * on it, the local host image, an AMI), a playbook of the user's own, a goss spec and a .gitignore
 * for bake's files — copied from starter/ in bake's package. Nothing is overwritten.
 */
import { existsSync, mkdirSync, readdirSync, readFileSync, writeFileSync } from "node:fs";
import path from "node:path";
import { PACKAGE_ROOT } from "../package-root.js";
import { UsageError } from "../errors.js";

const STARTER_DIR = path.join(PACKAGE_ROOT, "starter");
/** npm leaves a package's .gitignore out of its tarball: the starter keeps it under another name. */
const RENAMED: Record<string, string> = { gitignore: ".gitignore" };
const PROJECT_TOKEN = /__PROJECT__/g;
const PROJECT_NAME = /^[a-z0-9]+(?:[._-][a-z0-9]+)*$/;

export function initCommand(options: { dir: string; project?: string }, out: (text: string) => void): string[] {
  const dir = path.resolve(options.dir);
  const project =
    options.project ??
    path
      .basename(dir)
      .toLowerCase()
      .replace(/[^a-z0-9._-]+/g, "-")
      .replace(/^[._-]+|[._-]+$/g, "");
  if (!PROJECT_NAME.test(project))
    throw new UsageError(
      `--project: "${project}" is not a valid Docker repository name (lower-case letters, digits and . _ - between them)`,
    );
  const files = readdirSync(STARTER_DIR, { recursive: true, withFileTypes: true })
    .filter((e) => e.isFile())
    .map((e) => path.relative(STARTER_DIR, path.join(e.parentPath, e.name)))
    .sort();
  const target = (rel: string) => path.join(dir, RENAMED[rel] ?? rel);
  const present = files.filter((rel) => existsSync(target(rel))).map((rel) => RENAMED[rel] ?? rel);
  if (present.length)
    throw new UsageError(
      `${dir} already has ${present.join(", ")}: bake init writes a new project and overwrites nothing`,
    );
  for (const rel of files) {
    mkdirSync(path.dirname(target(rel)), { recursive: true });
    writeFileSync(target(rel), readFileSync(path.join(STARTER_DIR, rel), "utf8").replace(PROJECT_TOKEN, project));
  }
  const written = files.map((rel) => RENAMED[rel] ?? rel);
  out(`wrote ${written.join(", ")} in ${dir} (project ${project})`);
  out("next: bake plan --target local, then bake ami app-host --target local");
  return written;
}
