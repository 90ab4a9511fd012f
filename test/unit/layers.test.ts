/**
 * The house follows its layers: every import in src/ goes down (to a folder of a lower layer) or
 * stays in its own folder, and no files import each other in a circle. A new import that climbs
 * fails here, in `make test` and CI, naming the file and what it imports.
 */
import { test } from "uvu";
import * as assert from "uvu/assert";
import { readdirSync, readFileSync } from "node:fs";
import path from "node:path";
import { ROOT } from "../helpers/bake.js";

/** From the ground up: a folder (or top-level file) may import only from lower layers and itself. */
const LAYERS: string[][] = [
  ["errors.ts", "package-root.ts"],
  ["files"],
  ["config"],
  ["graph", "runtime"],
  ["tools"],
  ["plan", "goss", "up"],
  ["state"],
  ["images", "host"],
  ["sbom"],
  ["ami", "image-build", "report"],
  ["targets"],
  ["ami-bake"],
  ["prune", "doctor"],
  ["nightly"],
  ["commands"],
  ["cli.ts", "bake.cts"],
];

/** Imports that still climb, each with where it goes next; the list only shrinks. */
const KNOWN_CLIMBS = new Set<string>([]);

const SRC = path.join(ROOT, "src");
const rank = new Map(LAYERS.flatMap((names, i) => names.map((n) => [n, i] as const)));
const roomOf = (rel: string) => rel.split("/")[0];

function sources(dir = SRC): string[] {
  return readdirSync(dir, { recursive: true, withFileTypes: true })
    .filter((e) => e.isFile() && /\.c?ts$/.test(e.name) && !e.name.endsWith(".d.ts"))
    .map((e) => path.relative(SRC, path.join(e.parentPath, e.name)).split(path.sep).join("/"));
}

/** Relative imports of a file (static, dynamic and re-exports), as paths of .ts files under src/. */
function importsOf(rel: string): string[] {
  const text = readFileSync(path.join(SRC, rel), "utf8");
  const out = new Set<string>();
  for (const m of text.matchAll(/(?:from\s+|import\s*\(\s*|import\s+)["'](\.{1,2}\/[^"']+)["']/g)) {
    out.add(path.posix.normalize(path.posix.join(path.posix.dirname(rel), m[1])).replace(/\.c?js$/, ".ts"));
  }
  return [...out];
}

test("every folder of src/ has a layer", () => {
  const rooms = new Set(sources().map(roomOf));
  assert.equal(
    [...rooms].filter((r) => !rank.has(r)),
    [],
    "add the new folder to LAYERS",
  );
});

test("no import climbs to a higher layer or across to another folder of the same layer", () => {
  const climbs: string[] = [];
  for (const file of sources()) {
    for (const target of importsOf(file)) {
      const [from, to] = [roomOf(file), roomOf(target)];
      if (from === to) continue;
      if (rank.get(to)! < rank.get(from)!) continue;
      climbs.push(`${file} -> ${target}`);
    }
  }
  assert.equal(
    climbs.filter((c) => !KNOWN_CLIMBS.has(c)),
    [],
    "an import that climbs: move what it needs down, or the importer up",
  );
  assert.equal(
    [...KNOWN_CLIMBS].filter((c) => !climbs.includes(c)),
    [],
    "a known climb is gone: take it off KNOWN_CLIMBS",
  );
});

test("no files import each other in a circle", () => {
  const graph = new Map(sources().map((f) => [f, importsOf(f)]));
  const state = new Map<string, "open" | "done">();
  const circles: string[] = [];
  const visit = (f: string, stack: string[]) => {
    if (state.get(f) === "done") return;
    if (state.get(f) === "open") {
      circles.push([...stack.slice(stack.indexOf(f)), f].join(" -> "));
      return;
    }
    state.set(f, "open");
    for (const t of graph.get(f) ?? []) visit(t, [...stack, f]);
    state.set(f, "done");
  };
  for (const f of [...graph.keys()].sort()) visit(f, []);
  assert.equal(circles, []);
});

test.run();
