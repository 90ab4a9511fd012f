/**
 * Checks that need more than the schema (names, parents, layers, cycles, files, ports, account
 * ids) and produces the normalised BakeConfig. Reads the file system only to see that the
 * files and folders bake.yml names exist.
 */
import { ConfigError } from "../errors.js";
import type { BakeFile } from "./schema.js";
import type { AmiNode, BakeConfig, ImageNode, Layer } from "./model.js";
import { dotted, type SourceMap, type YamlPath } from "./source-map.js";
import { projectPathGuard } from "./project-paths.js";
import type { Report } from "./check-report.js";
import { checkImage } from "./check-image.js";
import { checkAmi } from "./check-ami.js";

/** One path component of a Docker repository name. */
export const DOCKER_NAME = /^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*$/;
const REGISTRY =
  /^(?:[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?)(?:\.[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?)*(?::\d{1,5})?(?:\/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*$/;

export function checkSemantics(
  raw: BakeFile,
  map: SourceMap,
  dir: string,
  env: Record<string, string | undefined> = {},
): { config: BakeConfig; errors: ConfigError[] } {
  const errors: ConfigError[] = [];
  const guard = projectPathGuard(dir, env);
  const report = (p: YamlPath, message: string, hint?: string, key = false) =>
    void errors.push(new ConfigError(map.locate(p, key), message, hint));
  // Every path bake.yml names passes here: inside the project, or allowed from outside bake.yml.
  const err: Report = Object.assign(report, {
    outside: (p: YamlPath, what: string, value: string, resolved: string) => {
      if (guard.allowed(resolved)) return false;
      report(p, `${what} ${value} is outside the project`, guard.hint(resolved));
      return true;
    },
  });

  if (!DOCKER_NAME.test(raw.project)) {
    err(
      ["project"],
      `project "${raw.project}" is not a valid Docker repository name`,
      "use lower-case letters, digits and single . _ - between them, e.g. arcade",
    );
  }
  let registry: string | undefined = raw.registry?.trim().replace(/\/+$/, "") || undefined;
  if (registry && !REGISTRY.test(registry)) {
    err(
      ["registry"],
      `registry "${raw.registry}" is not host[:port][/path]`,
      "e.g. 127.0.0.1:5000 or registry.example.com/team; leave it empty for local only",
    );
    registry = undefined;
  }

  const imageEntries = Object.entries(raw.images);
  const layers = new Map<string, Layer>();
  for (const [name, img] of imageEntries) layers.set(name, img.run ? "release" : img.parent ? "service" : "base");

  const images: ImageNode[] = [];
  for (const [name, img] of imageEntries) {
    const at: YamlPath = ["images", name];
    if (!DOCKER_NAME.test(name))
      err(
        at,
        `image name "${name}" is not a valid Docker repository name`,
        "use lower-case letters, digits and single . _ - between them",
        true,
      );
    const layer = layers.get(name)!;
    images.push(checkImage(name, img, layer, layers, at, dir, map, err));
  }

  // Cycles among parents: report at the parent key of the first node on the cycle.
  const cycle = findCycle(
    images.map((i) => ({ name: i.name, deps: i.parent && layers.has(i.parent) ? [i.parent] : [] })),
  );
  if (cycle)
    err(
      ["images", cycle[0], "parent"],
      `images form a cycle: ${[...cycle, cycle[0]].join(" → ")}`,
      "a parent chain must end at a base image (one with rootfs: or from:)",
    );

  const amis: AmiNode[] = [];
  for (const [name, ami] of Object.entries(raw.amis ?? {})) {
    const at: YamlPath = ["amis", name];
    if (!DOCKER_NAME.test(name))
      err(at, `AMI name "${name}" is not valid`, "use lower-case letters, digits and single . _ - between them", true);
    if (layers.has(name)) err(at, `"${name}" names both an image and an AMI`, "give the AMI a name of its own", true);
    amis.push(checkAmi(name, ami, new Map(imageEntries), layers, at, dir, map, err));
  }

  errors.sort((a, b) => a.line - b.line || a.column - b.column);
  return { config: { file: map.file, dir, project: raw.project, registry, images, amis }, errors };
}

export { dotted };

/** Returns the names on a cycle, or undefined when the dependencies form a DAG. */
export function findCycle(nodes: { name: string; deps: string[] }[]): string[] | undefined {
  const deps = new Map(nodes.map((n) => [n.name, n.deps]));
  const state = new Map<string, "visiting" | "done">();
  const stack: string[] = [];
  const visit = (name: string): string[] | undefined => {
    const s = state.get(name);
    if (s === "done") return undefined;
    if (s === "visiting") return stack.slice(stack.indexOf(name));
    state.set(name, "visiting");
    stack.push(name);
    for (const d of deps.get(name) ?? []) {
      const c = visit(d);
      if (c) return c;
    }
    stack.pop();
    state.set(name, "done");
    return undefined;
  };
  for (const n of [...nodes].sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0))) {
    const c = visit(n.name);
    if (c) return c;
  }
  return undefined;
}
