/** The read step shared by commands: config → graph → input digests → state of the world → keys. */
import path from "node:path";
import { withDefaultLocalHost } from "../config/local-host.js";
import { loadConfig } from "../config/load.js";
import { stagesOn } from "../graph/stages.js";
import { findVmDisk } from "./vm-record.js";
import { KEY_TAG_LENGTH, imageRepository, localAmiRepository, type BakeConfig } from "../config/model.js";
import { EngineUnreachableError, UsageError } from "../errors.js";
import { readManifest } from "../state/manifest.js";
import { buildGraph, selectWithDependencies, type Graph, type GraphNode } from "../graph/graph.js";
import { readInputs } from "../graph/inputs.js";
import type { ContextListing } from "../graph/context-files.js";
import { computeKeys, type InputDigests, type KeyResult, type SourceResolution, type Target } from "../graph/keys.js";
import type { Known, WorldState } from "../plan/plan.js";
import { describeDockerError, repositoryOf, type BakeImageRecord, type DockerTool } from "../tools/docker.js";
import { NoCredentialsError, type AmiRecord, type Ec2Tool } from "../tools/ec2.js";

export interface Tools {
  docker: () => DockerTool;
  ec2: () => Ec2Tool;
}

export interface Pipeline {
  config: BakeConfig;
  graph: Graph;
  /** The selected nodes and their dependencies, in build order. */
  nodes: GraphNode[];
  inputs: Map<string, InputDigests>;
  listings: Map<string, ContextListing>;
  keys: Map<string, KeyResult>;
  state: WorldState;
  target: Target;
}

export interface ReadOptions {
  file: string;
  target: Target;
  nodes?: string[];
  /** Ask the registry for the current digest of every `from:` image, even one present locally. */
  pull?: boolean;
  /** Only container images (build, up): AMIs are left out and their inputs are not read. */
  imagesOnly?: boolean;
  /** Every image of the project, not only those the selected nodes' keys name (prune). */
  everyImage?: boolean;
  /**
   * For `bake build`, which settles two things while it sends each context (images/execute.ts):
   * an image nothing else in the run builds on hashes its large changed files then, in one pass
   * instead of two (its key is known at the end); and an image whose key tag is missing is
   * looked for by label then, not by listing the engine's images here first.
   */
  forBuild?: boolean;
  /**
   * Whether AMIs without `local:` get bake's default local host (config/local-host.ts) on the
   * local target: only where an AMI is baked, booted or keyed there — never for images alone
   * (build, up: imagesOnly) nor the nightly's image phases, which would build it for nothing.
   */
  defaultLocalHost?: boolean;
}

/** Each node's key (undefined where it cannot be known), by name. */
export function knownKeys(pipeline: Pick<Pipeline, "keys">): Map<string, string | undefined> {
  return new Map([...pipeline.keys].map(([n, k]) => [n, k.key]));
}

/** The image (or local machine image) with the node's current key: tagged, or found by its label. */
export function currentImage(pipeline: Pipeline, name: string): { id: string; ref: string } | undefined {
  const key = pipeline.keys.get(name)?.key;
  const record =
    pipeline.state.images.ok && key
      ? pipeline.state.images.value.find((r) => r.node === name && r.key === key)
      : undefined;
  return (
    record && {
      id: record.id,
      ref:
        record.tags.find((t) => t.endsWith(`:${key!.slice(0, KEY_TAG_LENGTH)}`)) ??
        record.tags[0] ??
        record.id.slice(0, 19),
    }
  );
}

export async function readPipeline(options: ReadOptions, tools: Tools): Promise<Pipeline> {
  const loaded = await loadConfig(options.file);
  const config =
    !options.imagesOnly && options.defaultLocalHost !== false ? withDefaultLocalHost(loaded, options.target) : loaded;
  // Read first on every run: a corrupt manifest stops a command before anything is built.
  const manifest = readManifest(config.dir);
  const graph = buildGraph(config, options.target);
  const selection = selectWithDependencies(graph, options.nodes ?? []);
  const { unknown } = selection;
  const nodes = options.imagesOnly ? selection.nodes.filter((n) => n.kind === "image") : selection.nodes;
  if (unknown.length)
    throw new UsageError(
      `unknown node${unknown.length > 1 ? "s" : ""} ${unknown.join(", ")}: ${config.file} defines ${graph.order.map((n) => n.name).join(", ")}`,
    );

  const wantsAws = options.target === "aws" && nodes.some((n) => n.kind === "ami");
  const [{ digests: inputs, listings, deferred }, engine, sources] = await Promise.all([
    readInputs(config, new Set(nodes.map((n) => n.name)), options.forBuild ? leaves(nodes) : undefined),
    engineReachable(tools),
    wantsAws
      ? resolveSources(tools, nodes)
      : Promise.resolve<SourceResolution>({ sourceAmi: new Map(), unresolved: new Map() }),
  ]);
  const unreadable = await resolveUpstreams(tools, config, inputs, engine.ok, options.pull ?? false);
  const keys = computeKeys(graph, inputs, options.target, sources, unreadable, nodes, deferred);
  const { images, listed } = engine.ok
    ? await readImages(
        tools,
        config,
        nodes,
        keys,
        options.target,
        options.everyImage ? "always" : options.forBuild ? "never" : "when-missing",
      )
    : { images: engine, listed: false };
  const amis = wantsAws ? await findAmis(tools, nodes, keys) : new Map();
  const lastBaked = wantsAws || options.target === "vm" ? new Map(Object.entries(manifest.amis)) : undefined;
  const vmDisks = options.target === "vm" ? findVmDisks(config.dir, nodes, keys) : undefined;
  return {
    config,
    graph,
    nodes,
    inputs,
    listings,
    keys,
    state: { images, imagesListed: listed, amis, lastBaked, ...(vmDisks ? { vmDisks } : {}) },
    target: options.target,
  };
}

/** The vm target's disks: the folder under .bake/vm/ whose vm.json holds each AMI's key (and each host stage's). */
function findVmDisks(dir: string, nodes: GraphNode[], keys: Map<string, KeyResult>): Map<string, string | undefined> {
  const found = new Map<string, string | undefined>();
  for (const n of nodes) {
    const key = keys.get(n.name)?.key;
    if (n.kind !== "ami" || !key) continue;
    const disk = findVmDisk(dir, n.name, key);
    found.set(n.name, disk ? path.relative(dir, path.join(disk.dir, disk.disk)) : undefined);
    // A staged AMI's host stage, under its own node name (`<ami>@host`).
    const host = stagesOn(n.ami, "vm", keys.get(n.name))?.[0];
    const below = host && findVmDisk(dir, host.node, host.key);
    if (host) found.set(host.node, below ? path.relative(dir, path.join(below.dir, below.disk)) : undefined);
  }
  return found;
}

/**
 * Pins every `from:` image to a digest (inputs.from becomes `ref@sha256:…`): the local image's
 * digest, or the registry's when it is not local or `pull` is set.
 */
async function resolveUpstreams(
  tools: Tools,
  config: BakeConfig,
  inputs: Map<string, InputDigests>,
  engineUp: boolean,
  pull: boolean,
): Promise<Map<string, string>> {
  const unreadable = new Map<string, string>();
  const fromNodes = config.images.filter((i) => i.from && inputs.has(i.name));
  if (!fromNodes.length) return unreadable;
  if (!engineUp) {
    for (const n of fromNodes) unreadable.set(n.name, `digest of ${n.from} unknown: the docker engine is unreachable`);
    return unreadable;
  }
  const docker = tools.docker();
  await Promise.all(
    fromNodes.map(async (n) => {
      const ref = n.from!;
      try {
        let digest: string | undefined;
        if (!pull) {
          const local = await docker.inspectImage(ref);
          digest = local?.repoDigests.find((d) => d.startsWith(`${repositoryOf(ref)}@`))?.split("@")[1];
        }
        digest ??= await docker.distributionDigest(ref);
        if (digest) inputs.get(n.name)!.from = `${ref}@${digest}`;
        else unreadable.set(n.name, `upstream image ${ref} not found locally or in its registry`);
      } catch (e) {
        unreadable.set(n.name, `digest of ${ref} unknown: ${(e as Error).message}`);
      }
    }),
  );
  return unreadable;
}

/** Selected images that no other selected node builds on. */
function leaves(nodes: GraphNode[]): Set<string> {
  const parents = new Set(nodes.flatMap((n) => n.deps));
  return new Set(nodes.filter((n) => n.kind === "image" && !parents.has(n.name)).map((n) => n.name));
}

/** Stops a command that needs the engine when it could not be reached: one line, exit 1. */
export function requireEngine(pipeline: Pick<Pipeline, "state">): void {
  const images = pipeline.state.images;
  if (images.ok) return;
  const hint = /unreachable/.test(images.reason)
    ? ": start it with make services, or point DOCKER_HOST at an engine"
    : "";
  throw new EngineUnreachableError(`${images.reason}${hint}`);
}

async function engineReachable(tools: Tools): Promise<Known<true>> {
  let docker: DockerTool | undefined;
  try {
    docker = tools.docker();
    await docker.reachable();
    return { ok: true, value: true };
  } catch (e) {
    // A TLS setting naming files that are not there is bad configuration, not an absent engine.
    if (e instanceof UsageError) throw e;
    return { ok: false, reason: describeDockerError(e, docker?.endpoint ?? "DOCKER_HOST") };
  }
}

/**
 * The images the keys name, each looked up by its key tag (`<repo>:<key12>`): the engine answers
 * an inspect in about a millisecond, while listing images by label takes time that grows with
 * every image on the engine (~45 ms with 500, ~90 ms with 1,000). The project's images are
 * listed by label for prune ("always") and, when a tag is missing, for the plan's reasons
 * ("when-missing"); `bake build` ("never") looks for an image with the key under another tag
 * while it sends the context (images/execute.ts).
 */
async function readImages(
  tools: Tools,
  config: BakeConfig,
  nodes: GraphNode[],
  keys: Map<string, KeyResult>,
  target: Target,
  list: "always" | "when-missing" | "never",
): Promise<{ images: Known<BakeImageRecord[]>; listed: boolean }> {
  const docker = tools.docker();
  try {
    // Images, and on the local target the machine images, which are engine images too.
    const wanted = nodes.flatMap((n) => {
      const key = keys.get(n.name)?.key;
      if (!key || (n.kind === "ami" && target !== "local")) return [];
      return [
        {
          node: n.name,
          key,
          ref: `${n.kind === "image" ? imageRepository(config, n.name) : localAmiRepository(config, n.name)}:${key.slice(0, KEY_TAG_LENGTH)}`,
        },
      ];
    });
    if (list !== "always") {
      const found = wanted.length ? await docker.findBakeImages(wanted.map((w) => w.ref)) : [];
      const hits = found.filter((r, i): r is BakeImageRecord => r?.key === wanted[i].key && r.node === wanted[i].node);
      if (hits.length === wanted.length || list === "never")
        return { images: { ok: true, value: hits }, listed: false };
    }
    return { images: { ok: true, value: await docker.listBakeImages(config.project) }, listed: true };
  } catch (e) {
    if (e instanceof UsageError) throw e;
    return { images: { ok: false, reason: describeDockerError(e, docker.endpoint) }, listed: false };
  }
}

const NO_CREDENTIALS =
  "no AWS credentials (set AWS_PROFILE or AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, or use --target local)";

async function resolveSources(tools: Tools, nodes: GraphNode[]): Promise<SourceResolution> {
  const result: SourceResolution = { sourceAmi: new Map(), unresolved: new Map() };
  const ec2 = tools.ec2();
  try {
    await ec2.checkCredentials();
  } catch (e) {
    for (const n of nodes)
      if (n.kind === "ami")
        result.unresolved.set(n.name, e instanceof NoCredentialsError ? NO_CREDENTIALS : awsReason(e));
    return result;
  }
  await Promise.all(
    nodes.map(async (n) => {
      if (n.kind !== "ami") return;
      const { region, source } = n.ami;
      try {
        const found = await ec2.findSourceAmi(region, source.owners, source.name);
        if (found) result.sourceAmi.set(n.name, found.imageId);
        else
          result.unresolved.set(
            n.name,
            `no source AMI in ${region} matches name ${source.name} from owners ${source.owners.join(", ")}`,
          );
      } catch (e) {
        result.unresolved.set(n.name, awsReason(e));
      }
    }),
  );
  return result;
}

async function findAmis(
  tools: Tools,
  nodes: GraphNode[],
  keys: Map<string, KeyResult>,
): Promise<Map<string, Known<AmiRecord | undefined>>> {
  const out = new Map<string, Known<AmiRecord | undefined>>();
  const ec2 = tools.ec2();
  await Promise.all(
    nodes.map(async (n) => {
      const key = keys.get(n.name)?.key;
      if (n.kind !== "ami" || !key) return;
      // A staged AMI's host stage too, under its own node name (`<ami>@host`).
      const host = stagesOn(n.ami, "aws", keys.get(n.name))?.[0];
      for (const [name, k] of [[n.name, key], ...(host ? [[host.node, host.key]] : [])])
        try {
          out.set(name, { ok: true, value: await ec2.findAmiByKey(n.ami.region, k) });
        } catch (e) {
          out.set(name, { ok: false, reason: awsReason(e) });
        }
    }),
  );
  return out;
}

function awsReason(e: unknown): string {
  const err = e as { name?: string; message?: string; code?: string };
  if (err?.code === "ECONNREFUSED") return `AWS endpoint unreachable (${err.message})`;
  return `AWS: ${err?.name && err.name !== "Error" ? `${err.name}: ` : ""}${err?.message ?? String(e)}`;
}
