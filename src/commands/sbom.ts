/** `bake sbom <node>`: the SBOM of what the node's current key built, in SPDX or CycloneDX JSON. */
import { shortKey } from "../config/model.js";
import { existsSync, writeFileSync } from "node:fs";
import path from "node:path";
import { BakeError, UsageError } from "../errors.js";
import type { Target } from "../graph/keys.js";
import { currentImage, readPipeline, requireEngine, type Pipeline, type Tools } from "../state/read.js";
import { imagePackages } from "../sbom/packages.js";
import { imageSubject } from "../sbom/record.js";
import { amiSubject } from "../sbom/ami-record.js";
import { readManifest } from "../state/manifest.js";
import { renderSbom, type SbomFormat, type SbomSubject } from "../sbom/sbom.js";
import type { DockerTool } from "../tools/docker.js";

export interface SbomOptions {
  file: string;
  node: string;
  format: SbomFormat;
  target: Target;
  out?: string;
}

export async function sbomCommand(
  options: SbomOptions,
  tools: Tools,
  out: (t: string) => void,
  err: (t: string) => void,
): Promise<string> {
  if (options.out && !existsSync(path.dirname(path.resolve(options.out))))
    throw new UsageError(`--out ${options.out}: the folder ${path.dirname(path.resolve(options.out))} does not exist`);
  const pipeline = await readPipeline({ file: options.file, target: options.target, nodes: [options.node] }, tools);
  requireEngine(pipeline);
  const subject = await sbomSubject(pipeline, options.node, tools.docker());
  const text = renderSbom(subject, options.format);
  if (options.out) {
    writeFileSync(path.resolve(options.out), text);
    err(
      `${options.node}: ${options.format} SBOM of ${subject.ids.join(", ")} (${subject.parts.reduce((n, p) => n + p.list.packages.length, 0)} packages) written to ${options.out}`,
    );
  } else out(text.trimEnd());
  return text;
}

/** What the SBOM describes: the node's current image, or an AMI's host and the images it ships. */
export async function sbomSubject(pipeline: Pipeline, name: string, docker: DockerTool): Promise<SbomSubject> {
  const node = pipeline.graph.byName.get(name)!;
  const key = pipeline.keys.get(name)?.key;
  if (!key)
    throw new BakeError(
      `${name} has no key (${(pipeline.keys.get(name) as { unknownBecause?: string }).unknownBecause})`,
    );
  if (node.kind === "ami") {
    const regions = bakedRegions(pipeline, name, key);
    if (!regions)
      throw new BakeError(
        `no bake of ${name} with its current key ${shortKey(key)} on the ${pipeline.target} target: run bake ami ${name} --target ${pipeline.target} first`,
      );
    return amiSubject(pipeline, node.ami, key, regions, docker);
  }
  const image = currentImage(pipeline, name);
  if (!image) throw new BakeError(`no image with ${name}'s current key ${shortKey(key)}: run bake build ${name} first`);
  const created = (await docker.inspectImage(image.id))?.created ?? new Date(0).toISOString();
  return imageSubject(
    pipeline.config,
    name,
    key,
    image.id,
    created,
    await imagePackages(docker, pipeline.config.dir, image.id),
  );
}

/** Where the AMI's current key was baked: the manifest's record, else the local image or the AMI found by key. */
function bakedRegions(pipeline: Pipeline, name: string, key: string): Record<string, string> | undefined {
  const recorded = readManifest(pipeline.config.dir).amis[name];
  if (recorded?.key === key && recorded.target === pipeline.target) return recorded.regions;
  if (pipeline.target === "local") {
    const image = currentImage(pipeline, name);
    return image ? { local: image.id } : undefined;
  }
  const found = pipeline.state.amis.get(name);
  const node = pipeline.graph.byName.get(name)!;
  return found?.ok && found.value && node.kind === "ami" ? { [node.ami.region]: found.value.imageId } : undefined;
}
