/**
 * Walks the plan's image nodes with listr2: each node waits for its parent, then takes one of
 * `concurrency` slots to reuse (cached), pull (from the registry, by key) or build it. Nothing
 * here decides what to build: the plan did. What the executor still settles is what the read
 * step left open on purpose — a key whose large files are hashed while they are sent, and an
 * image that has a key under another tag — and then it reuses, as it does a registry's image.
 * Moving tags move only after every node succeeded.
 */
import pLimit from "p-limit";
import type { Readable } from "node:stream";
import type { ImageNode } from "../config/model.js";
import { KEY_TAG_LENGTH, imageRepository } from "../config/model.js";
import type { Pipeline } from "../state/read.js";
import { BakeError, BuildFailedError, InterruptedError, interruption } from "../errors.js";
import type { PlanEntry } from "../plan/plan.js";
import { BuildStreamError, LABEL, type BakeImageRecord, type DockerTool } from "../tools/docker.js";
import type { GitInfo } from "../tools/git.js";
import { contextTar, dockerfileOnlyTar } from "./context-tar.js";
import { readBuildSecrets, refuseClassic } from "./secrets.js";
import { redact } from "../tools/exec.js";
import { completeDigests, contextDigest, type ContextListing } from "../graph/context-files.js";
import { pinParent, SessionRefusedError, type ServedEntry } from "../tools/buildkit.js";
import { parentTagRepository } from "../state/parent-tags.js";
import { readFileSync, readlinkSync } from "node:fs";
import path from "node:path";
import { withContextDigest, type InputDigests } from "../graph/keys.js";
import type { RunLogs } from "../state/logs.js";
import { baseParentId, type StepReport } from "./rootfs.js";
import { acquireLock, machineLock } from "../files/process-lock.js";
import { testImage } from "../goss/image-test.js";
import { gossBinary, requireGoss } from "../tools/goss.js";

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

export interface BuildOptions {
  noCache: boolean;
  push: boolean;
  concurrency: number;
  /** Moving tags besides `latest`, applied after the whole run succeeded. */
  tags: string[];
  signal: AbortSignal;
  /** Renderer: listr2's default on a TTY, plain lines in CI or when stderr is not a TTY. */
  plain: boolean;
  /** Told of each image as soon as it is there (built, pulled or found), while others still build. */
  onImage?: (result: ImageResult) => void;
  /** Told what did build when some nodes failed (before the failure is thrown). */
  onPartial?: (partial: { built: ImageResult[]; failures: BuildFailedError[]; skipped: string[] }) => void;
}

export function imageLabels(node: ImageNode, key: string, inputs: InputDigests, pipeline: Pipeline, git: GitInfo, now: Date): Record<string, string> {
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

/** Nothing to build: every image exists with its key (the plan read that in one query). */
export function nothingToBuild(plan: PlanEntry[], options: Pick<BuildOptions, "noCache" | "push">): boolean {
  return !options.noCache && !options.push && plan.every((e) => e.kind !== "image" || (e.status === "cached" && e.existing));
}

export async function executeBuild(pipeline: Pipeline, plan: PlanEntry[], docker: DockerTool, git: () => Promise<GitInfo>, logs: RunLogs, options: BuildOptions): Promise<ImageResult[]> {
  const images = plan.filter((e) => e.kind === "image");
  const known = knownTags(pipeline);
  const untested = (e: PlanEntry) => Boolean(e.existing && e.key && testedImage(pipeline, e.name) && !known.get(e.existing)?.has(`${imageRepository(pipeline.config, e.name)}:${e.key.slice(0, KEY_TAG_LENGTH)}`));
  if (nothingToBuild(plan, options) && !images.some(untested)) {
    const results = images.map((e): ImageResult => {
      const repo = imageRepository(pipeline.config, e.name);
      return { name: e.name, key: e.key!, id: e.existing!, repo, action: "cached", tags: [`${repo}:${e.key!.slice(0, KEY_TAG_LENGTH)}`], seconds: 0 };
    });
    // The same content may exist under another repository (registry: changed): tag it here too.
    for (const r of results) if (!known.get(r.id)?.has(r.tags[0])) await docker.tag(r.id, r.repo, r.key.slice(0, KEY_TAG_LENGTH));
    await moveTags(results, docker, options, logs, known);
    return results;
  }
  // Build secrets are read now: a missing one stops the run before anything builds.
  const secrets = readBuildSecrets(pipeline.config, images.filter((e) => e.status === "build" || options.noCache).map((e) => e.name));
  // Needed only for the labels, which go last in each context: read while the first one streams.
  const gitInfo = git();
  gitInfo.catch(() => undefined);
  const { Listr, ListrLogger, ListrLogLevels, ProcessOutput } = await import("listr2");
  const results = new Map<string, ImageResult>();
  const finished = new Map<string, Promise<ImageResult>>();
  const settle = new Map<string, { resolve: (r: ImageResult) => void; reject: (e: unknown) => void }>();
  for (const e of images) {
    const p = new Promise<ImageResult>((resolve, reject) => settle.set(e.name, { resolve, reject }));
    p.catch(() => undefined);
    finished.set(e.name, p);
  }
  const limit = pLimit(Math.max(1, options.concurrency));
  const failures: BuildFailedError[] = [];
  // An image with its key may exist under another name (registry: changed, so the repository
  // did): found by label, in the read step's listing or in one listing asked when needed. An
  // image built before under its own name (its `latest` is there) and missing its key tag has
  // new content: the listing, which keeps the engine busy ~0.1 s with 1,000 images, is skipped.
  let listing: Promise<BakeImageRecord[]> | undefined = pipeline.state.imagesListed && pipeline.state.images.ok ? Promise.resolve(pipeline.state.images.value) : undefined;
  const findExisting: FindExisting = async (node, repo, key) => {
    const [byTag, latest] = await docker.findBakeImages([`${repo}:${key.slice(0, KEY_TAG_LENGTH)}`, `${repo}:latest`]);
    if (byTag?.key === key && byTag.node === node) return byTag;
    if (latest?.node === node && !listing) return undefined;
    listing ??= docker.listBakeImages(pipeline.config.project);
    return (await listing).find((r) => r.key === key && r.node === node);
  };
  const now = new Date();

  const tasks = images.map((entry) => ({
    title: entry.name,
    task: async (_ctx: unknown, task: any) => {
      const node = pipeline.graph.byName.get(entry.name)! as { kind: "image"; image: ImageNode };
      const done = settle.get(entry.name)!;
      try {
        for (const dep of entry.deps) {
          if (!finished.has(dep)) continue;
          task.title = `${entry.name}: waiting for ${dep}`;
          await finished.get(dep)!.catch(() => {
            throw new SkippedError(`${entry.name}: not built because ${dep} failed`);
          });
        }
        const result = await limit(() => {
          if (options.signal.aborted) throw interruption(options.signal);
          const report: StepReport = {
            step: (text) => {
              task.title = `${entry.name}: ${text}`;
              // Plain output shows no title changes: a step (waiting for another bake, building) is a line.
              if (options.plain) task.output = text;
              logs.line(entry.name, `== ${text}`);
            },
            line: (text) => {
              // Plain output shows the instructions; a terminal shows the latest line of each node.
              // In plain output only the instructions show: "Step 3/5 : RUN x" (classic), "#5 [2/3] RUN x" (BuildKit).
              if (!options.plain || /^Step \d+\/\d+ : |^#\d+ \[(?:\S+ )?\d+\/\d+\] /.test(text)) task.output = text;
              logs.line(entry.name, text);
            },
          };
          return buildOne(node.image, entry, pipeline, docker, gitInfo, now, options, report, findExisting, secrets.get(node.image.name));
        });
        results.set(entry.name, result);
        options.onImage?.(result);
        task.title = `${entry.name}: ${result.action} ${result.repo}:${result.key.slice(0, KEY_TAG_LENGTH)} (${result.seconds.toFixed(1)}s)`;
        done.resolve(result);
      } catch (error) {
        done.reject(error);
        if (error instanceof SkippedError) {
          task.skip(error.message);
          return;
        }
        if (error instanceof InterruptedError || options.signal.aborted) {
          // Stopped, not failed: the run ends with the interruption once every task has settled.
          task.skip(`${entry.name}: stopped (${interruption(options.signal).message})`);
          return;
        }
        // An engine that stops mid-build may first report the failures of its shutdown in the
        // stream: when it no longer answers, that is what the user needs to hear.
        const engineGone = await docker.reachable().then(() => false, () => true);
        const failure = explainFailure(entry.name, engineGone ? Object.assign(new Error((error as Error)?.message ?? String(error)), { code: "ECONNRESET" }) : error, logs.pathOf(entry.name), docker.endpoint);
        failures.push(failure);
        logs.line(entry.name, `FAILED: ${failure.message}\n${failure.detail}`);
        throw failure;
      }
    },
  }));

  // Progress goes to stderr: stdout carries only the result (and --json).
  const processOutput = new ProcessOutput(process.stderr, process.stderr);
  const logger = new ListrLogger({ processOutput, toStderr: Object.values(ListrLogLevels) });
  const list = new Listr(tasks, {
    concurrent: true,
    exitOnError: false,
    registerSignalListeners: false,
    renderer: options.plain ? "simple" : "default",
    rendererOptions: { processOutput, collapseErrors: false, logger } as any,
    fallbackRenderer: "simple",
    fallbackRendererOptions: { logger } as any,
    fallbackRendererCondition: () => options.plain,
  } as any);
  await list.run();

  if (options.signal.aborted) throw interruption(options.signal);
  if (failures.length) {
    const skipped = images.filter((e) => !results.has(e.name) && !failures.some((f) => f.node === e.name)).map((e) => e.name);
    options.onPartial?.({ built: images.filter((e) => results.has(e.name)).map((e) => results.get(e.name)!), failures, skipped });
    const first = failures[0];
    const more = failures.length > 1 ? `\n(${failures.length - 1} more failed: ${failures.slice(1).map((f) => f.node).join(", ")})` : "";
    throw new BuildFailedError(first.node, first.message, `${first.detail}${more}${skipped.length ? `\nnot built: ${skipped.join(", ")}` : ""}`);
  }

  const ordered = images.map((e) => results.get(e.name)!);
  if (options.push) await pushAll(ordered, docker, options, logs);
  await moveTags(ordered, docker, options, logs);
  return ordered;
}

/** The tags each image had when the run started (one engine query, made by the read step). */
function knownTags(pipeline: Pipeline): Map<string, Set<string>> {
  const images = pipeline.state.images.ok ? pipeline.state.images.value : [];
  return new Map(images.map((i) => [i.id, new Set(i.tags)]));
}

/** Moving tags move last: after every node built (and pushed). */
async function moveTags(ordered: ImageResult[], docker: DockerTool, options: BuildOptions, logs: RunLogs, known = new Map<string, Set<string>>()): Promise<void> {
  for (const r of ordered) {
    for (const t of ["latest", ...options.tags]) {
      if (!options.push && known.get(r.id)?.has(`${r.repo}:${t}`)) {
        r.tags.push(`${r.repo}:${t}`);
        continue;
      }
      await docker.tag(r.id, r.repo, t);
      r.tags.push(`${r.repo}:${t}`);
      if (options.push) {
        await docker.push(r.repo, t, options.signal, (l) => logs.line(r.name, l));
      }
    }
  }
}

type FindExisting = (node: string, repo: string, key: string) => Promise<BakeImageRecord | undefined>;

/**
 * One build per key on this machine: the build takes the key's lock before it looks for an image
 * with the key, so a second bake of the same key waits, then finds the first one's image.
 */
async function buildOne(node: ImageNode, entry: PlanEntry, pipeline: Pipeline, docker: DockerTool, git: Promise<GitInfo>, now: Date, options: BuildOptions, report: StepReport, findExisting: FindExisting, secrets?: Map<string, Buffer>): Promise<ImageResult> {
  const repo = imageRepository(pipeline.config, node.name);
  let release: (() => Promise<void>) | undefined;
  const holdKey = async (key: string) => {
    release ??= await acquireLock(machineLock(`image-${repo}-${key}`), { signal: options.signal, onWait: (holder) => report.step(`waiting for ${repo}:${key.slice(0, KEY_TAG_LENGTH)}: ${holder} is building it`) });
  };
  try {
    const result = await buildKeyed(node, entry, pipeline, docker, git, now, options, report, findExisting, holdKey, secrets);
    // An image with a test: is good once its test passed, and its key tag says so. A new build,
    // or an image found only by its label (its test failed before), is tested before it counts.
    if (node.test && result.action !== "pulled" && !knownTags(pipeline).get(result.id)?.has(result.tags[0])) await passTest(node, result, pipeline, docker, options, report);
    return result;
  } finally {
    await release?.();
  }
}

/** An image's goss test; a failure leaves the image as `<repo>:failed-<key12>` and no key tag. */
async function passTest(node: ImageNode, result: ImageResult, pipeline: Pipeline, docker: DockerTool, options: BuildOptions, report: StepReport): Promise<void> {
  const spec = path.relative(pipeline.config.dir, node.test!.spec);
  report.step(`testing ${result.repo}:${result.key.slice(0, KEY_TAG_LENGTH)} with ${spec}`);
  const tested = await testImage(node, result.id, pipeline.config.project, docker, gossBinary(requireGoss()), { signal: options.signal });
  for (const line of tested.output.split("\n")) report.line(line);
  if (tested.ok) return;
  const failedTag = `failed-${result.key.slice(0, KEY_TAG_LENGTH)}`;
  await docker.tag(result.id, result.repo, failedTag);
  await docker.removeImage(result.tags[0]);
  const counts = tested.summary ? `${tested.summary.failed} of ${tested.summary.count} checks failed` : "goss failed";
  throw new BuildFailedError(node.name, `${node.name}: test ${spec}: ${counts}`, `${tested.failures.join("\n")}\nthe image is kept as ${result.repo}:${failedTag}; a rerun tests it again`);
}

/** Whether the node has a test: (its images count only once it passed). */
function testedImage(pipeline: Pipeline, name: string): boolean {
  return Boolean(pipeline.config.images.find((i) => i.name === name)?.test);
}

async function buildKeyed(node: ImageNode, entry: PlanEntry, pipeline: Pipeline, docker: DockerTool, git: Promise<GitInfo>, now: Date, options: BuildOptions, report: StepReport, findExisting: FindExisting, holdKey: (key: string) => Promise<void>, secrets?: Map<string, Buffer>): Promise<ImageResult> {
  const started = Date.now();
  const keyResult = pipeline.keys.get(node.name)!;
  // A key is pending when the context's large files are hashed while they are sent (read.ts).
  let key = entry.key ?? undefined;
  let inputs = keyResult.inputs;
  const repo = imageRepository(pipeline.config, node.name);
  const keyTag = () => key!.slice(0, KEY_TAG_LENGTH);
  const result = (action: NodeAction, id: string): ImageResult => ({ name: node.name, key: key!, id, repo, action, tags: [`${repo}:${keyTag()}`], seconds: (Date.now() - started) / 1000 });

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
    ? (await docker.inspectImage(`${imageRepository(pipeline.config, node.parent)}:${pipeline.keys.get(node.parent)!.key!.slice(0, KEY_TAG_LENGTH)}`))?.id
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
      const id = await docker.buildWithSession({ ...viaBuildKit, context: servedContext(listing), sharedKey: `bake:${pipeline.config.project}/${node.name}`, parentId, tags: [`${repo}:${keyTag()}`], buildArgs: { ...node.args, BAKE_PARENT: parentId }, labels, noCache: options.noCache, signal: options.signal, onLine: line, secrets });
      return result("built", id);
    } catch (e) {
      // A proxy before the engine may allow builds but not sessions (docker-socket-proxy does by default).
      if (!(e instanceof SessionRefusedError)) throw e;
      refuseClassic(node, `${e.message}`);
      report.line(`${e.message}: building with the classic builder`);
    }
  }
  tar = listing ? contextTar(listing, node.dockerfile!, () => labelled, options.signal) : dockerfileOnlyTar("ARG BAKE_PARENT\nFROM ${BAKE_PARENT}\n", () => labelled);
  let id: string;
  try {
    // Labels in the request (the context's .dockerignore reaches the image as it is) are known before it starts.
    const requestLabels = tar.labelsInRequest ? await labelled : {};
    id = await docker.build({ context: tar.stream, dockerfile: tar.dockerfilePath, tags: pendingKey ? [] : [`${repo}:${keyTag()}`], buildArgs: { ...node.args, BAKE_PARENT: parentId }, labels: requestLabels, noCache: options.noCache, signal: options.signal, onLine: report.line });
  } catch (e) {
    if (reused) return reused;
    throw e;
  }
  if (pendingKey) await docker.tag(id, repo, keyTag());
  return result("built", id);
}

async function pushAll(results: ImageResult[], docker: DockerTool, options: BuildOptions, logs: RunLogs): Promise<void> {
  const limit = pLimit(Math.max(1, options.concurrency));
  await Promise.all(
    results.map((r) =>
      limit(async () => {
        r.digest = await docker.push(r.repo, r.key.slice(0, KEY_TAG_LENGTH), options.signal, (l) => logs.line(r.name, l));
      }),
    ),
  );
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
  const dockerfileText = pinParent(node.dockerfile ? readFileSync(node.dockerfile, "utf8") : "ARG BAKE_PARENT\nFROM ${BAKE_PARENT}\n", parentTag);
  if (dockerfileText === undefined) return undefined;
  return { dockerfileText, parentTag };
}

/** The context's entries as the session serves them, once the listing's digests are complete. */
function servedContext(listing: ContextListing | undefined): ServedEntry[] {
  return (listing?.entries ?? []).map((e) => {
    const abs = path.join(listing!.root, e.path);
    return { ...e, linkname: e.type === "symlink" ? readlinkSync(abs) : undefined, source: e.type === "file" ? { file: abs } : undefined };
  });
}

class SkippedError extends BakeError {}

/** What a lost connection to the engine looks like from dockerode, http and the BuildKit session. */
const ENGINE_GONE = /^aborted$|socket hang up|ECONNRESET|EPIPE|ECONNREFUSED|premature close|connection dropped/i;

function explainFailure(node: string, error: unknown, logFile: string, endpoint: string): BuildFailedError {
  const err = error as NodeJS.ErrnoException | undefined;
  if (!(error instanceof BakeError) && (ENGINE_GONE.test(err?.code ?? "") || ENGINE_GONE.test(err?.message ?? ""))) {
    return new BuildFailedError(node, `${node}: the Docker engine at ${endpoint} went away during the build: start it again (make services) and run bake again; images already built are kept`, `the last it said: ${err?.message ?? err?.code}\nfull log: ${logFile}`);
  }
  if (error instanceof BuildStreamError) {
    // "Step 3/5 : RUN x" (classic) or "[3/5] RUN x", "[build 3/5] RUN x" (BuildKit).
    const at = error.step ? ` at ${error.step.replace(/^Step (\d+\/\d+) : /, "step $1: ").replace(/^\[(?:\S+ )?(\d+\/\d+)\] /, "step $1: ")}` : "";
    return new BuildFailedError(node, `${node}: build failed${at}: ${error.message}`, `${error.tail.slice(-10).join("\n")}\nfull log: ${logFile}`);
  }
  const message = (error as Error)?.message ?? String(error);
  const detail = error instanceof BuildFailedError && error.detail ? `${error.detail}\n` : "";
  return new BuildFailedError(node, message.startsWith(`${node}:`) ? message : `${node}: ${message}`, `${detail}full log: ${logFile}`);
}
