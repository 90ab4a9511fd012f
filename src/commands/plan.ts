/** `bake plan`: the graph in build order with each node's key, status and reason. */
import { readPipeline, type Tools } from "../core/read.js";
import type { Target } from "../graph/keys.js";
import { assemblePlan, type PlanEntry } from "../plan/plan.js";

export interface PlanOptions {
  file: string;
  nodes: string[];
  target: Target;
  json: boolean;
  pull?: boolean;
}

export async function planCommand(options: PlanOptions, tools: Tools, out: (text: string) => void): Promise<PlanEntry[]> {
  const pipeline = await readPipeline({ file: options.file, target: options.target, nodes: options.nodes, pull: options.pull }, tools);
  const entries = assemblePlan(pipeline.nodes, pipeline.keys, pipeline.state, options.target);
  out(options.json ? planJson(entries) : planTable(entries, options.target));
  return entries;
}

export function planJson(entries: PlanEntry[]): string {
  return JSON.stringify({ nodes: entries.map(({ name, kind, layer, key, status, reason }) => ({ name, kind, layer, key, status, reason })) }, null, 2);
}

export function planTable(entries: PlanEntry[], target: Target): string {
  const rows = entries.map((e, i) => [String(i + 1), e.name, e.kind, e.layer, e.key ? e.key.slice(0, 12) : "unknown", e.status, e.reason]);
  const head = ["#", "NODE", "KIND", "LAYER", "KEY", "STATUS", "REASON"];
  const widths = head.map((h, c) => Math.max(h.length, ...rows.map((r) => r[c].length)));
  const line = (r: string[]) => r.map((cell, c) => (c === r.length - 1 ? cell : cell.padEnd(widths[c]))).join("  ");
  const counts = (["build", "cached", "unknown"] as const).map((s) => `${entries.filter((e) => e.status === s).length} ${s}`).join(", ");
  return [line(head), ...rows.map(line), "", `target ${target}: ${counts}`].join("\n");
}
