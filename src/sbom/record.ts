/**
 * What a build leaves besides images: each image's package list, the digests of its SBOMs (for
 * the manifest), its provenance statement, and, for a rebuilt node, what changed in its packages
 * since the image it replaces.
 */
import path from "node:path";
import type { BakeConfig } from "../config/model.js";
import { previousImage, type PlanEntry } from "../plan/plan.js";
import type { Pipeline } from "../state/read.js";
import type { ImageResult } from "../images/node-build.js";
import { LABEL, type DockerTool } from "../tools/docker.js";
import { bakeVersion } from "../package-root.js";
import { imagePackages, type PackageList } from "./packages.js";
import { diffPackages, type PackageDiff } from "./package-diff.js";
import { sbomDigests, type SbomSubject } from "./sbom.js";
import { contextMaterials, imageStatement } from "./provenance.js";
import type { Statement } from "../state/provenance-file.js";
import { readManifest } from "../state/manifest.js";

export interface ImageContents {
  name: string;
  sbom: Record<string, string>;
  /** Absent for an image the manifest already describes (same id and key): its statement stands. */
  statement?: Statement;
  /** For a node built in this run that replaced an earlier image: its package changes. */
  packages?: PackageDiff & { since: string };
}

/** The image each node to be built replaces (asked before the build: moving tags move after it). */
export async function imagesReplaced(
  docker: Pick<DockerTool, "listBakeImages">,
  project: string,
  plan: PlanEntry[],
): Promise<Map<string, string>> {
  const building = plan.filter((e) => e.kind === "image" && e.status === "build").map((e) => e.name);
  if (!building.length) return new Map();
  const records = await docker.listBakeImages(project);
  const out = new Map<string, string>();
  for (const name of building) {
    const previous = previousImage(records.filter((r) => r.node === name));
    if (previous) out.set(name, previous.id);
  }
  return out;
}

/** The SBOM subject of one image, from the engine's record of it and its package list. */
export function imageSubject(
  config: Pick<BakeConfig, "project">,
  name: string,
  key: string,
  id: string,
  created: string,
  list: PackageList,
): SbomSubject {
  return {
    project: config.project,
    node: name,
    kind: "image",
    key,
    ids: [id],
    created,
    parts: [{ name, kind: "image", list }],
    bakeVersion: bakeVersion(),
  };
}

export async function describeImages(
  pipeline: Pipeline,
  results: ImageResult[],
  docker: DockerTool,
  options: { replaced: Map<string, string>; run: { id: string; startedOn: string; finishedOn: string } },
): Promise<ImageContents[]> {
  return imageDescriber(pipeline, docker, options.replaced).describe(results, options.run);
}

/** What is read from one image for its contents: everything but the run's times. */
interface ImageReading {
  created: string;
  labels: Record<string, string>;
  sbom: Record<string, string>;
  packages?: PackageDiff & { since: string };
}

/**
 * Reads what is inside each image as soon as it is there (`add`, called as each build ends), one
 * image at a time, beside the builds still running: a cold build pays for its package lists only
 * where the last image is read after the last build. `describe` waits for the readings and makes
 * the statements, which need the run's end.
 */
export function imageDescriber(pipeline: Pipeline, docker: DockerTool, replaced: Map<string, string>) {
  // What the manifest already describes (a no-op run) is not read again: nothing to add.
  const recorded = readManifest(pipeline.config.dir).images;
  const unchanged = (r: ImageResult) =>
    r.action !== "built" && recorded[r.name]?.id === r.id && recorded[r.name]?.key === r.key && recorded[r.name]?.sbom;
  const readings = new Map<string, Promise<ImageReading | undefined>>();
  let queue: Promise<unknown> = Promise.resolve();
  const add = (r: ImageResult): void => {
    if (unchanged(r) || readings.has(r.name)) return;
    const reading = queue.then(() => readImage(pipeline, docker, replaced.get(r.name), r));
    reading.catch(() => undefined); // awaited (and thrown) in describe
    queue = reading.catch(() => undefined);
    readings.set(r.name, reading);
  };
  const describe = async (
    results: ImageResult[],
    run: { id: string; startedOn: string; finishedOn: string },
  ): Promise<ImageContents[]> => {
    if (!results.length) return [];
    for (const r of results) add(r);
    // The tools' versions are claimed only for what this run built (a pulled or found image was made elsewhere).
    const versions: Record<string, string> = results.some((r) => r.action === "built" && !unchanged(r))
      ? { bake: bakeVersion(), "docker-engine": (await docker.ping()).version }
      : {};
    const out: ImageContents[] = [];
    for (const r of results) {
      if (unchanged(r)) {
        out.push({ name: r.name, sbom: recorded[r.name].sbom! });
        continue;
      }
      const reading = await readings.get(r.name)!;
      if (!reading) continue;
      out.push(imageContents(pipeline, r, reading, results, versions, run));
    }
    return out;
  };
  return { add, describe };
}

/** One image's package list and SBOM digests, and what changed in its packages since the image it replaces. */
async function readImage(
  pipeline: Pipeline,
  docker: DockerTool,
  before: string | undefined,
  r: ImageResult,
): Promise<ImageReading | undefined> {
  const image = await docker.inspectImage(r.id);
  if (!image) return undefined;
  const list = await imagePackages(docker, pipeline.config.dir, r.id);
  const reading: ImageReading = {
    created: image.created,
    labels: image.labels,
    sbom: sbomDigests(imageSubject(pipeline.config, r.name, r.key, r.id, image.created, list)),
  };
  if (r.action === "built" && before && before !== r.id) {
    const was = await imagePackages(docker, pipeline.config.dir, before);
    reading.packages = { since: before, ...diffPackages(was.packages, list.packages) };
  }
  return reading;
}

/** An image's contents for the manifest: its SBOM digests, its provenance statement and its package changes. */
function imageContents(
  pipeline: Pipeline,
  r: ImageResult,
  reading: ImageReading,
  results: ImageResult[],
  versions: Record<string, string>,
  run: { id: string; startedOn: string; finishedOn: string },
): ImageContents {
  const node = pipeline.config.images.find((i) => i.name === r.name)!;
  // The inputs the image's own label holds: the ones its key was made of, whatever was deferred.
  const inputs = JSON.parse(reading.labels[LABEL.inputs] ?? "{}");
  const parent = node.parent ? results.find((p) => p.name === node.parent) : undefined;
  const listing = pipeline.listings.get(r.name);
  const statement = imageStatement({
    project: pipeline.config.project,
    node: r.name,
    repo: r.repo,
    key: r.key,
    id: r.id,
    digest: r.digest,
    inputs,
    contextFiles:
      listing && node.context ? contextMaterials(pipeline.config.dir, node.context, listing.entries) : undefined,
    parent: parent ? { node: parent.name, id: parent.id, key: parent.key } : undefined,
    dockerfile: node.dockerfile
      ? path.relative(pipeline.config.dir, node.dockerfile).split(path.sep).join("/")
      : undefined,
    args: node.args,
    sbom: reading.sbom,
    versions: r.action === "built" ? versions : {},
    run: r.action === "built" ? run : undefined,
  });
  return {
    name: r.name,
    sbom: reading.sbom,
    statement,
    ...(reading.packages ? { packages: reading.packages } : {}),
  };
}
