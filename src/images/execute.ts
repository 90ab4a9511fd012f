/**
 * Walks the plan's image nodes with listr2: each node waits for its parent, then takes one of
 * `concurrency` slots for its image (node-image.ts: reused, pulled by key, or built). Nothing
 * here decides what to build: the plan did. Moving tags move only after every node succeeded;
 * pushes follow; a failed node names its step and log, and its children are skipped.
 */
import pLimit from "p-limit";
import type { ImageNode } from "../config/model.js";
import { KEY_TAG_LENGTH, imageRepository } from "../config/model.js";
import type { Pipeline } from "../state/read.js";
import { BakeError, BuildFailedError, InterruptedError, interruption } from "../errors.js";
import type { PlanEntry } from "../plan/plan.js";
import type { BakeImageRecord, DockerTool } from "../tools/docker.js";
import type { GitInfo } from "../tools/git.js";
import { readBuildSecrets } from "./secrets.js";
import { explainFailure, partialFailure } from "./build-failure.js";
import type { RunLogs } from "../state/logs.js";
import type { StepReport } from "./rootfs.js";
import { buildOne, testedImage } from "./node-image.js";
import { knownTags, type FindExisting, type ImageResult, type NodeBuildOptions } from "./node-build.js";

export interface BuildOptions extends NodeBuildOptions {
  push: boolean;
  concurrency: number;
  /** Moving tags besides `latest`, applied after the whole run succeeded. */
  tags: string[];
  /** Renderer: listr2's default on a TTY, plain lines in CI or when stderr is not a TTY. */
  plain: boolean;
  /** Told of each image as soon as it is there (built, pulled or found), while others still build. */
  onImage?: (result: ImageResult) => void;
  /** Told what did build when some nodes failed (before the failure is thrown). */
  onPartial?: (partial: { built: ImageResult[]; failures: BuildFailedError[]; skipped: string[] }) => void;
}

/** Nothing to build: every image exists with its key (the plan read that in one query). */
export function nothingToBuild(plan: PlanEntry[], options: Pick<BuildOptions, "noCache" | "push">): boolean {
  return (
    !options.noCache && !options.push && plan.every((e) => e.kind !== "image" || (e.status === "cached" && e.existing))
  );
}

export async function executeBuild(
  pipeline: Pipeline,
  plan: PlanEntry[],
  docker: DockerTool,
  git: () => Promise<GitInfo>,
  logs: RunLogs,
  options: BuildOptions,
): Promise<ImageResult[]> {
  const images = plan.filter((e) => e.kind === "image");
  const known = knownTags(pipeline);
  if (nothingToBuild(plan, options) && !images.some((e) => untested(pipeline, known, e)))
    return reuseAll(pipeline, images, docker, options, logs, known);
  // Build secrets are read now: a missing one stops the run before anything builds.
  const secrets = readBuildSecrets(
    pipeline.config,
    images.filter((e) => e.status === "build" || options.noCache).map((e) => e.name),
  );
  // Needed only for the labels, which go last in each context: read while the first one streams.
  const gitInfo = git();
  gitInfo.catch(() => undefined);
  const run: NodeRun = {
    pipeline,
    docker,
    logs,
    options,
    gitInfo,
    secrets,
    findExisting: existingFinder(pipeline, docker),
    now: new Date(),
    limit: pLimit(Math.max(1, options.concurrency)),
    finished: new Map(),
    results: new Map(),
    failures: [],
  };
  for (const e of images) run.finished.set(e.name, settlement());
  await runTasks(
    images.map((entry) => ({ title: entry.name, task: (_ctx: unknown, task: any) => nodeTask(run, entry, task) })),
    options.plain,
  );

  if (options.signal.aborted) throw interruption(options.signal);
  if (run.failures.length) throw partialFailure(images, run.results, run.failures, options.onPartial);
  const ordered = images.map((e) => run.results.get(e.name)!);
  if (options.push) await pushAll(ordered, docker, options, logs);
  await moveTags(ordered, docker, options, logs);
  return ordered;
}

/** What every node task of one run shares. */
interface NodeRun {
  pipeline: Pipeline;
  docker: DockerTool;
  logs: RunLogs;
  options: BuildOptions;
  gitInfo: Promise<GitInfo>;
  secrets: ReturnType<typeof readBuildSecrets>;
  findExisting: FindExisting;
  now: Date;
  limit: ReturnType<typeof pLimit>;
  /** Each node's outcome, awaited by its children. */
  finished: Map<string, Settlement>;
  results: Map<string, ImageResult>;
  failures: BuildFailedError[];
}

interface Settlement {
  promise: Promise<ImageResult>;
  resolve: (r: ImageResult) => void;
  reject: (e: unknown) => void;
}

function settlement(): Settlement {
  const s = {} as Settlement;
  s.promise = new Promise<ImageResult>((resolve, reject) => Object.assign(s, { resolve, reject }));
  s.promise.catch(() => undefined);
  return s;
}

/** An image that exists with its key but not yet under its key tag, and whose test must run first. */
function untested(pipeline: Pipeline, known: Map<string, Set<string>>, e: PlanEntry): boolean {
  return Boolean(
    e.existing &&
    e.key &&
    testedImage(pipeline, e.name) &&
    !known.get(e.existing)?.has(`${imageRepository(pipeline.config, e.name)}:${e.key.slice(0, KEY_TAG_LENGTH)}`),
  );
}

/** Nothing to build: every image is reused as it is, tagged where it lacks its tags. */
async function reuseAll(
  pipeline: Pipeline,
  images: PlanEntry[],
  docker: DockerTool,
  options: BuildOptions,
  logs: RunLogs,
  known: Map<string, Set<string>>,
): Promise<ImageResult[]> {
  const results = images.map((e): ImageResult => {
    const repo = imageRepository(pipeline.config, e.name);
    return {
      name: e.name,
      key: e.key!,
      id: e.existing!,
      repo,
      action: "cached",
      tags: [`${repo}:${e.key!.slice(0, KEY_TAG_LENGTH)}`],
      seconds: 0,
    };
  });
  // The same content may exist under another repository (registry: changed): tag it here too.
  for (const r of results)
    if (!known.get(r.id)?.has(r.tags[0])) await docker.tag(r.id, r.repo, r.key.slice(0, KEY_TAG_LENGTH));
  await moveTags(results, docker, options, logs, known);
  return results;
}

/**
 * An image with its key may exist under another name (registry: changed, so the repository
 * did): found by label, in the read step's listing or in one listing asked when needed. An
 * image built before under its own name (its `latest` is there) and missing its key tag has
 * new content: the listing, which keeps the engine busy ~0.1 s with 1,000 images, is skipped.
 */
function existingFinder(pipeline: Pipeline, docker: DockerTool): FindExisting {
  let listing: Promise<BakeImageRecord[]> | undefined =
    pipeline.state.imagesListed && pipeline.state.images.ok ? Promise.resolve(pipeline.state.images.value) : undefined;
  return async (node, repo, key) => {
    const [byTag, latest] = await docker.findBakeImages([`${repo}:${key.slice(0, KEY_TAG_LENGTH)}`, `${repo}:latest`]);
    if (byTag?.key === key && byTag.node === node) return byTag;
    if (latest?.node === node && !listing) return undefined;
    listing ??= docker.listBakeImages(pipeline.config.project);
    return (await listing).find((r) => r.key === key && r.node === node);
  };
}

/** One node: wait for its parents, take a slot, build (or reuse, or pull) its image. */
async function nodeTask(run: NodeRun, entry: PlanEntry, task: any): Promise<void> {
  const { pipeline, options, logs } = run;
  const node = pipeline.graph.byName.get(entry.name)! as { kind: "image"; image: ImageNode };
  const done = run.finished.get(entry.name)!;
  try {
    for (const dep of entry.deps) {
      if (!run.finished.has(dep)) continue;
      task.title = `${entry.name}: waiting for ${dep}`;
      await run.finished.get(dep)!.promise.catch(() => {
        throw new SkippedError(`${entry.name}: not built because ${dep} failed`);
      });
    }
    const result = await run.limit(() => {
      if (options.signal.aborted) throw interruption(options.signal);
      return buildOne({
        node: node.image,
        entry,
        pipeline,
        docker: run.docker,
        git: run.gitInfo,
        now: run.now,
        options,
        report: stepReport(entry.name, task, options.plain, logs),
        findExisting: run.findExisting,
        secrets: run.secrets.get(node.image.name),
      });
    });
    run.results.set(entry.name, result);
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
    const failure = await nodeFailure(run, entry.name, error);
    run.failures.push(failure);
    logs.line(entry.name, `FAILED: ${failure.message}\n${failure.detail}`);
    throw failure;
  }
}

/** A node's steps and build lines, to its task's title and output and to its log. */
function stepReport(name: string, task: any, plain: boolean, logs: RunLogs): StepReport {
  return {
    step: (text) => {
      task.title = `${name}: ${text}`;
      // Plain output shows no title changes: a step (waiting for another bake, building) is a line.
      if (plain) task.output = text;
      logs.line(name, `== ${text}`);
    },
    line: (text) => {
      // Plain output shows the instructions; a terminal shows the latest line of each node.
      // In plain output only the instructions show: "Step 3/5 : RUN x" (classic), "#5 [2/3] RUN x" (BuildKit).
      if (!plain || /^Step \d+\/\d+ : |^#\d+ \[(?:\S+ )?\d+\/\d+\] /.test(text)) task.output = text;
      logs.line(name, text);
    },
  };
}

/**
 * An engine that stops mid-build may first report the failures of its shutdown in the stream:
 * when it no longer answers, that is what the user needs to hear.
 */
async function nodeFailure(run: NodeRun, name: string, error: unknown): Promise<BuildFailedError> {
  const engineGone = await run.docker.reachable().then(
    () => false,
    () => true,
  );
  return explainFailure(
    name,
    engineGone ? Object.assign(new Error((error as Error)?.message ?? String(error)), { code: "ECONNRESET" }) : error,
    run.logs.pathOf(name),
    run.docker.endpoint,
  );
}

/** listr2 over the node tasks; progress goes to stderr (stdout carries only the result and --json). */
async function runTasks(tasks: { title: string; task: (ctx: unknown, task: any) => Promise<void> }[], plain: boolean) {
  const { Listr, ListrLogger, ListrLogLevels, ProcessOutput } = await import("listr2");
  const processOutput = new ProcessOutput(process.stderr, process.stderr);
  const logger = new ListrLogger({ processOutput, toStderr: Object.values(ListrLogLevels) });
  const list = new Listr(tasks, {
    concurrent: true,
    exitOnError: false,
    registerSignalListeners: false,
    renderer: plain ? "simple" : "default",
    rendererOptions: { processOutput, collapseErrors: false, logger } as any,
    fallbackRenderer: "simple",
    fallbackRendererOptions: { logger } as any,
    fallbackRendererCondition: () => plain,
  } as any);
  await list.run();
}

/** The tags each image had when the run started (one engine query, made by the read step). */
async function moveTags(
  ordered: ImageResult[],
  docker: DockerTool,
  options: BuildOptions,
  logs: RunLogs,
  known = new Map<string, Set<string>>(),
): Promise<void> {
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

async function pushAll(
  results: ImageResult[],
  docker: DockerTool,
  options: BuildOptions,
  logs: RunLogs,
): Promise<void> {
  const limit = pLimit(Math.max(1, options.concurrency));
  await Promise.all(
    results.map((r) =>
      limit(async () => {
        r.digest = await docker.push(r.repo, r.key.slice(0, KEY_TAG_LENGTH), options.signal, (l) =>
          logs.line(r.name, l),
        );
      }),
    ),
  );
}

class SkippedError extends BakeError {}
