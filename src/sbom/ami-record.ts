/**
 * What an AMI's bake records besides the AMI: its SBOM subject (the host's package list and the
 * images it ships), its provenance statement with the stages it was built on, and those of the
 * images the bake built on its way.
 */
import { shortKey } from "../config/model.js";
import type { AmiNode } from "../config/model.js";
import { currentImage, type Pipeline } from "../state/read.js";
import type { ImageResult } from "../images/node-build.js";
import type { DockerTool } from "../tools/docker.js";
import { bakeVersion } from "../package-root.js";
import { imagePackages, type PackageList } from "./packages.js";
import { readHostPackages } from "./host-packages.js";
import { sbomDigests, type SbomFormat, type SbomSubject } from "./sbom.js";
import { stagesOn } from "../graph/stages.js";
import { amiStatement } from "./provenance.js";
import type { Statement } from "../state/provenance-file.js";
import { BakeError } from "../errors.js";
import { readManifest } from "../state/manifest.js";
import type { PackerTool } from "../tools/packer.js";
import { ansibleVersion } from "../tools/ansible.js";
import { describeImages, type ImageContents } from "./record.js";

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

/** What a bake hands the AMI's record of contents: what it built, what it replaced, when it started, the tools' versions. */
export interface BakedContents {
  built?: ImageResult[];
  replaced?: Map<string, string>;
  startedOn?: string;
  /** The tools' versions, when they were read while the bake ran. */
  versions?: Promise<Record<string, string>>;
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
  baked: BakedContents,
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
    const versions = baked.startedOn ? await (baked.versions ?? toolVersions(docker, tools.packer)) : {};
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
