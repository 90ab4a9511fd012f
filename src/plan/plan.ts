/**
 * The plan: for every node in build order, its key, whether it is cached or will build, and
 * why. Pure: the state of the world comes in as data.
 */
import { shortKey } from "../config/model.js";
import type { GraphNode } from "../graph/graph.js";
import { ANSIBLE_INPUT, type InputDigests, type KeyResult, type Target } from "../graph/keys.js";
import type { BakeImageRecord } from "../tools/docker.js";
import type { AmiRecord } from "../tools/ec2.js";
import type { AmiNode, Layer } from "../config/model.js";
import { amiStages, stagesOn, stageTag, type Stage, type StageName } from "../graph/stages.js";

export type Status = "cached" | "build" | "unknown";

export interface PlanEntry {
  name: string;
  kind: "image" | "ami";
  layer: Layer | "ami";
  key: string | null;
  status: Status;
  reason: string;
  deps: string[];
  /** The image id or AMI id that makes this node cached. */
  existing?: string;
  /** An AMI's shipped images (preload: and services:); its other dependency is the local host it starts from. */
  ships?: string[];
  /** An AMI baked in stages (graph/stages.ts): each stage, bottom first; the last is the AMI itself. */
  stages?: StageEntry[];
}

export interface StageEntry {
  name: StageName;
  key: string;
  status: Status;
  reason: string;
}

export type Known<T> = { ok: true; value: T } | { ok: false; reason: string };

export interface WorldState {
  /**
   * Images of the project, from the engine: every one (imagesListed), or, when each key's tag
   * named an image, only those.
   */
  images: Known<BakeImageRecord[]>;
  imagesListed?: boolean;
  /** On the aws target: the AMI carrying each AMI node's key, per AMI name. */
  amis: Map<string, Known<AmiRecord | undefined>>;
  /** On the vm target: the disk under .bake/vm/ holding each AMI node's key (its path), per AMI name. */
  vmDisks?: Map<string, string | undefined>;
  /** What bake-manifest.json says each AMI was last baked from: a rebuild's reason names the change. */
  lastBaked?: Map<string, { key: string; target: string; inputs?: InputDigests }>;
}

const INPUT_WORDS: Record<string, string> = {
  context: "build context",
  dockerfile: "Dockerfile",
  args: "build args",
  rootfs: "rootfs spec",
  from: "upstream image",
  parent: "parent image",
  spec: "AMI settings",
  playbook: "playbook or roles",
  preload: "preloaded images",
  services: "service images",
  contracts: "service contracts",
  source: "source image",
  target: "target",
  test: "test spec",
  amiTools: "bake's EC2 AMI tools role",
  provisioning: "bake's host provisioning",
  vmDisk: "VM host disk spec",
};

export function assemblePlan(
  nodes: GraphNode[],
  keys: Map<string, KeyResult>,
  state: WorldState,
  target: Target,
): PlanEntry[] {
  const entries = new Map<string, PlanEntry>();
  for (const node of nodes) {
    const k = keys.get(node.name)!;
    const entry = entryOf({
      name: node.name,
      kind: node.kind,
      layer: node.kind === "image" ? node.image.layer : "ami",
      key: k.key ?? null,
      deps: node.deps,
      ...(node.kind === "ami" ? { ships: [...new Set([...node.ami.preload, ...node.ami.services])] } : {}),
    });
    if (k.key === undefined && "contextPending" in k && k.contextPending && state.images.ok)
      // Only a build defers (never `bake plan`): it reuses an image with the final key if one exists.
      entries.set(node.name, entry("build", `${k.unknownBecause}; an image with the resulting key is reused`));
    else if (k.key === undefined) entries.set(node.name, entry("unknown", `key unknown: ${k.unknownBecause}`));
    else {
      const depsBuilding = node.deps.filter((d) => entries.get(d)?.status === "build");
      const keyed = { node, k: k as KeyResult & { key: string }, entry, depsBuilding };
      entries.set(
        node.name,
        node.kind === "ami" && target === "aws"
          ? awsEntry(keyed, state)
          : node.kind === "ami" && target === "vm"
            ? vmEntry(keyed, state)
            : engineEntry(keyed, state, target),
      );
    }
  }
  return nodes.map((n) => entries.get(n.name)!);
}

type EntryOf = (status: Status, reason: string, existing?: string) => PlanEntry;

function entryOf(base: Omit<PlanEntry, "status" | "reason">): EntryOf {
  return (status, reason, existing) => ({ ...base, status, reason, ...(existing ? { existing } : {}) });
}

/** A node whose key is known, as the plan looks at it. */
interface KeyedNode {
  node: GraphNode;
  k: KeyResult & { key: string };
  entry: EntryOf;
  /** Its parents that build in this plan. */
  depsBuilding: string[];
}

/** An AWS AMI: the AMI in its region tagged with the key, if the lookup could answer. */
function awsEntry({ node, k, entry, depsBuilding }: KeyedNode, state: WorldState): PlanEntry {
  const region = (node as { ami: { region: string } }).ami.region;
  const found = state.amis.get(node.name);
  if (!found || !found.ok) return entry("unknown", found ? found.reason : "AMIs not looked up");
  const done = found.value
    ? entry("cached", `${found.value.imageId} in ${region} carries this key`, found.value.imageId)
    : entry(
        "build",
        unbakedReason(node.name, k, state, "aws", depsBuilding, `no AMI in ${region} is tagged with this key`),
      );
  const stages = node.kind === "ami" ? stagesOn(node.ami, "aws", k) : undefined;
  if (stages && node.kind === "ami") {
    const below = state.amis.get(stages[0].node);
    done.stages = [
      below && !below.ok && !found.value
        ? { name: "host", key: stages[0].key, status: "unknown", reason: below.reason }
        : keptStageEntry(node.ami, stages[0], Boolean(found.value), state, "aws", {
            found: below?.ok && below.value ? `${below.value.imageId} in ${region}` : undefined,
            none: `no AMI in ${region} is tagged with this key`,
          }),
      { name: "release", key: k.key, status: done.status, reason: done.reason },
    ];
  }
  return done;
}

/** A VM AMI: the disk under .bake/vm with the key. */
function vmEntry({ node, k, entry, depsBuilding }: KeyedNode, state: WorldState): PlanEntry {
  const disk = state.vmDisks?.get(node.name);
  const done = disk
    ? entry("cached", `${disk} has this key`, disk)
    : entry("build", unbakedReason(node.name, k, state, "vm", depsBuilding, "no VM disk under .bake/vm has this key"));
  const stages = node.kind === "ami" ? stagesOn(node.ami, "vm", k) : undefined;
  if (stages && node.kind === "ami")
    done.stages = [
      keptStageEntry(node.ami, stages[0], Boolean(disk), state, "vm", {
        found: state.vmDisks?.get(stages[0].node),
        none: "no VM disk under .bake/vm has this key",
      }),
      { name: "release", key: k.key, status: done.status, reason: done.reason },
    ];
  return done;
}

/**
 * The host stage below a staged AMI kept outside the engine (a VM disk, an AWS AMI): reused when
 * the AMI has its key, or when the stage's own result (`found`) does; else what changed since the
 * last bake on this target.
 */
function keptStageEntry(
  ami: AmiNode,
  host: Stage,
  amiFound: boolean,
  state: WorldState,
  target: Target,
  result: { found?: string; none: string },
): StageEntry {
  if (amiFound) return { name: "host", key: host.key, status: "cached", reason: "the AMI has its key" };
  if (result.found)
    return { name: "host", key: host.key, status: "cached", reason: `${result.found} has this key: reused` };
  const last = state.lastBaked?.get(ami.name);
  const lastHost =
    last?.target === target && last.inputs ? amiStages(ami, { key: last.key, inputs: last.inputs })[0] : undefined;
  const changed = lastHost && lastHost.key !== host.key ? changedInputs(lastHost.inputs, host.inputs) : undefined;
  return {
    name: "host",
    key: host.key,
    status: "build",
    reason: changed ? `${describeInputs(changed)} changed since ${shortKey(lastHost!.key)}` : result.none,
  };
}

/** An image, or a local AMI (an image too): the engine's image with the key, its test passed. */
function engineEntry({ node, k, entry, depsBuilding }: KeyedNode, state: WorldState, target: Target): PlanEntry {
  if (!state.images.ok) return entry("unknown", state.images.reason);
  const mine = state.images.value.filter((r) => r.node === node.name);
  const hit = mine.find((r) => r.key === k.key);
  // An image with a test: counts once its test passed: its key tag says so.
  const failedTest =
    hit && node.kind === "image" && node.image.test && !hit.tags.some((t) => t.endsWith(`:${shortKey(k.key)}`));
  if (hit && failedTest)
    return entry("build", `its test has not passed (${hit.tags[0] ?? hit.id.slice(0, 19)}): tested again`, hit.id);
  const done = hit
    ? entry("cached", `image ${hit.tags[0] ?? hit.id.slice(0, 19)} has this key`, hit.id)
    : entry("build", buildReason(previousImage(mine), k.inputs, depsBuilding));
  const stages = node.kind === "ami" ? stagesOn(node.ami, target, k) : undefined;
  if (stages) {
    const host = stageEntry(stages[0], Boolean(hit), state.images.value);
    done.stages = [host, { name: "release", key: k.key, status: done.status, reason: done.reason }];
  }
  return done;
}

/** The host stage below a staged AMI: reused when the AMI has its key, or when its own image does. */
function stageEntry(host: Stage, amiFound: boolean, records: BakeImageRecord[]): StageEntry {
  if (amiFound) return { name: "host", key: host.key, status: "cached", reason: "the AMI has its key" };
  const below = records.filter((r) => r.node === host.node);
  const found = below.find((r) => r.key === host.key);
  return found
    ? {
        name: "host",
        key: host.key,
        status: "cached",
        reason: `image ${found.tags[0] ?? stageTag(host)} has this key: reused`,
      }
    : { name: "host", key: host.key, status: "build", reason: buildReason(previousImage(below), host.inputs, []) };
}

/**
 * The image a rebuild is compared with: the one the node's name points to (`latest` moves only
 * after a whole run succeeded), else the newest, ties broken by id, so that two plans with
 * nothing changed in between name the same one.
 */
export function previousImage(records: BakeImageRecord[]): BakeImageRecord | undefined {
  const current = records.find((r) => r.tags.some((t) => t.endsWith(":latest")));
  return current ?? [...records].sort((a, b) => b.created - a.created || (a.id < b.id ? 1 : a.id > b.id ? -1 : 0))[0];
}

function buildReason(previous: BakeImageRecord | undefined, inputs: InputDigests, depsBuilding: string[]): string {
  if (!previous)
    return depsBuilding.length ? `never built; ${depsBuilding.join(", ")} will build first` : "never built";
  const changed = changedInputs(previous.inputs, inputs);
  const since = `since ${shortKey(previous.key)}`;
  if (!changed) return `changed ${since}`;
  return `${describeInputs(changed)} changed ${since}`;
}

/** Why an AMI with no result for its key bakes: the inputs changed since the manifest's last bake on this target, or what builds first, or `none`. */
function unbakedReason(
  name: string,
  k: { key: string; inputs: InputDigests },
  state: WorldState,
  target: Target,
  depsBuilding: string[],
  none: string,
): string {
  const last = state.lastBaked?.get(name);
  const changed =
    last && last.target === target && last.key !== k.key ? changedInputs(last.inputs, k.inputs) : undefined;
  if (changed) return `${describeInputs(changed)} changed since ${shortKey(last!.key)}`;
  return depsBuilding.length ? `${depsBuilding.join(", ")} will build` : none;
}

/** Input names in words; files Ansible reads by their names ("playbook input group_vars/all.yml"). */
export function describeInputs(names: string[]): string {
  const files = names.filter((n) => n.startsWith(ANSIBLE_INPUT)).map((n) => n.slice(ANSIBLE_INPUT.length));
  const words = names.filter((n) => !n.startsWith(ANSIBLE_INPUT)).map((n) => INPUT_WORDS[n] ?? n);
  if (files.length)
    words.push(
      `playbook ${files.length === 1 ? "input" : "inputs"} ${files.slice(0, 5).join(", ")}${files.length > 5 ? ` and ${files.length - 5} more` : ""}`,
    );
  return words.join(", ");
}

/** Names of the inputs that differ, or undefined when the previous inputs are not known. */
export function changedInputs(previous: InputDigests | undefined, current: InputDigests): string[] | undefined {
  if (!previous) return undefined;
  const names = [...new Set([...Object.keys(previous), ...Object.keys(current)])].sort();
  const changed = names.filter((n) => previous[n] !== current[n]);
  return changed.length ? changed : undefined;
}
