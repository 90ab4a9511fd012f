/** `bake build`: build the container images (and their parents) the plan says to build. */
import { existsSync } from "node:fs";
import { readPipeline, requireEngine, type Tools } from "../state/read.js";
import { BuildFailedError, EngineUnreachableError, exitCodeFor, UsageError } from "../errors.js";
import { RunLogs } from "../state/logs.js";
import { reportRun } from "../report/write.js";
import { assemblePlan } from "../plan/plan.js";
import type { ImageResult } from "../images/node-build.js";
import { describeDockerError } from "../tools/docker.js";
import type { ImageContents } from "../sbom/record.js";
import { buildAndRecord, type RecordedBuild } from "../image-build/run.js";
import { describeDiff, diffIsEmpty } from "../sbom/package-diff.js";

export interface BuildCommandOptions {
  file: string;
  nodes: string[];
  push: boolean;
  pull: boolean;
  noCache: boolean;
  concurrency: number;
  tags: string[];
  json: boolean;
  signal: AbortSignal;
}

export async function buildCommand(
  options: BuildCommandOptions,
  tools: Tools,
  out: (text: string) => void,
  err: (text: string) => void,
): Promise<ImageResult[]> {
  if (!Number.isInteger(options.concurrency) || options.concurrency < 1)
    throw new UsageError(`--concurrency must be a whole number of at least 1, not ${options.concurrency}`);
  for (const t of options.tags)
    if (!/^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$/.test(t)) throw new UsageError(`--tag ${t} is not a valid Docker tag`);
  const pipeline = await readPipeline(
    { file: options.file, target: "local", nodes: options.nodes, pull: options.pull, imagesOnly: true, forBuild: true },
    tools,
  );
  if (options.push && !pipeline.config.registry)
    throw new UsageError(`--push needs a registry: set registry: in ${options.file} (or BAKE_REGISTRY)`);
  requireEngine(pipeline);
  const plan = assemblePlan(
    pipeline.nodes.filter((n) => n.kind === "image"),
    pipeline.keys,
    pipeline.state,
    "local",
  );
  const unknown = plan.filter((e) => e.status === "unknown");
  if (unknown.length) throw new UsageError(`cannot build ${unknown.map((e) => `${e.name} (${e.reason})`).join(", ")}`);

  const docker = tools.docker();
  const logs = new RunLogs(pipeline.config.dir);
  const started = new Date();
  const built: ImageResult[] = [];
  // The run's record and report beside its logs, whichever way it ends.
  const report = (exit: number, contents: ImageContents[], failure?: unknown) => {
    const r = reportRun({
      folder: logs.dir,
      run: logs.runId,
      command: "build",
      project: pipeline.config.project,
      started,
      exit,
      plan,
      results: built.map((r) => ({ ...r, packages: contents.find((c) => c.name === r.name)?.packages })),
      failures: failure instanceof BuildFailedError ? [failure] : [],
    });
    if (r.report) err(`report: ${r.report}`);
    if (r.unwritten) err(`warning: ${r.unwritten}`);
  };
  let build: RecordedBuild;
  let failedContents: ImageContents[] = [];
  try {
    build = await buildAndRecord(pipeline, plan, docker, {
      noCache: options.noCache,
      push: options.push,
      concurrency: options.concurrency,
      tags: options.tags,
      signal: options.signal,
      plain: Boolean(process.env.CI) || !process.stderr.isTTY,
      logs,
      onImage: (r) => built.push(r),
      onFailure: (c) => (failedContents = c),
    });
  } catch (e) {
    report(exitCodeFor(e), failedContents, e);
    if ((e as any)?.code === "ECONNREFUSED" || (e as any)?.code === "ENOENT")
      throw new EngineUnreachableError(describeDockerError(e, docker.endpoint));
    throw e;
  }
  const { results, contents } = build;
  const counts = (["built", "pulled", "cached"] as const)
    .map((a) => `${results.filter((r) => r.action === a).length} ${a}`)
    .join(", ");
  err(existsSync(build.logsDir) ? `${counts}; logs in ${build.logsDir}` : counts);
  report(0, contents);
  out(describeResults(results, contents, options.json));
  return results;
}

/** Under a rebuilt image, what changed in its packages since the image it replaces (nothing when nothing did). */
function packageLine(c: Partial<ImageContents>): string[] {
  return c.packages && !diffIsEmpty(c.packages)
    ? [`${"".padEnd(16)} packages since ${c.packages.since.slice(7, 19)}: ${describeDiff(c.packages)}`]
    : [];
}

/** What bake build prints on stdout: a line per image (and its package changes), or --json. */
function describeResults(results: ImageResult[], contents: ImageContents[], json: boolean): string {
  const contentsOf = (r: ImageResult): Partial<ImageContents> => contents.find((c) => c.name === r.name) ?? {};
  if (json)
    return JSON.stringify(
      {
        images: Object.fromEntries(
          results.map((r) => [
            r.name,
            {
              key: r.key,
              id: r.id,
              action: r.action,
              ...(r.digest ? { digest: r.digest } : {}),
              tags: r.tags,
              ...(contentsOf(r).packages ? { packages: contentsOf(r).packages } : {}),
            },
          ]),
        ),
      },
      null,
      2,
    );
  return results
    .flatMap((r) => [
      `${r.name.padEnd(16)} ${r.action.padEnd(7)} ${r.tags[0]}  ${r.id.slice(0, 19)}${r.digest ? `  ${r.digest}` : ""}`,
      ...packageLine(contentsOf(r)),
    ])
    .join("\n");
}
