/**
 * An image build as `bake build` and the nightly run it: the plan's images built (images/), each
 * one's contents read as it arrives (sbom/), then the manifest records the images, their SBOM
 * digests and provenance. The step logs go to one run folder.
 */
import type { Pipeline } from "../state/read.js";
import type { PlanEntry } from "../plan/plan.js";
import type { BuildFailedError } from "../errors.js";
import type { DockerTool } from "../tools/docker.js";
import { executeBuild, type BuildOptions } from "../images/execute.js";
import type { ImageResult } from "../images/node-build.js";
import { RunLogs } from "../state/logs.js";
import { updateManifest } from "../state/manifest.js";
import { gitInfo, readRevision } from "../tools/git.js";
import { imageDescriber, imagesReplaced, type ImageContents } from "../sbom/record.js";

export interface RecordedBuild {
  /** Every image of the plan, or on a partial failure (keepGoing) the ones that built. */
  results: ImageResult[];
  contents: ImageContents[];
  logsDir: string;
  /** keepGoing: the nodes that failed, and the ones not attempted because a parent failed. */
  failures: BuildFailedError[];
  skipped: string[];
}

export interface RecordedBuildOptions extends Omit<BuildOptions, "onPartial"> {
  /** Record what did build when some nodes fail, and return their failures instead of throwing. */
  keepGoing?: boolean;
  /** The run's log folder, when the caller keeps more of the run beside the logs (its report). */
  logs?: RunLogs;
  /** On a failed run (not interrupted), before it throws: the contents of the images that did build. */
  onFailure?: (contents: ImageContents[]) => void;
}

export async function buildAndRecord(
  pipeline: Pipeline,
  plan: PlanEntry[],
  docker: DockerTool,
  options: RecordedBuildOptions,
): Promise<RecordedBuild> {
  const logs = options.logs ?? new RunLogs(pipeline.config.dir);
  const startedOn = new Date().toISOString();
  const out: RecordedBuild = { results: [], contents: [], logsDir: logs.dir, failures: [], skipped: [] };
  try {
    const replaced = await imagesReplaced(docker, pipeline.config.project, plan);
    // Each image's contents are read as it is built, beside the builds still running.
    const describer = imageDescriber(pipeline, docker, replaced);
    const built: ImageResult[] = [];
    const run = () => ({ id: logs.runId, startedOn, finishedOn: new Date().toISOString() });
    try {
      out.results = await executeBuild(pipeline, plan, docker, () => gitInfo(pipeline.config.dir), logs, {
        ...options,
        onImage: (r) => {
          built.push(r);
          options.onImage?.(r);
          describer.add(r);
        },
        onPartial: (p) => Object.assign(out, { results: p.built, failures: p.failures, skipped: p.skipped }),
      });
    } catch (e) {
      if (!options.keepGoing || !out.failures.length || options.signal.aborted) {
        // What did build is described for the run's report; the manifest keeps no failed run.
        if (options.onFailure && !options.signal.aborted)
          options.onFailure(await describer.describe(built, run()).catch(() => []));
        throw e;
      }
    }
    out.contents = await describer.describe(out.results, run());
  } finally {
    await logs.close();
  }
  if (out.results.length || !options.keepGoing) await recordImages(pipeline, out);
  return out;
}

/** The manifest's record of the images a build produced: keys, ids, tags, SBOM digests, provenance. */
async function recordImages(pipeline: Pipeline, build: RecordedBuild): Promise<void> {
  const sbomOf = (name: string) => build.contents.find((c) => c.name === name)?.sbom;
  await updateManifest(pipeline.config.dir, {
    revision: readRevision(pipeline.config.dir),
    images: Object.fromEntries(
      build.results.map((r) => [
        r.name,
        {
          key: r.key,
          id: r.id,
          ...(r.digest ? { digest: r.digest } : {}),
          tags: r.tags,
          ...(sbomOf(r.name) ? { sbom: sbomOf(r.name) } : {}),
        },
      ]),
    ),
    provenance: build.contents.flatMap((c) => (c.statement ? [c.statement] : [])),
  });
}
