/**
 * What a build leaves besides images: each image's package list, the digests of its SBOMs (for
 * the manifest), its provenance statement, and, for a rebuilt node, what changed in its packages
 * since the image it replaces.
 */
import type { BakeConfig } from "../config/model.js";
import type { PlanEntry } from "../plan/plan.js";
import { previousImage } from "../plan/plan.js";
import type { Pipeline } from "../state/read.js";
import type { ImageResult } from "../images/execute.js";
import { LABEL, type DockerTool } from "../tools/docker.js";
import { bakeVersion } from "../package-root.js";
import { diffPackages, imagePackages, type PackageDiff, type PackageList } from "./packages.js";
import { sbomDigests, type SbomFormat, type SbomSubject } from "./sbom.js";
import { contextMaterials, imageStatement, type Statement } from "./provenance.js";

export interface ImageContents {
  name: string;
  sbom: Record<SbomFormat, string>;
  statement: Statement;
  /** For a node built in this run that replaced an earlier image: its package changes. */
  packages?: PackageDiff & { since: string };
}

/** The image each node to be built replaces (asked before the build: moving tags move after it). */
export async function imagesReplaced(docker: Pick<DockerTool, "listBakeImages">, project: string, plan: PlanEntry[]): Promise<Map<string, string>> {
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
export function imageSubject(config: Pick<BakeConfig, "project">, name: string, key: string, id: string, created: string, list: PackageList): SbomSubject {
  return { project: config.project, node: name, kind: "image", key, ids: [id], created, parts: [{ name, kind: "image", list }], bakeVersion: bakeVersion() };
}

export async function describeImages(
  pipeline: Pipeline,
  results: ImageResult[],
  docker: Pick<DockerTool, "inspectImage" | "readImageFiles" | "ping">,
  options: { replaced: Map<string, string>; run: { id: string; startedOn: string; finishedOn: string } },
): Promise<ImageContents[]> {
  if (!results.length) return [];
  const engine = await docker.ping();
  const versions = { bake: bakeVersion(), "docker-engine": engine.version };
  const out: ImageContents[] = [];
  for (const r of results) {
    const image = await docker.inspectImage(r.id);
    if (!image) continue;
    const list = await imagePackages(docker, pipeline.config.dir, r.id);
    const sbom = sbomDigests(imageSubject(pipeline.config, r.name, r.key, r.id, image.created, list));
    const node = pipeline.config.images.find((i) => i.name === r.name)!;
    // The inputs the image's own label holds: the ones its key was made of, whatever was deferred.
    const inputs = JSON.parse(image.labels[LABEL.inputs] ?? "{}");
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
      contextFiles: listing && node.context ? contextMaterials(pipeline.config.dir, node.context, listing.entries) : undefined,
      parent: parent ? { node: parent.name, id: parent.id, key: parent.key } : undefined,
      dockerfile: node.dockerfile ? relative(pipeline.config.dir, node.dockerfile) : undefined,
      args: node.args,
      sbom,
      versions,
      run: r.action === "built" ? options.run : undefined,
    });
    const contents: ImageContents = { name: r.name, sbom, statement };
    const before = options.replaced.get(r.name);
    if (r.action === "built" && before && before !== r.id) {
      const was = await imagePackages(docker, pipeline.config.dir, before);
      contents.packages = { since: before, ...diffPackages(was.packages, list.packages) };
    }
    out.push(contents);
  }
  return out;
}

function relative(dir: string, file: string): string {
  return file.startsWith(`${dir}/`) ? file.slice(dir.length + 1) : file;
}
