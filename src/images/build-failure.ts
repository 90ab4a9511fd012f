/** How a failed build node is told: which step failed, the end of its log, or an engine that went away. */
import { BakeError, BuildFailedError } from "../errors.js";
import type { PlanEntry } from "../plan/plan.js";
import { BuildStreamError } from "../tools/docker.js";
import type { ImageResult } from "./node-build.js";

/** What a lost connection to the engine looks like from dockerode, http and the BuildKit session. */
const ENGINE_GONE = /^aborted$|socket hang up|ECONNRESET|EPIPE|ECONNREFUSED|premature close|connection dropped/i;

export function explainFailure(node: string, error: unknown, logFile: string, endpoint: string): BuildFailedError {
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

/** Some nodes failed: tell what did build, then one error naming the first failure and the rest. */
export function partialFailure(
  images: PlanEntry[],
  results: Map<string, ImageResult>,
  failures: BuildFailedError[],
  onPartial: ((partial: { built: ImageResult[]; failures: BuildFailedError[]; skipped: string[] }) => void) | undefined,
): BuildFailedError {
  const skipped = images
    .filter((e) => !results.has(e.name) && !failures.some((f) => f.node === e.name))
    .map((e) => e.name);
  onPartial?.({
    built: images.filter((e) => results.has(e.name)).map((e) => results.get(e.name)!),
    failures,
    skipped,
  });
  const [first, ...rest] = failures;
  const more = rest.length ? `\n(${rest.length} more failed: ${rest.map((f) => f.node).join(", ")})` : "";
  return new BuildFailedError(
    first.node,
    first.message,
    `${first.detail}${more}${skipped.length ? `\nnot built: ${skipped.join(", ")}` : ""}`,
  );
}
