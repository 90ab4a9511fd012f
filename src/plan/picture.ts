/**
 * The plan as a picture: Graphviz DOT and Mermaid text of the graph, nodes grouped by layer
 * (base → service → release → AMI) and coloured by status, edges parent → child and shipped
 * image → AMI, each node labelled with its short key and the reason for its status. Pure but for
 * the SVG, drawn by the function it is given.
 */
import { shortKey } from "../config/model.js";
import type { PlanEntry, Status } from "./plan.js";

export const PICTURE_FORMATS = ["dot", "mermaid", "svg"] as const;
export type PictureFormat = (typeof PICTURE_FORMATS)[number];

const LAYERS = ["base", "service", "release", "ami"] as const;
const LAYER_TITLES: Record<(typeof LAYERS)[number], string> = {
  base: "bases",
  service: "services",
  release: "releases",
  ami: "AMIs",
};

/** Fill and line colours per status: cached green, to build orange, unknown grey (dashed). */
const COLOURS: Record<Status, { fill: string; line: string }> = {
  cached: { fill: "#e6f4ea", line: "#2b8a3e" },
  build: { fill: "#fff0db", line: "#d9480f" },
  unknown: { fill: "#f1f3f5", line: "#868e96" },
};

/** One node's label lines: name, short key and status, the reason, and an AMI's stages. */
function labelLines(e: PlanEntry): string[] {
  const flat = (s: string) => s.replace(/\s+/g, " ").trim();
  return [
    e.name,
    `${e.key ? shortKey(e.key) : "key unknown"} · ${e.status}`,
    flat(e.reason),
    ...(e.stages ?? []).map((s) => `stage ${s.name} ${shortKey(s.key)}: ${s.status}`),
  ];
}

/** The entries grouped by layer, in the order the picture shows them. */
function byLayer(entries: PlanEntry[]): [(typeof LAYERS)[number], PlanEntry[]][] {
  return LAYERS.map((layer) => [layer, entries.filter((e) => e.layer === layer)] as [typeof layer, PlanEntry[]]).filter(
    ([, group]) => group.length > 0,
  );
}

/**
 * Edges between nodes of the picture: parent → child; into an AMI, a shipped image ("ships") or
 * the local host image it starts from ("host").
 */
function edges(entries: PlanEntry[]): { from: PlanEntry; to: PlanEntry; label?: string }[] {
  const byName = new Map(entries.map((e) => [e.name, e]));
  return entries.flatMap((to) =>
    to.deps.flatMap((d) => {
      const from = byName.get(d);
      if (!from) return [];
      return [{ from, to, ...(to.kind === "ami" ? { label: to.ships?.includes(d) ? "ships" : "host" } : {}) }];
    }),
  );
}

/** The picture's text; an SVG is the DOT graph drawn by `draw` (tools/graphviz.ts). */
export async function planPicture(
  entries: PlanEntry[],
  format: PictureFormat,
  draw: (dot: string) => Promise<string>,
): Promise<string> {
  if (format === "mermaid") return planMermaid(entries);
  return format === "svg" ? draw(planDot(entries)) : planDot(entries);
}

const dotString = (s: string) => `"${s.replace(/\\/g, "\\\\").replace(/"/g, '\\"')}"`;

export function planDot(entries: PlanEntry[]): string {
  const lines = [
    "digraph bake {",
    "  rankdir=LR;",
    '  node [shape=box, style="rounded,filled", fontname="Helvetica", fontsize=11];',
    '  edge [color="#495057"];',
  ];
  for (const [layer, group] of byLayer(entries)) {
    lines.push(`  subgraph ${dotString(`cluster_${layer}`)} {`, `    label=${dotString(LAYER_TITLES[layer])};`);
    lines.push('    style=dashed; color="#adb5bd";');
    for (const e of group) {
      const c = COLOURS[e.status];
      // Each line of the label ends with \l (left-justified), escaped once for DOT's string.
      const label = labelLines(e)
        .map((l) => `${l.replace(/\\/g, "\\\\").replace(/"/g, '\\"')}\\l`)
        .join("");
      lines.push(
        `    ${dotString(e.name)} [label="${label}", fillcolor="${c.fill}", color="${c.line}"${e.status === "unknown" ? ', style="rounded,filled,dashed"' : ""}];`,
      );
    }
    lines.push("  }");
  }
  for (const { from, to, label } of edges(entries))
    lines.push(
      `  ${dotString(from.name)} -> ${dotString(to.name)}${label ? ` [style=dashed, label="${label}"]` : ""};`,
    );
  lines.push("}");
  return lines.join("\n");
}

/** Text inside a Mermaid label: its entity codes for what Mermaid would read as syntax. */
export const mermaidText = (s: string) =>
  s.replace(/#/g, "#35;").replace(/"/g, "#quot;").replace(/</g, "#lt;").replace(/>/g, "#gt;");

export function planMermaid(entries: PlanEntry[]): string {
  // Ids of their own (n0, n1, …): node names may be Mermaid keywords ("end") or hold its syntax.
  const id = new Map(entries.map((e, i) => [e.name, `n${i}`]));
  const lines = ["flowchart LR"];
  for (const [layer, group] of byLayer(entries)) {
    lines.push(`  subgraph ${layer}["${LAYER_TITLES[layer]}"]`);
    for (const e of group) lines.push(`    ${id.get(e.name)}["${labelLines(e).map(mermaidText).join("<br/>")}"]`);
    lines.push("  end");
  }
  for (const { from, to, label } of edges(entries))
    lines.push(`  ${id.get(from.name)} ${label ? `-. ${label} .->` : "-->"} ${id.get(to.name)}`);
  for (const status of ["cached", "build", "unknown"] as const) {
    const c = COLOURS[status];
    lines.push(
      `  classDef ${status} fill:${c.fill},stroke:${c.line}${status === "unknown" ? ",stroke-dasharray:4 3" : ""}`,
    );
  }
  for (const status of ["cached", "build", "unknown"] as const) {
    const members = entries.filter((e) => e.status === status).map((e) => id.get(e.name));
    if (members.length) lines.push(`  class ${members.join(",")} ${status}`);
  }
  return lines.join("\n");
}
