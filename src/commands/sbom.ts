/** `bake sbom <node>`: the SBOM of what the node's current key built, in SPDX or CycloneDX JSON. */
import { writeFileSync } from "node:fs";
import path from "node:path";
import { BakeError, UsageError } from "../errors.js";
import type { Target } from "../graph/keys.js";
import { currentImage, readPipeline, type Pipeline, type Tools } from "../state/read.js";
import { imagePackages } from "../sbom/packages.js";
import { imageSubject } from "../sbom/record.js";
import { renderSbom, type SbomFormat, type SbomSubject } from "../sbom/sbom.js";
import { bakeVersion } from "../package-root.js";
import type { DockerTool } from "../tools/docker.js";

export interface SbomOptions {
  file: string;
  node: string;
  format: SbomFormat;
  target: Target;
  out?: string;
}

export async function sbomCommand(options: SbomOptions, tools: Tools, out: (t: string) => void, err: (t: string) => void): Promise<string> {
  const pipeline = await readPipeline({ file: options.file, target: options.target, nodes: [options.node] }, tools);
  if (!pipeline.state.images.ok) throw new UsageError(`${pipeline.state.images.reason}: start it with make services`);
  const subject = await sbomSubject(pipeline, options.node, tools.docker());
  const text = renderSbom(subject, options.format);
  if (options.out) {
    writeFileSync(path.resolve(options.out), text);
    err(`${options.node}: ${options.format} SBOM of ${subject.ids.join(", ")} (${subject.parts.reduce((n, p) => n + p.list.packages.length, 0)} packages) written to ${options.out}`);
  } else out(text.trimEnd());
  return text;
}

/** What the SBOM describes: the node's current image, or a local AMI's host and the images it ships. */
export async function sbomSubject(pipeline: Pipeline, name: string, docker: Pick<DockerTool, "inspectImage" | "readImageFiles">): Promise<SbomSubject> {
  const node = pipeline.graph.byName.get(name)!;
  const key = pipeline.keys.get(name)?.key;
  const image = currentImage(pipeline, name);
  if (node.kind === "ami" && pipeline.target !== "local") {
    throw new UsageError(`bake sbom ${name} --target ${pipeline.target}: the host's packages are read from the local target's machine image only so far; use --target local`);
  }
  if (!key || !image) {
    const why = key ? `no image with ${name}'s current key ${key.slice(0, 12)}` : `${name} has no key (${(pipeline.keys.get(name) as { unknownBecause?: string }).unknownBecause})`;
    throw new BakeError(`${why}: run bake ${node.kind === "image" ? `build ${name}` : `ami ${name} --target local`} first`);
  }
  const created = (await docker.inspectImage(image.id))?.created ?? new Date(0).toISOString();
  const list = await imagePackages(docker, pipeline.config.dir, image.id);
  if (node.kind === "image") return imageSubject(pipeline.config, name, key, image.id, created, list);
  const parts: SbomSubject["parts"] = [{ name: "host", kind: "host", list }];
  for (const shipped of [...new Set([...node.ami.preload, ...node.ami.services])]) {
    const found = currentImage(pipeline, shipped);
    if (!found) throw new BakeError(`${name} ships ${shipped}, which has no image with its current key: run bake build ${shipped}`);
    parts.push({ name: shipped, kind: "image", key: pipeline.keys.get(shipped)!.key!, id: found.id, list: await imagePackages(docker, pipeline.config.dir, found.id) });
  }
  return { project: pipeline.config.project, node: name, kind: "ami", key, ids: [image.id], created, parts, bakeVersion: bakeVersion() };
}
