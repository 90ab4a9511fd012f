/**
 * Files bake.yml names stay inside the project (the folder of bake.yml), links resolved, so that
 * a change that edits only bake.yml cannot send a CI runner's ~/.aws into an image. A folder
 * outside is allowed only from outside bake.yml: `--allow-path DIR` or BAKE_ALLOW_PATHS.
 */
import { realpathSync } from "node:fs";
import path from "node:path";

export const ALLOW_PATHS_ENV = "BAKE_ALLOW_PATHS";

/** The real path of p, or of its nearest existing ancestor joined with the rest. */
function real(p: string): string {
  try {
    return realpathSync(p);
  } catch {
    const parent = path.dirname(p);
    return parent === p ? p : path.join(real(parent), path.basename(p));
  }
}

const within = (p: string, root: string) =>
  p === root || p.startsWith(root.endsWith(path.sep) ? root : `${root}${path.sep}`);

/** Whether bake.yml may name `p`: inside the project, or inside a folder the environment allows. */
export function projectPathGuard(
  dir: string,
  env: Record<string, string | undefined>,
): { allowed: (p: string) => boolean; hint: (p: string) => string } {
  const roots = [
    real(dir),
    ...(env[ALLOW_PATHS_ENV] ?? "")
      .split(":")
      .filter(Boolean)
      .map((a) => real(path.resolve(a))),
  ];
  return {
    allowed: (p) => roots.some((r) => within(real(p), r)),
    hint: (p) =>
      `bake reads only files under the folder of bake.yml (${dir}); to allow this one, run bake with --allow-path ${path.dirname(real(p))} or set ${ALLOW_PATHS_ENV} (never in bake.yml, which a change under review could edit)`,
  };
}
