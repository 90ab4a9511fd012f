/**
 * What a build leaves besides images: each image's package list, the digests of its SBOMs (for
 * the manifest), its provenance statement, and, for a rebuilt node, what changed in its packages
 * since the image it replaces.
 */
import { shortKey } from "../config/model.js";
import path from "node:path";
import type { AmiNode, BakeConfig } from "../config/model.js";
import { previousImage, type PlanEntry } from "../plan/plan.js";
import { currentImage, type Pipeline } from "../state/read.js";
import type { ImageResult } from "../images/node-build.js";
import { LABEL, type DockerTool } from "../tools/docker.js";
import { bakeVersion } from "../package-root.js";
import { diffPackages, imagePackages, readHostPackages, type PackageDiff, type PackageList } from "./packages.js";
import { sbomDigests, type SbomFormat, type SbomSubject } from "./sbom.js";
import { stagesOn } from "../graph/stages.js";
import { amiStatement, contextMaterials, imageStatement } from "./provenance.js";
import type { Statement } from "../state/provenance-file.js";
import { BakeError } from "../errors.js";
import { readManifest } from "../state/manifest.js";
import type { PackerTool } from "../tools/packer.js";
import { ansibleVersion } from "../tools/ansible.js";

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
  const read = async (r: ImageResult): Promise<ImageReading | undefined> => {
    const image = await docker.inspectImage(r.id);
    if (!image) return undefined;
    const list = await imagePackages(docker, pipeline.config.dir, r.id);
    const reading: ImageReading = {
      created: image.created,
      labels: image.labels,
      sbom: sbomDigests(imageSubject(pipeline.config, r.name, r.key, r.id, image.created, list)),
    };
    const before = replaced.get(r.name);
    if (r.action === "built" && before && before !== r.id) {
      const was = await imagePackages(docker, pipeline.config.dir, before);
      reading.packages = { since: before, ...diffPackages(was.packages, list.packages) };
    }
    return reading;
  };
  const add = (r: ImageResult): void => {
    if (unchanged(r) || readings.has(r.name)) return;
    const reading = queue.then(() => read(r));
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
      out.push({
        name: r.name,
        sbom: reading.sbom,
        statement,
        ...(reading.packages ? { packages: reading.packages } : {}),
      });
    }
    return out;
  };
  return { add, describe };
}

/** The stages an AMI was baked on, below itself, bottom first (none when it bakes in one run). */
export function stagesBelow(pipeline: Pipeline, ami: AmiNode): { name: string; node: string; key: string }[] {
  const stages = stagesOn(ami, pipeline.target, pipeline.keys.get(ami.name));
  return (stages ?? []).slice(0, -1).map(({ name, node, key }) => ({ name, node, key }));
}

/**
 * An AMI's SBOM subject: its host, as the bake that made it read the host's package databases
 * (kept by key; the local target's machine image can be read again), and the images it ships.
 */
export async function amiSubject(
  pipeline: Pipeline,
  ami: AmiNode,
  key: string,
  regions: Record<string, string>,
  docker: DockerTool,
): Promise<SbomSubject> {
  const dir = pipeline.config.dir;
  let host: (PackageList & { created?: string }) | undefined = readHostPackages(dir, ami.name, pipeline.target, key);
  let created = (host as { created?: string } | undefined)?.created;
  if (!host && pipeline.target === "local" && regions.local) {
    host = await imagePackages(docker, dir, regions.local);
    created = (await docker.inspectImage(regions.local))?.created;
  }
  if (!host)
    throw new BakeError(
      `${ami.name}: no package list of its host for key ${shortKey(key)} on the ${pipeline.target} target: bake ami reads it when it bakes the key on this machine (--force bakes it again)`,
    );
  const parts: SbomSubject["parts"] = [{ name: "host", kind: "host", list: host }];
  for (const shipped of [...new Set([...ami.preload, ...ami.services])]) {
    const found = currentImage(pipeline, shipped);
    if (!found)
      throw new BakeError(
        `${ami.name} ships ${shipped}, which has no image with its current key: run bake build ${shipped}`,
      );
    parts.push({
      name: shipped,
      kind: "image",
      key: pipeline.keys.get(shipped)!.key!,
      id: found.id,
      list: await imagePackages(docker, dir, found.id),
    });
  }
  const ids = Object.entries(regions).map(([where, id]) => (pipeline.target === "aws" ? `${where}:${id}` : id));
  const below = stagesBelow(pipeline, ami);
  return {
    project: pipeline.config.project,
    node: ami.name,
    kind: "ami",
    key,
    ids,
    created: created ?? new Date(0).toISOString(),
    parts,
    ...(below.length ? { stages: below.map(({ name, key: k }) => ({ name, key: k })) } : {}),
    bakeVersion: bakeVersion(),
  };
}

/** An AMI's SBOM digests and provenance statement, once it is baked (or found by its key). */
export async function describeAmi(
  pipeline: Pipeline,
  ami: AmiNode,
  key: string,
  regions: Record<string, string>,
  docker: DockerTool,
  options: { versions: Record<string, string>; run?: { id: string; startedOn: string; finishedOn: string } },
): Promise<{ sbom: Record<SbomFormat, string>; statement: Statement }> {
  const subject = await amiSubject(pipeline, ami, key, regions, docker);
  const sbom = sbomDigests(subject);
  const shipped = subject.parts
    .filter((p) => p.kind === "image")
    .map((p) => ({ node: p.name, key: p.key!, id: p.id! }));
  const statement = amiStatement({
    project: pipeline.config.project,
    node: ami.name,
    target: pipeline.target,
    key,
    regions,
    inputs: pipeline.keys.get(ami.name)!.inputs,
    shipped,
    stages: stagesBelow(pipeline, ami),
    sbom,
    versions: options.versions,
    run: options.run,
  });
  return { sbom, statement };
}

/**
 * The SBOM digests and provenance statements of what this bake made or found: the images it
 * built on its way and the AMI itself. An AMI whose host list this machine never read (found by
 * key, baked elsewhere) gets neither, and the run says so.
 */
export async function recordAmiContents(
  pipeline: Pipeline,
  ami: AmiNode,
  key: string,
  regions: Record<string, string>,
  baked: { built?: ImageResult[]; replaced?: Map<string, string>; startedOn?: string },
  tools: { docker: DockerTool; packer: PackerTool },
  runId: string,
  say: (l: string) => void,
) {
  const { docker } = tools;
  const finishedOn = new Date().toISOString();
  const built = baked.built ?? [];
  const images = await describeImages(pipeline, built, docker, {
    replaced: baked.replaced ?? new Map(),
    run: { id: runId, startedOn: baked.startedOn ?? finishedOn, finishedOn },
  });
  const statements = images.flatMap((c) => (c.statement ? [c.statement] : []));
  let sbom: Record<string, string> | undefined;
  const recorded = readManifest(pipeline.config.dir).amis[ami.name];
  if (
    !baked.startedOn &&
    recorded?.key === key &&
    recorded.target === pipeline.target &&
    recorded.sbom &&
    JSON.stringify(recorded.regions) === JSON.stringify(regions)
  ) {
    // Found by key as the manifest already describes it (a no-op run): nothing to read again.
    return { images: imageEntries(built, images), sbom: recorded.sbom, statements };
  }
  try {
    const versions = baked.startedOn ? await toolVersions(docker, tools.packer) : {};
    const amiContents = await describeAmi(pipeline, ami, key, regions, docker, {
      versions,
      run: baked.startedOn ? { id: runId, startedOn: baked.startedOn, finishedOn } : undefined,
    });
    sbom = amiContents.sbom;
    statements.push(amiContents.statement);
  } catch (e) {
    say(`no SBOM or provenance recorded: ${(e as Error).message}`);
  }
  return { images: imageEntries(built, images), sbom, statements };
}

/** The manifest's entries of the images a bake built or reused, with their SBOM digests. */
function imageEntries(
  built: ImageResult[],
  images: ImageContents[],
): Record<string, { key: string; id: string; tags: string[]; sbom?: Record<string, string> }> {
  return Object.fromEntries(
    built.map((b) => [
      b.name,
      {
        key: b.key,
        id: b.id,
        tags: b.tags,
        ...(images.find((c) => c.name === b.name) ? { sbom: images.find((c) => c.name === b.name)!.sbom } : {}),
      },
    ]),
  );
}

/** The versions of what made an AMI: bake, the engine, Packer and Ansible. */
export async function toolVersions(
  docker: { ping(): Promise<{ version: string }> },
  packer: PackerTool,
): Promise<Record<string, string>> {
  const [engine, packerVersion, ansible] = await Promise.all([
    docker.ping().catch(() => undefined),
    packer.version().catch(() => undefined),
    ansibleVersion().catch(() => undefined),
  ]);
  return {
    bake: bakeVersion(),
    ...(engine ? { "docker-engine": engine.version } : {}),
    ...(packerVersion ? { packer: packerVersion.text } : {}),
    ...(ansible ? { ansible } : {}),
  };
}
