/**
 * An AMI baked in stages, each with a key over its own inputs only, so that a change to what
 * changes often (a release) does not rebake what changes rarely (the engine, the agent, the
 * playbook, the base images). Two stages:
 *
 * - `host`: the source, the engine and bake's agent, the AMI's playbook and roles, and the images
 *   it ships without running them (`preload:` that are not services or `release_images:`);
 * - `release`: the images the AMI runs (`services:`) with their runtime contracts (`contracts`),
 *   the preloaded images bake.yml says change with them (`release_images:`), the package list and
 *   the AMI's test. Its key is the AMI's key, which covers every input.
 *
 * The release stage starts from the host stage's result. Pure.
 */
import type { AmiNode } from "../config/model.js";
import { shippedImages, shortKey } from "../config/model.js";
import { keyOf, type InputDigests, type Target } from "./keys.js";

export type StageName = "host" | "release";

/** The targets whose bakes go in stages: every one. */
export const STAGED_TARGETS: readonly Target[] = ["local", "vm", "aws"];

export interface Stage {
  name: StageName;
  /** The images this stage ships (loads into the host's engine). */
  images: string[];
  /** The services it enables at boot. */
  services: string[];
  /** The name bake gives what this stage produced (labels, records): `<ami>@host`; the release stage is the AMI. */
  node: string;
  key: string;
  inputs: InputDigests;
}

/** The stage separator in a stage's node name: never part of an image or AMI name. */
export const STAGE_MARK = "@";

/** The name bake gives a stage below the AMI in labels and records: `<ami>@<stage>`. */
export function stageNode(ami: string, stage: StageName): string {
  return `${ami}${STAGE_MARK}${stage}`;
}

/** Whether the AMI bakes in stages on this target: it runs services (its release stage) and the target chains stages. */
export function isStaged(ami: Pick<AmiNode, "services">, target: Target): boolean {
  return ami.services.length > 0 && STAGED_TARGETS.includes(target);
}

/**
 * The AMI's stages, bottom first, from its key and the inputs it was made of: the host stage's
 * key leaves out the services, the test and the images only the release stage ships.
 */
export function amiStages(
  ami: Pick<AmiNode, "name" | "preload" | "services" | "releaseImages">,
  amiKey: { key: string; inputs: InputDigests },
): [Stage, Stage] {
  const released = new Set([...ami.services, ...ami.releaseImages]);
  const hostImages = shippedImages(ami).filter((n) => !released.has(n));
  const hostInputs: InputDigests = { ...amiKey.inputs, stage: "host" };
  delete hostInputs.services;
  delete hostInputs.contracts;
  delete hostInputs.test;
  // The AMI's `preload` component lists `name:key` for each preloaded image: the host keeps its own.
  hostInputs.preload = (amiKey.inputs.preload ?? "")
    .split(",")
    .filter((entry) => entry && hostImages.includes(entry.slice(0, entry.lastIndexOf(":"))))
    .join(",");
  return [
    {
      name: "host",
      images: hostImages,
      services: [],
      node: stageNode(ami.name, "host"),
      key: keyOf(hostInputs),
      inputs: hostInputs,
    },
    {
      name: "release",
      images: [...ami.services, ...ami.releaseImages.filter((n) => !ami.services.includes(n))],
      services: [...ami.services],
      node: ami.name,
      key: amiKey.key,
      inputs: amiKey.inputs,
    },
  ];
}

/** The tag of a stage's result below the AMI's own (`host-<key12>`, in the AMI's repository). */
export function stageTag(stage: Pick<Stage, "name" | "key">): string {
  return `${stage.name}-${shortKey(stage.key)}`;
}

/** The AMI's stages on this target, or undefined when it bakes in one run (or its key is not known). */
export function stagesOn(
  ami: Pick<AmiNode, "name" | "preload" | "services" | "releaseImages">,
  target: Target,
  amiKey: { key?: string; inputs: InputDigests } | undefined,
): [Stage, Stage] | undefined {
  if (!isStaged(ami, target) || !amiKey?.key) return undefined;
  return amiStages(ami, { key: amiKey.key, inputs: amiKey.inputs });
}
