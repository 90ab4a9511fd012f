/** `bake plan`: the graph in build order with each node's key, status and reason. */
import { shortKey } from "../config/model.js";
import { readPipeline, type Tools } from "../state/read.js";
import type { Target } from "../graph/keys.js";
import { assemblePlan, type PlanEntry } from "../plan/plan.js";
import { planPicture, type PictureFormat } from "../plan/picture.js";
import { renderSvg } from "../tools/graphviz.js";

export interface PlanOptions {
  file: string;
  nodes: string[];
  target: Target;
  json: boolean;
  pull?: boolean;
  matrix?: boolean;
  /** The graph as a picture (Graphviz DOT, Mermaid or SVG) instead of the table. */
  picture?: PictureFormat;
}

export async function planCommand(
  options: PlanOptions,
  tools: Tools,
  out: (text: string) => void,
): Promise<PlanEntry[]> {
  const pipeline = await readPipeline(
    { file: options.file, target: options.target, nodes: options.nodes, pull: options.pull },
    tools,
  );
  const entries = assemblePlan(pipeline.nodes, pipeline.keys, pipeline.state, options.target);
  // Build-secret files inside a context: kept out of it, its key and its provenance; said so.
  const withheld = new Map(
    [...pipeline.listings].filter(([, l]) => l.withheldSecrets?.length).map(([name, l]) => [name, l.withheldSecrets!]),
  );
  if (options.matrix)
    out(
      JSON.stringify(
        planMatrix(
          entries,
          pipeline.graph.levels.map((l) => l.map((n) => n.name)),
        ),
      ),
    );
  else if (options.picture) out(await planPicture(entries, options.picture, renderSvg));
  else if (options.json) out(planJson(entries, withheld));
  else
    out(
      [
        planTable(entries, options.target),
        ...[...withheld].map(
          ([name, files]) =>
            `note: ${name}: build secret file${files.length > 1 ? "s" : ""} ${files.join(", ")} withheld from the context, the key and the provenance`,
        ),
      ].join("\n"),
    );
  return entries;
}

export function planJson(entries: PlanEntry[], withheld = new Map<string, string[]>()): string {
  return JSON.stringify(
    {
      nodes: entries.map(({ name, kind, layer, key, status, reason, stages }) => ({
        name,
        kind,
        layer,
        key,
        status,
        reason,
        ...(stages ? { stages } : {}),
        ...(withheld.has(name) ? { withheld: withheld.get(name) } : {}),
      })),
    },
    null,
    2,
  );
}

/**
 * The nodes to build as a CI matrix. `include` has every node that builds; `levels[i].include`
 * the ones whose dependencies are all in lower levels, so a job per level (each needing the one
 * before) can fan out over runners that find parents by key in the shared registry.
 */
export function planMatrix(
  entries: PlanEntry[],
  levels: string[][],
): { include: MatrixEntry[]; levels: { include: MatrixEntry[] }[] } {
  const levelOf = new Map(levels.flatMap((names, i) => names.map((n) => [n, i] as const)));
  const include = entries
    .filter((e) => e.status !== "cached")
    .map((e) => ({ node: e.name, kind: e.kind, key: e.key, level: levelOf.get(e.name) ?? 0, reason: e.reason }));
  const byLevel = levels
    .map((_, i) => ({ include: include.filter((m) => m.level === i) }))
    .filter((l) => l.include.length);
  return { include, levels: byLevel };
}

export interface MatrixEntry {
  node: string;
  kind: "image" | "ami";
  key: string | null;
  level: number;
  reason: string;
}

export function planTable(entries: PlanEntry[], target: Target): string {
  const rows = entries.flatMap((e, i) => [
    [String(i + 1), e.name, e.kind, e.layer, e.key ? shortKey(e.key) : "unknown", e.status, e.reason],
    // A staged AMI: a row per stage below it, bottom first.
    ...(e.stages ?? []).map((s, n, all) => [
      "",
      `${n === all.length - 1 ? "└" : "├"} ${s.name}`,
      "stage",
      e.layer,
      shortKey(s.key),
      s.status,
      s.reason,
    ]),
  ]);
  const head = ["#", "NODE", "KIND", "LAYER", "KEY", "STATUS", "REASON"];
  const widths = head.map((h, c) => Math.max(h.length, ...rows.map((r) => r[c].length)));
  const line = (r: string[]) => r.map((cell, c) => (c === r.length - 1 ? cell : cell.padEnd(widths[c]))).join("  ");
  const counts = (["build", "cached", "unknown"] as const)
    .map((s) => `${entries.filter((e) => e.status === s).length} ${s}`)
    .join(", ");
  return [line(head), ...rows.map(line), "", `target ${target}: ${counts}`].join("\n");
}
