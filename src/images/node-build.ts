/** One node's build as the run hands it over, what comes out of it, and the labels its image gets. */
import type { ImageNode } from "../config/model.js";
import type { Pipeline } from "../state/read.js";
import type { PlanEntry } from "../plan/plan.js";
import { LABEL, type BakeImageRecord, type DockerTool } from "../tools/docker.js";
import type { GitInfo } from "../tools/git.js";
import type { InputDigests } from "../graph/keys.js";
import type { StepReport } from "./rootfs.js";

export type NodeAction = "cached" | "pulled" | "built";

export interface ImageResult {
  name: string;
  key: string;
  id: string;
  repo: string;
  action: NodeAction;
  tags: string[];
  digest?: string;
  seconds: number;
}

/** The labels bake gives a node's image: its project, node, key, parent, inputs, and the OCI ones. */
export function imageLabels(
  node: ImageNode,
  key: string,
  inputs: InputDigests,
  pipeline: Pipeline,
  git: GitInfo,
  now: Date,
): Record<string, string> {
  const labels: Record<string, string> = {
    [LABEL.project]: pipeline.config.project,
    [LABEL.node]: node.name,
    [LABEL.key]: key,
    [LABEL.parent]: inputs.parent ?? inputs.rootfs ?? inputs.from ?? "",
    [LABEL.inputs]: JSON.stringify(inputs),
    "org.opencontainers.image.title": `${pipeline.config.project}/${node.name}`,
    "org.opencontainers.image.created": now.toISOString(),
  };
  if (git.revision) labels["org.opencontainers.image.revision"] = git.revision;
  if (git.source) labels["org.opencontainers.image.source"] = git.source;
  return labels;
}

/** What one node's build takes of the run's options. */
export interface NodeBuildOptions {
  noCache: boolean;
  signal: AbortSignal;
  /** Moving tags besides `latest`: with a registry, their images there seed a build's cache. */
  tags?: string[];
}

/** The tags each image had when the run started (one engine query, made by the read step). */
export function knownTags(pipeline: Pipeline): Map<string, Set<string>> {
  const images = pipeline.state.images.ok ? pipeline.state.images.value : [];
  return new Map(images.map((i) => [i.id, new Set(i.tags)]));
}

/** Finds an image of the node that has the key under any tag (by its labels). */
export type FindExisting = (node: string, repo: string, key: string) => Promise<BakeImageRecord | undefined>;

/** One node's build as the run hands it over: the node, its plan entry, and what the run shares. */
export interface NodeBuild {
  node: ImageNode;
  entry: PlanEntry;
  pipeline: Pipeline;
  docker: DockerTool;
  git: Promise<GitInfo>;
  now: Date;
  options: NodeBuildOptions;
  report: StepReport;
  findExisting: FindExisting;
  /** The node's build secrets, by id. */
  secrets?: Map<string, Buffer>;
}
