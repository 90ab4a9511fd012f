/** The pipeline as a DAG: images and AMIs, their dependencies, build order and levels. Pure. */
import type { AmiNode, BakeConfig, ImageNode } from "../config/model.js";

export type GraphNode =
  | { kind: "image"; name: string; deps: string[]; image: ImageNode }
  | { kind: "ami"; name: string; deps: string[]; ami: AmiNode };

export interface Graph {
  /** Every node in build order: dependencies first; ties by level, then by name. */
  order: GraphNode[];
  /** Nodes grouped by level: level 0 has no dependencies; nodes within a level are independent. */
  levels: GraphNode[][];
  byName: Map<string, GraphNode>;
}

/**
 * The graph for a target: on `local` an AMI also depends on the image its host starts from
 * (`local.image`), which the other targets never build.
 */
export function buildGraph(config: BakeConfig, target: "aws" | "local" | "vm" = "aws"): Graph {
  const amiDeps = (ami: BakeConfig["amis"][number]) => [
    ...ami.preload,
    ...ami.services,
    ...(target === "local" && ami.local ? [ami.local.image] : []),
  ];
  const nodes: GraphNode[] = [
    ...config.images.map((image): GraphNode => ({
      kind: "image",
      name: image.name,
      deps: image.parent ? [image.parent] : [],
      image,
    })),
    ...config.amis.map((ami): GraphNode => ({ kind: "ami", name: ami.name, deps: unique(amiDeps(ami)), ami })),
  ];
  const byName = new Map(nodes.map((n) => [n.name, n]));
  const level = new Map<string, number>();
  const levelOf = (n: GraphNode): number => {
    const known = level.get(n.name);
    if (known !== undefined) return known;
    const l = n.deps.length ? 1 + Math.max(...n.deps.map((d) => levelOf(byName.get(d)!))) : 0;
    level.set(n.name, l);
    return l;
  };
  nodes.forEach(levelOf);
  const order = [...nodes].sort(
    (a, b) => level.get(a.name)! - level.get(b.name)! || kindRank(a) - kindRank(b) || cmp(a.name, b.name),
  );
  const levels: GraphNode[][] = [];
  for (const n of order) (levels[level.get(n.name)!] ??= []).push(n);
  return { order, levels, byName };
}

/** The named nodes and everything they depend on, in build order. Unknown names are returned in `unknown`. */
export function selectWithDependencies(graph: Graph, names: string[]): { nodes: GraphNode[]; unknown: string[] } {
  if (names.length === 0) return { nodes: graph.order, unknown: [] };
  const unknown = names.filter((n) => !graph.byName.has(n));
  const wanted = new Set<string>();
  const add = (name: string) => {
    if (wanted.has(name)) return;
    wanted.add(name);
    graph.byName.get(name)?.deps.forEach(add);
  };
  names.filter((n) => graph.byName.has(n)).forEach(add);
  return { nodes: graph.order.filter((n) => wanted.has(n.name)), unknown };
}

const kindRank = (n: GraphNode) => (n.kind === "image" ? 0 : 1);
const cmp = (a: string, b: string) => (a < b ? -1 : a > b ? 1 : 0);
const unique = <T>(xs: T[]) => [...new Set(xs)];
