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
import { BuildStreamError, type BakeImageRecord, type DockerTool } from "../tools/docker.js";
import type { GitInfo } from "../tools/git.js";
import { readBuildSecrets } from "./secrets.js";
import type { RunLogs } from "../state/logs.js";
import type { StepReport } from "./rootfs.js";
import {
  buildOne,
  knownTags,
  testedImage,
  type FindExisting,
  type ImageResult,
  type NodeBuildOptions,
} from "./node-image.js";

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
  const untested = (e: PlanEntry) =>
    Boolean(
      e.existing &&
      e.key &&
      testedImage(pipeline, e.name) &&
      !known.get(e.existing)?.has(`${imageRepository(pipeline.config, e.name)}:${e.key.slice(0, KEY_TAG_LENGTH)}`),
    );
  if (nothingToBuild(plan, options) && !images.some(untested)) {
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
  // Build secrets are read now: a missing one stops the run before anything builds.
  const secrets = readBuildSecrets(
    pipeline.config,
    images.filter((e) => e.status === "build" || options.noCache).map((e) => e.name),
  );
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
  let listing: Promise<BakeImageRecord[]> | undefined =
    pipeline.state.imagesListed && pipeline.state.images.ok ? Promise.resolve(pipeline.state.images.value) : undefined;
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
          return buildOne({
            node: node.image,
            entry,
            pipeline,
            docker,
            git: gitInfo,
            now,
            options,
            report,
            findExisting,
            secrets: secrets.get(node.image.name),
          });
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
        const engineGone = await docker.reachable().then(
          () => false,
          () => true,
        );
        const failure = explainFailure(
          entry.name,
          engineGone
            ? Object.assign(new Error((error as Error)?.message ?? String(error)), { code: "ECONNRESET" })
            : error,
          logs.pathOf(entry.name),
          docker.endpoint,
        );
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
    const skipped = images
      .filter((e) => !results.has(e.name) && !failures.some((f) => f.node === e.name))
      .map((e) => e.name);
    options.onPartial?.({
      built: images.filter((e) => results.has(e.name)).map((e) => results.get(e.name)!),
      failures,
      skipped,
    });
    const first = failures[0];
    const more =
      failures.length > 1
        ? `\n(${failures.length - 1} more failed: ${failures
            .slice(1)
            .map((f) => f.node)
            .join(", ")})`
        : "";
    throw new BuildFailedError(
      first.node,
      first.message,
      `${first.detail}${more}${skipped.length ? `\nnot built: ${skipped.join(", ")}` : ""}`,
    );
  }

  const ordered = images.map((e) => results.get(e.name)!);
  if (options.push) await pushAll(ordered, docker, options, logs);
  await moveTags(ordered, docker, options, logs);
  return ordered;
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

/** What a lost connection to the engine looks like from dockerode, http and the BuildKit session. */
const ENGINE_GONE = /^aborted$|socket hang up|ECONNRESET|EPIPE|ECONNREFUSED|premature close|connection dropped/i;

function explainFailure(node: string, error: unknown, logFile: string, endpoint: string): BuildFailedError {
  const err = error as NodeJS.ErrnoException | undefined;
  if (!(error instanceof BakeError) && (ENGINE_GONE.test(err?.code ?? "") || ENGINE_GONE.test(err?.message ?? ""))) {
    return new BuildFailedError(
      node,
      `${node}: the Docker engine at ${endpoint} went away during the build: start it again (make services) and run bake again; images already built are kept`,
      `the last it said: ${err?.message ?? err?.code}\nfull log: ${logFile}`,
    );
  }
  if (error instanceof BuildStreamError) {
    // "Step 3/5 : RUN x" (classic) or "[3/5] RUN x", "[build 3/5] RUN x" (BuildKit).
    const at = error.step
      ? ` at ${error.step.replace(/^Step (\d+\/\d+) : /, "step $1: ").replace(/^\[(?:\S+ )?(\d+\/\d+)\] /, "step $1: ")}`
      : "";
    return new BuildFailedError(
      node,
      `${node}: build failed${at}: ${error.message}`,
      `${error.tail.slice(-10).join("\n")}\nfull log: ${logFile}`,
    );
  }
  const message = (error as Error)?.message ?? String(error);
  const detail = error instanceof BuildFailedError && error.detail ? `${error.detail}\n` : "";
  return new BuildFailedError(
    node,
    message.startsWith(`${node}:`) ? message : `${node}: ${message}`,
    `${detail}full log: ${logFile}`,
  );
}
