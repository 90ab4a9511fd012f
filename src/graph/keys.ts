/**
 * Bake keys: sha256 over everything that decides a node's output. Pure: the digests of files
 * are read elsewhere (inputs.ts) and passed in.
 */
import { createHash } from "node:crypto";
import type { Graph, GraphNode } from "./graph.js";
import type { AmiNode, ImageNode } from "../config/model.js";

export const KEY_VERSION = "bake-key-v1";

/** The prefix of an AMI's input components that are files Ansible may read (playbook-inputs.ts). */
export const ANSIBLE_INPUT = "ansible:";

/** What bake removes from a debootstrap rootfs before it is imported (tools/debootstrap.ts tidyRootfs): part of its key. */
export const ROOTFS_TIDY = "apt-caches-removed";

/** Named digests of a node's own inputs (without its dependencies' keys). */
export type InputDigests = Record<string, string>;

/** The AMI targets (targets/index.ts has a module for each). */
export const TARGET_NAMES = ["aws", "local", "vm"] as const;
export type Target = (typeof TARGET_NAMES)[number];

/** An AMI's own input that is the disk its VM host starts from: part of its key on the vm target only. */
export const VM_DISK_INPUT = "vmDisk";

export type KeyResult =
  | { key: string; inputs: InputDigests }
  /** contextPending: every input is known but the context digest, which the build takes while sending. */
  | { key: undefined; inputs: InputDigests; unknownBecause: string; contextPending?: true };

/** What the world says about AMI sources: the resolved source AMI per AMI (aws target). */
export interface SourceResolution {
  sourceAmi: Map<string, string>;
  /** Why a source could not be resolved, per AMI name. */
  unresolved: Map<string, string>;
}

export function keyOf(components: InputDigests): string {
  const h = createHash("sha256").update(`${KEY_VERSION}\n`);
  for (const name of Object.keys(components).sort()) h.update(`${name}=${components[name]}\n`);
  return h.digest("hex");
}

export function canonicalJson(value: unknown): string {
  return JSON.stringify(value, (_k, v) =>
    v && typeof v === "object" && !Array.isArray(v)
      ? Object.fromEntries(
          Object.keys(v)
            .sort()
            .map((k) => [k, v[k]]),
        )
      : v,
  );
}

export function digestOf(value: unknown): string {
  return createHash("sha256")
    .update(typeof value === "string" ? value : canonicalJson(value))
    .digest("hex");
}

/**
 * Keys of every node in build order. An image's key folds in its parent's key; an AMI's key
 * folds in the keys of its preloaded and service images and, on `aws`, the resolved source AMI
 * id, on `local` the key of the image its host starts from (local.image), on `vm` the digest of
 * the disk its host starts from (vm:).
 */
export function computeKeys(
  graph: Graph,
  own: Map<string, InputDigests>,
  target: Target,
  sources: SourceResolution,
  /** Nodes with an input that could not be read (an upstream image's digest), and why. */
  unreadable: Map<string, string> = new Map(),
  /** The nodes to key, with everything they depend on, in build order. */
  nodes: GraphNode[] = graph.order,
  /** Images whose context digest is taken while the build sends it (ReadInputs.deferred). */
  contextPending: Set<string> = new Set(),
): Map<string, KeyResult> {
  const keys = new Map<string, KeyResult>();
  for (const node of nodes) {
    const inputs: InputDigests = { ...own.get(node.name)! };
    const why = unreadable.get(node.name);
    keys.set(
      node.name,
      why
        ? { key: undefined, inputs, unknownBecause: why }
        : node.kind === "image"
          ? imageKey(node.image, inputs, keys, contextPending.has(node.name))
          : amiKey(node.ami, inputs, keys, target, sources),
    );
  }
  return keys;
}

/** An image's key: its own inputs and its parent's key (unknown while its context is hashed as it is sent). */
function imageKey(
  image: ImageNode,
  inputs: InputDigests,
  keys: Map<string, KeyResult>,
  contextPending: boolean,
): KeyResult {
  if (image.parent) {
    const parent = keys.get(image.parent)!;
    if (parent.key === undefined)
      return { key: undefined, inputs, unknownBecause: `parent ${image.parent} has no key` };
    inputs.parent = parent.key;
  }
  if (contextPending)
    return {
      key: undefined,
      inputs,
      unknownBecause: "large files of its context are hashed while they are sent",
      contextPending: true,
    };
  return { key: keyOf(inputs), inputs };
}

/** An AMI's key: its inputs, the keys of the images it ships, and what its host starts from on the target. */
function amiKey(
  ami: AmiNode,
  inputs: InputDigests,
  keys: Map<string, KeyResult>,
  target: Target,
  sources: SourceResolution,
): KeyResult {
  inputs.target = target;
  if (target !== "vm") delete inputs[VM_DISK_INPUT];
  const missing: string[] = [];
  for (const [field, names] of [
    ["preload", ami.preload],
    ["services", ami.services],
  ] as const) {
    inputs[field] = names
      .map((n) => {
        const k = keys.get(n)?.key;
        if (!k) missing.push(n);
        return `${n}:${k ?? "?"}`;
      })
      .join(",");
  }
  if (missing.length) return { key: undefined, inputs, unknownBecause: `images without a key: ${missing.join(", ")}` };
  if (target === "aws") {
    const source = sources.sourceAmi.get(ami.name);
    if (!source)
      return { key: undefined, inputs, unknownBecause: sources.unresolved.get(ami.name) ?? "source AMI not resolved" };
    inputs.source = source;
  } else if (target === "local") {
    // The local host starts from its own image (local.image); without one, bake ami refuses the target.
    // (The VM host starts from its disk (vm:), an own input; without one, bake ami refuses the target.)
    const host = ami.local?.image;
    if (host) {
      const hostKey = keys.get(host)?.key;
      if (!hostKey) return { key: undefined, inputs, unknownBecause: `the local host image ${host} has no key` };
      inputs.source = `${host}:${hostKey}`;
    }
  }
  return { key: keyOf(inputs), inputs };
}

/** The base image at the bottom of an image's parent chain. */
export function baseOf(graph: Graph, image: string | undefined): string | undefined {
  let name = image;
  while (name) {
    const node = graph.byName.get(name);
    if (!node || node.kind !== "image") return undefined;
    if (!node.image.parent) return name;
    name = node.image.parent;
  }
  return undefined;
}

/** The key of an image whose context digest was taken while it was sent. */
export function withContextDigest(pending: InputDigests, context: string): { key: string; inputs: InputDigests } {
  const inputs = { ...pending, context };
  return { key: keyOf(inputs), inputs };
}
