/**
 * One node's image, its key known or settled here: the image that has the key (tagged, or found
 * by its label), the registry's image of the key, or a build — through BuildKit with a session,
 * else the classic builder — then its goss test before it counts. One build per key on this
 * machine at a time (the key's lock). What is settled here is what the read step left open on
 * purpose: a key whose large files are hashed while they are sent, and an image that has a key
 * under another tag (reused, as a registry's image is).
 */
import type { Readable } from "node:stream";
import { readFileSync, readlinkSync } from "node:fs";
import path from "node:path";
import type { ImageNode } from "../config/model.js";
import { KEY_TAG_LENGTH, imageRepository } from "../config/model.js";
import type { Pipeline } from "../state/read.js";
import { BakeError, BuildFailedError } from "../errors.js";
import type { PlanEntry } from "../plan/plan.js";
import { LABEL, type BakeImageRecord, type DockerTool } from "../tools/docker.js";
import type { GitInfo } from "../tools/git.js";
import { contextTar, dockerfileOnlyTar } from "./context-tar.js";
import { refuseClassic } from "./secrets.js";
import { redact } from "../tools/exec.js";
import { completeDigests, contextDigest, type ContextListing } from "../graph/context-files.js";
import { pinParent, SessionRefusedError, type ServedEntry } from "../tools/buildkit.js";
import { parentTagRepository } from "../state/parent-tags.js";
import { withContextDigest } from "../graph/keys.js";
import { baseParentId, type StepReport } from "./rootfs.js";
import { acquireLock, machineLock } from "../files/process-lock.js";
import { testImage } from "../goss/image-test.js";
import { gossBinary, requireGoss } from "../tools/goss.js";
import type { InputDigests } from "../graph/keys.js";

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
}

export function knownTags(pipeline: Pipeline): Map<string, Set<string>> {
  const images = pipeline.state.images.ok ? pipeline.state.images.value : [];
  return new Map(images.map((i) => [i.id, new Set(i.tags)]));
}

/** Moving tags move last: after every node built (and pushed). */
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

/**
 * One build per key on this machine: the build takes the key's lock before it looks for an image
 * with the key, so a second bake of the same key waits, then finds the first one's image.
 */
export async function buildOne(b: NodeBuild): Promise<ImageResult> {
  const { node, pipeline, docker, options, report } = b;
  const repo = imageRepository(pipeline.config, node.name);
  let release: (() => Promise<void>) | undefined;
  const holdKey = async (key: string) => {
    release ??= await acquireLock(machineLock(`image-${repo}-${key}`), {
      signal: options.signal,
      onWait: (holder) => report.step(`waiting for ${repo}:${key.slice(0, KEY_TAG_LENGTH)}: ${holder} is building it`),
    });
  };
  try {
    const result = await buildKeyed(b, holdKey);
    // An image with a test: is good once its test passed, and its key tag says so. A new build,
    // or an image found only by its label (its test failed before), is tested before it counts.
    if (node.test && result.action !== "pulled" && !knownTags(pipeline).get(result.id)?.has(result.tags[0]))
      await passTest(node, result, pipeline, docker, options, report);
    return result;
  } finally {
    await release?.();
  }
}

/** An image's goss test; a failure leaves the image as `<repo>:failed-<key12>` and no key tag. */
async function passTest(
  node: ImageNode,
  result: ImageResult,
  pipeline: Pipeline,
  docker: DockerTool,
  options: NodeBuildOptions,
  report: StepReport,
): Promise<void> {
  const spec = path.relative(pipeline.config.dir, node.test!.spec);
  report.step(`testing ${result.repo}:${result.key.slice(0, KEY_TAG_LENGTH)} with ${spec}`);
  const tested = await testImage(node, result.id, pipeline.config.project, docker, gossBinary(requireGoss()), {
    signal: options.signal,
  });
  for (const line of tested.output.split("\n")) report.line(line);
  if (tested.ok) return;
  const failedTag = `failed-${result.key.slice(0, KEY_TAG_LENGTH)}`;
  await docker.tag(result.id, result.repo, failedTag);
  await docker.removeImage(result.tags[0]);
  const counts = tested.summary ? `${tested.summary.failed} of ${tested.summary.count} checks failed` : "goss failed";
  throw new BuildFailedError(
    node.name,
    `${node.name}: test ${spec}: ${counts}`,
    `${tested.failures.join("\n")}\nthe image is kept as ${result.repo}:${failedTag}; a rerun tests it again`,
  );
}

/** Whether the node has a test: (its images count only once it passed). */
export function testedImage(pipeline: Pipeline, name: string): boolean {
  return Boolean(pipeline.config.images.find((i) => i.name === name)?.test);
}

async function buildKeyed(b: NodeBuild, holdKey: (key: string) => Promise<void>): Promise<ImageResult> {
  const { node, entry, pipeline, docker, git, now, options, report, findExisting, secrets } = b;
  const started = Date.now();
  const keyResult = pipeline.keys.get(node.name)!;
  // A key is pending when the context's large files are hashed while they are sent (read.ts).
  let key = entry.key ?? undefined;
  let inputs = keyResult.inputs;
  const repo = imageRepository(pipeline.config, node.name);
  const keyTag = () => key!.slice(0, KEY_TAG_LENGTH);
  const result = (action: NodeAction, id: string): ImageResult => ({
    name: node.name,
    key: key!,
    id,
    repo,
    action,
    tags: [`${repo}:${keyTag()}`],
    seconds: (Date.now() - started) / 1000,
  });

  if (entry.status === "cached" && entry.existing && !options.noCache) {
    await docker.tag(entry.existing, repo, keyTag());
    return result("cached", entry.existing);
  }
  const fromRegistry = async (): Promise<ImageResult | undefined> => {
    if (!pipeline.config.registry || options.noCache) return undefined;
    report.step(`looking for ${repo}:${keyTag()} in the registry`);
    if (await docker.pull(`${repo}:${keyTag()}`, options.signal, report.line)) {
      const pulled = await docker.inspectImage(`${repo}:${keyTag()}`);
      if (pulled && pulled.labels[LABEL.key] === key) return result("pulled", pulled.id);
      report.line(`${repo}:${keyTag()} in the registry carries another key; building`);
    }
    return undefined;
  };
  if (key) {
    await holdKey(key);
    const pulled = await fromRegistry();
    if (pulled) return pulled;
  }

  const parentId = node.parent
    ? (
        await docker.inspectImage(
          `${imageRepository(pipeline.config, node.parent)}:${pipeline.keys.get(node.parent)!.key!.slice(0, KEY_TAG_LENGTH)}`,
        )
      )?.id
    : await baseParentId(node, inputs.rootfs, inputs.from, docker, report, options.signal);
  if (!parentId) throw new BakeError(`${node.name}: the parent image ${node.parent} is missing`);

  // `labelled` settles the key (hashing large files on a worker thread when the read step left
  // them) and looks for an image that already has it under another tag (the engine's label
  // listing is slow, ~0.1 s with 1,000 images, so it is not asked before building); such an
  // image is reused. BuildKit builds wait for it (labels are part of the request). For the
  // classic builder the labelled Dockerfile is the context tar's last entry, so the files stream
  // meanwhile and the upload is dropped when an image is reused.
  report.step("building");
  const listing = node.dockerfile ? pipeline.listings.get(node.name)! : undefined;
  const pendingKey = !key;
  let reused: ImageResult | undefined;
  let tar: { stream: Readable; dockerfilePath: string; labelsInRequest?: boolean } | undefined;
  const labelled = (async () => {
    if (!key) {
      await completeDigests(listing!);
      ({ key, inputs } = withContextDigest(keyResult.inputs, contextDigest(listing!.entries)));
    }
    await holdKey(key);
    const existing = options.noCache ? undefined : await findExisting(node.name, repo, key);
    if (existing) {
      if (!existing.tags.includes(`${repo}:${keyTag()}`)) await docker.tag(existing.id, repo, keyTag());
      reused = result("cached", existing.id);
    } else if (pendingKey) reused = await fromRegistry();
    if (reused) {
      const dropped = new BakeError(`${node.name}: an image with key ${keyTag()} exists; not building`);
      tar?.stream.destroy(dropped);
      throw dropped;
    }
    if (pendingKey) report.step(`building ${repo}:${keyTag()}`);
    return imageLabels(node, key, inputs, pipeline, await git, now);
  })();
  labelled.catch(() => undefined);
  const viaBuildKit = await buildKitRequest(node, parentId, docker);
  // A step that prints a secret (it should not) shows *** in the output and the log.
  const secretValues = [...(secrets?.values() ?? [])].map((b) => b.toString("utf8"));
  const line = secretValues.length ? (l: string) => report.line(redact(l, secretValues)) : report.line;
  if (!viaBuildKit) refuseClassic(node, "this engine or Dockerfile builds with the classic builder");
  if (viaBuildKit) {
    let labels: Record<string, string>;
    try {
      labels = await labelled;
    } catch (e) {
      if (reused) return reused;
      throw e;
    }
    try {
      // Served only now: every file's digest is settled, and the engine tells content apart by it.
      const id = await docker.buildWithSession({
        ...viaBuildKit,
        context: servedContext(listing),
        sharedKey: `bake:${pipeline.config.project}/${node.name}`,
        parentId,
        tags: [`${repo}:${keyTag()}`],
        buildArgs: { ...node.args, BAKE_PARENT: parentId },
        labels,
        noCache: options.noCache,
        signal: options.signal,
        onLine: line,
        secrets,
      });
      return result("built", id);
    } catch (e) {
      // A proxy before the engine may allow builds but not sessions (docker-socket-proxy does by default).
      if (!(e instanceof SessionRefusedError)) throw e;
      refuseClassic(node, `${e.message}`);
      report.line(`${e.message}: building with the classic builder`);
    }
  }
  tar = listing
    ? contextTar(listing, node.dockerfile!, () => labelled, options.signal)
    : dockerfileOnlyTar("ARG BAKE_PARENT\nFROM ${BAKE_PARENT}\n", () => labelled);
  let id: string;
  try {
    // Labels in the request (the context's .dockerignore reaches the image as it is) are known before it starts.
    const requestLabels = tar.labelsInRequest ? await labelled : {};
    id = await docker.build({
      context: tar.stream,
      dockerfile: tar.dockerfilePath,
      tags: pendingKey ? [] : [`${repo}:${keyTag()}`],
      buildArgs: { ...node.args, BAKE_PARENT: parentId },
      labels: requestLabels,
      noCache: options.noCache,
      signal: options.signal,
      onLine: report.line,
    });
  } catch (e) {
    if (reused) return reused;
    throw e;
  }
  if (pendingKey) await docker.tag(id, repo, keyTag());
  return result("built", id);
}

/**
 * What a BuildKit build of the node needs (buildkit.ts) but its files, or undefined for the
 * classic builder: an engine without BuildKit sessions, or a Dockerfile whose FROM uses
 * BAKE_PARENT in a way that cannot be pinned to a tag named after the parent's id.
 */
async function buildKitRequest(node: ImageNode, parentId: string, docker: DockerTool) {
  // bake-parent/<host>/<pid>: prune removes only what this machine can prove dead (an engine may
  // be shared by several CI containers, each with pids of its own).
  if (!(await docker.canBuildKit())) return undefined;
  const parentTag = `${parentTagRepository()}:${parentId.replace(/^sha256:/, "")}`;
  const dockerfileText = pinParent(
    node.dockerfile ? readFileSync(node.dockerfile, "utf8") : "ARG BAKE_PARENT\nFROM ${BAKE_PARENT}\n",
    parentTag,
  );
  if (dockerfileText === undefined) return undefined;
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
