/**
 * One node's image once its key is held: the image with the key (tagged, or found by its label),
 * the registry's image of the key, or a build — through BuildKit with a session, else the classic
 * builder. A key left pending by the read step (large files hashed while they are sent) settles
 * here, beside the upload, and an image found with it then is reused and the upload dropped.
 */
import type { Readable } from "node:stream";
import { readFileSync, readlinkSync } from "node:fs";
import path from "node:path";
import type { ImageNode } from "../config/model.js";
import { KEY_TAG_LENGTH, imageRepository } from "../config/model.js";
import { BakeError } from "../errors.js";
import { LABEL, engineTransport, type DockerTool } from "../tools/docker.js";
import { contextTar, dockerfileOnlyTar } from "./context-tar.js";
import { refuseClassic } from "./secrets.js";
import { redact } from "../tools/exec.js";
import { completeDigests, contextDigest, type ContextListing } from "../graph/context-files.js";
import { pinParent, SessionRefusedError } from "../tools/buildkit.js";
import type { ServedEntry } from "../tools/buildkit-files.js";
import { parentTagRepository } from "../state/parent-tags.js";
import { withContextDigest, type InputDigests } from "../graph/keys.js";
import { baseParentId } from "./rootfs.js";
import { imageLabels, type ImageResult, type NodeAction, type NodeBuild } from "./node-build.js";

/** One keyed build as it goes: the key may settle only while the context streams. */
interface Keyed {
  b: NodeBuild;
  repo: string;
  started: number;
  key: string | undefined;
  inputs: InputDigests;
  /** The key settles only once the context's large files are hashed (it was pending in the read step). */
  pendingKey: boolean;
  holdKey: (key: string) => Promise<void>;
  /** An image found with the key once it settled: the build in flight is dropped for it. */
  reused?: ImageResult;
  tar?: { stream: Readable; dockerfilePath: string; labelsInRequest?: boolean };
}

const keyTag = (k: Keyed) => k.key!.slice(0, KEY_TAG_LENGTH);

function resultOf(k: Keyed, action: NodeAction, id: string): ImageResult {
  return {
    name: k.b.node.name,
    key: k.key!,
    id,
    repo: k.repo,
    action,
    tags: [`${k.repo}:${keyTag(k)}`],
    seconds: (Date.now() - k.started) / 1000,
  };
}

export async function buildKeyed(b: NodeBuild, holdKey: (key: string) => Promise<void>): Promise<ImageResult> {
  const { node, entry, pipeline, docker, options, report } = b;
  const k: Keyed = {
    b,
    repo: imageRepository(pipeline.config, node.name),
    started: Date.now(),
    // A key is pending when the context's large files are hashed while they are sent (read.ts).
    key: entry.key ?? undefined,
    inputs: pipeline.keys.get(node.name)!.inputs,
    pendingKey: !entry.key,
    holdKey,
  };
  if (entry.status === "cached" && entry.existing && !options.noCache) {
    await docker.tag(entry.existing, k.repo, keyTag(k));
    return resultOf(k, "cached", entry.existing);
  }
  if (k.key) {
    await holdKey(k.key);
    const pulled = await pullByKey(k);
    if (pulled) return pulled;
  }
  const parentId = await parentImageId(b);
  report.step("building");
  const labelled = settleLabels(k);
  labelled.catch(() => undefined);
  const viaBuildKit = await buildKitRequest(node, parentId, docker);
  if (typeof viaBuildKit === "string") {
    refuseClassic(node, viaBuildKit);
    report.line(`building with the classic builder: ${viaBuildKit}`);
  } else {
    const built = await buildWithSession(k, viaBuildKit, parentId, labelled);
    if (built) return built;
  }
  return buildClassic(k, parentId, labelled);
}

/** The registry's image of the key, when a registry is set and has one that carries the key. */
async function pullByKey(k: Keyed): Promise<ImageResult | undefined> {
  const { pipeline, docker, options, report } = k.b;
  if (!pipeline.config.registry || options.noCache) return undefined;
  const ref = `${k.repo}:${keyTag(k)}`;
  report.step(`looking for ${ref} in the registry`);
  if (await docker.pull(ref, options.signal, report.line)) {
    const pulled = await docker.inspectImage(ref);
    if (pulled && pulled.labels[LABEL.key] === k.key) return resultOf(k, "pulled", pulled.id);
    report.line(`${ref} in the registry carries another key; building`);
  }
  return undefined;
}

/** The parent's image: the parent node's by its key tag, or the base's rootfs or upstream image. */
async function parentImageId(b: NodeBuild): Promise<string> {
  const { node, pipeline, docker, report, options } = b;
  const inputs = pipeline.keys.get(node.name)!.inputs;
  const parentId = node.parent
    ? (
        await docker.inspectImage(
          `${imageRepository(pipeline.config, node.parent)}:${pipeline.keys.get(node.parent)!.key!.slice(0, KEY_TAG_LENGTH)}`,
        )
      )?.id
    : await baseParentId(node, inputs.rootfs, inputs.from, docker, report, options.signal);
  if (!parentId) throw new BakeError(`${node.name}: the parent image ${node.parent} is missing`);
  return parentId;
}

/**
 * Settles the key (hashing large files on a worker thread when the read step left them) and
 * looks for an image that already has it under another tag (the engine's label listing is slow,
 * ~0.1 s with 1,000 images, so it is not asked before building); such an image is reused and
 * this rejects. BuildKit builds wait for the labels (they are part of the request). For the
 * classic builder the labelled Dockerfile is the context tar's last entry, so the files stream
 * meanwhile and the upload is dropped when an image is reused.
 */
async function settleLabels(k: Keyed): Promise<Record<string, string>> {
  const { node, pipeline, docker, options, report, findExisting, git, now } = k.b;
  const { pendingKey } = k;
  if (pendingKey) {
    const listing = pipeline.listings.get(node.name)!;
    await completeDigests(listing);
    ({ key: k.key, inputs: k.inputs } = withContextDigest(k.inputs, contextDigest(listing.entries)));
  }
  await k.holdKey(k.key!);
  const existing = options.noCache ? undefined : await findExisting(node.name, k.repo, k.key!);
  if (existing) {
    if (!existing.tags.includes(`${k.repo}:${keyTag(k)}`)) await docker.tag(existing.id, k.repo, keyTag(k));
    k.reused = resultOf(k, "cached", existing.id);
  } else if (pendingKey) k.reused = await pullByKey(k);
  if (k.reused) {
    const dropped = new BakeError(`${node.name}: an image with key ${keyTag(k)} exists; not building`);
    k.tar?.stream.destroy(dropped);
    throw dropped;
  }
  if (pendingKey) report.step(`building ${k.repo}:${keyTag(k)}`);
  return imageLabels(node, k.key!, k.inputs, pipeline, await git, now);
}

/** A BuildKit build with a session; undefined when the engine refuses sessions (build classic then). */
async function buildWithSession(
  k: Keyed,
  request: { dockerfileText: string; parentTag: string },
  parentId: string,
  labelled: Promise<Record<string, string>>,
): Promise<ImageResult | undefined> {
  const { node, pipeline, docker, options, report, secrets } = k.b;
  let labels: Record<string, string>;
  try {
    labels = await labelled;
  } catch (e) {
    if (k.reused) return k.reused;
    throw e;
  }
  // A step that prints a secret (it should not) shows *** in the output and the log.
  const secretValues = [...(secrets?.values() ?? [])].map((s) => s.toString("utf8"));
  try {
    report.line(`building through BuildKit with a session (${docker.endpoint}, ${engineTransport()})`);
    // Served only now: every file's digest is settled, and the engine tells content apart by it.
    const id = await docker.buildWithSession({
      ...request,
      context: servedContext(node.dockerfile ? pipeline.listings.get(node.name) : undefined),
      sharedKey: `bake:${pipeline.config.project}/${node.name}`,
      parentId,
      tags: [`${k.repo}:${keyTag(k)}`],
      buildArgs: { ...node.args, BAKE_PARENT: parentId },
      labels,
      noCache: options.noCache,
      signal: options.signal,
      onLine: secretValues.length ? (l: string) => report.line(redact(l, secretValues)) : report.line,
      secrets,
      registryCache: await registryCache(k),
    });
    return resultOf(k, "built", id);
  } catch (e) {
    // A proxy before the engine may allow builds but not sessions (docker-socket-proxy does by default).
    if (!(e instanceof SessionRefusedError)) throw e;
    refuseClassic(node, `${e.message}`);
    report.line(`${e.message}: building with the classic builder`);
    return undefined;
  }
}

/**
 * With a registry, the node's images there seed the build's cache: its previous image under each
 * tag a run moves (latest, and --tag's), whose inline cache BuildKit reads; none with --no-cache.
 * Only references the registry has (the engine fails a build whose cache source is missing); the
 * image carries its inline cache even when the registry has none yet.
 */
async function registryCache(k: Keyed): Promise<{ from: string[] } | undefined> {
  const { pipeline, options, docker, report } = k.b;
  if (!pipeline.config.registry || options.noCache) return undefined;
  const refs = ["latest", ...(options.tags ?? [])].map((t) => `${k.repo}:${t}`);
  const digests = await Promise.all(refs.map((r) => docker.distributionDigest(r)));
  const from = refs.filter((_, i) => digests[i]);
  if (from.length) report.line(`cache from the registry: ${from.join(", ")}`);
  return { from };
}

/** The classic builder: the context as a tar whose last entry (the labelled Dockerfile) waits for the key. */
async function buildClassic(
  k: Keyed,
  parentId: string,
  labelled: Promise<Record<string, string>>,
): Promise<ImageResult> {
  const { node, pipeline, docker, options, report } = k.b;
  const listing = node.dockerfile ? pipeline.listings.get(node.name)! : undefined;
  const { pendingKey } = k;
  const tar: NonNullable<Keyed["tar"]> = (k.tar = listing
    ? contextTar(listing, node.dockerfile!, () => labelled, options.signal)
    : dockerfileOnlyTar("ARG BAKE_PARENT\nFROM ${BAKE_PARENT}\n", () => labelled));
  let id: string;
  try {
    // Labels in the request (the context's .dockerignore reaches the image as it is) are known before it starts.
    const requestLabels = tar.labelsInRequest ? await labelled : {};
    id = await docker.build({
      context: tar.stream,
      dockerfile: tar.dockerfilePath,
      tags: pendingKey ? [] : [`${k.repo}:${keyTag(k)}`],
      buildArgs: { ...node.args, BAKE_PARENT: parentId },
      labels: requestLabels,
      noCache: options.noCache,
      signal: options.signal,
      onLine: report.line,
    });
  } catch (e) {
    if (k.reused) return k.reused;
    throw e;
  }
  if (pendingKey) await docker.tag(id, k.repo, keyTag(k));
  return resultOf(k, "built", id);
}

/**
 * What a BuildKit build of the node needs (buildkit.ts) but its files, or why it takes the
 * classic builder: an engine without BuildKit sessions, or a Dockerfile whose FROM uses
 * BAKE_PARENT in a way that cannot be pinned to a tag named after the parent's id.
 */
async function buildKitRequest(node: ImageNode, parentId: string, docker: DockerTool) {
  // bake-parent/<host>/<pid>: prune removes only what this machine can prove dead (an engine may
  // be shared by several CI containers, each with pids of its own).
  const refusal = await docker.buildKitRefusal();
  if (refusal) return refusal;
  const parentTag = `${parentTagRepository()}:${parentId.replace(/^sha256:/, "")}`;
  const dockerfileText = pinParent(
    node.dockerfile ? readFileSync(node.dockerfile, "utf8") : "ARG BAKE_PARENT\nFROM ${BAKE_PARENT}\n",
    parentTag,
  );
  if (dockerfileText === undefined)
    return "a FROM of its Dockerfile names BAKE_PARENT in a way other than FROM ${BAKE_PARENT}";
  return { dockerfileText, parentTag };
}

/** The context's entries as the session serves them, once the listing's digests are complete. */
function servedContext(listing: ContextListing | undefined): ServedEntry[] {
  return (listing?.entries ?? []).map((e) => {
    const abs = path.join(listing!.root, e.path);
    return {
      ...e,
      linkname: e.type === "symlink" ? readlinkSync(abs) : undefined,
      source: e.type === "file" ? { file: abs } : undefined,
    };
  });
}
