/**
 * One node's image: its key's lock taken (one build per key on this machine at a time), the
 * image found, pulled or built (keyed-build.ts), then its goss test before it counts.
 */
import path from "node:path";
import type { ImageNode } from "../config/model.js";
import { KEY_TAG_LENGTH, imageRepository } from "../config/model.js";
import type { Pipeline } from "../state/read.js";
import { BuildFailedError } from "../errors.js";
import type { DockerTool } from "../tools/docker.js";
import type { StepReport } from "./rootfs.js";
import { acquireLock, machineLock } from "../files/process-lock.js";
import { testImage } from "../goss/image-test.js";
import { gossBinary, requireGoss } from "../tools/goss.js";
import { knownTags, type ImageResult, type NodeBuild, type NodeBuildOptions } from "./node-build.js";
import { buildKeyed } from "./keyed-build.js";

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
