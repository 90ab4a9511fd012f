/** Retention, as `bake prune` and the nightly ask for it: AMIs (with their snapshots), local images and leftovers; a plan unless `yes`. */
import { existsSync, readdirSync, rmSync, statSync } from "node:fs";
import path from "node:path";
import { readPipeline, type Pipeline, type Tools } from "../state/read.js";
import { readManifest, type ManifestAmi } from "../state/manifest.js";
import {
  keysMarkedKeep,
  planAmiRetention,
  planAwsStageRetention,
  planImageRetention,
  planLeftovers,
  planStageRetention,
  planVmRetention,
  planVmStageRetention,
  type LeftoverState,
  type PruneDecision,
  type VmDiskFolder,
} from "./plan.js";
import { readVmRecord } from "../state/vm-record.js";
import { NoCredentialsError, type BakedAmi, type Ec2Tool } from "../tools/ec2.js";
import type { BakeImageRecord, DockerTool } from "../tools/docker.js";
import { amiBakeLock } from "../ami/bake-ami.js";
import { isLocked } from "../files/process-lock.js";
import { parentTagOwnerRunning } from "../state/parent-tags.js";
import { BOOT_OWNER_LABEL, bootOwnerRunning, removeNamespace } from "../host/boot-test.js";
import { interruption } from "../errors.js";
import { amiStages, stageNode, stagesOn } from "../graph/stages.js";
import { shortKey } from "../config/model.js";

export interface PruneOptions {
  file: string;
  yes: boolean;
  json: boolean;
  keepImages: number;
  /** An interrupt stops the removals between two items; none starts after it. */
  signal?: AbortSignal;
}

export interface PruneReport {
  decisions: PruneDecision[];
  removed: PruneDecision[];
  /** Removals that were tried and failed (each with its error); the others went on. */
  failed: PruneDecision[];
  notes: string[];
}

export async function runPrune(options: PruneOptions, tools: Tools): Promise<PruneReport> {
  const pipeline = await readPipeline({ file: options.file, target: "aws", everyImage: true }, tools);
  const { config } = pipeline;
  const manifest = readManifest(config.dir);
  const decisions: PruneDecision[] = [];
  const notes: string[] = [];

  const ec2 = config.amis.length ? tools.ec2() : undefined;
  if (ec2 && (await hasCredentials(ec2))) decisions.push(...(await planAws(pipeline, manifest.amis, ec2)));
  else if (ec2) notes.push("AWS AMIs not looked at: no AWS credentials");
  const docker = tools.docker();
  if (pipeline.state.images.ok)
    decisions.push(...planLocal(pipeline, pipeline.state.images.value, manifest.amis, options.keepImages));
  else notes.push(`local images not looked at: ${pipeline.state.images.reason}`);
  for (const ami of config.amis)
    decisions.push(...(await planVm(pipeline, ami.name, ami.retention.keep, manifest.amis)));
  decisions.push(...planLeftovers(await readLeftovers(pipeline, pipeline.state.images.ok ? docker : undefined)));

  const removed: PruneDecision[] = [];
  const failed: PruneDecision[] = [];
  if (options.yes) {
    for (const d of decisions.filter((x) => x.action === "remove")) {
      if (options.signal?.aborted) throw interruption(options.signal);
      // Each item on its own: one failure is reported and the others go on.
      try {
        if (await remove(d, pipeline, docker, ec2)) removed.push(d);
      } catch (e) {
        d.error = (e as Error).message;
        failed.push(d);
      }
    }
  }
  return { decisions, removed, failed, notes };
}

/**
 * Retention of the engine's images: each node's (keep the newest and the current key), each local
 * AMI's, and each AMI's host stages (kept while a kept AMI image was baked on one).
 */
function planLocal(
  pipeline: Pipeline,
  records: BakeImageRecord[],
  recordedAmis: Record<string, ManifestAmi>,
  keepImages: number,
): PruneDecision[] {
  const decisions: PruneDecision[] = [];
  for (const img of pipeline.config.images)
    decisions.push(
      ...planImageRetention(
        img.name,
        records.filter((r) => r.node === img.name),
        keepImages,
        pipeline.keys.get(img.name)?.key,
      ),
    );
  for (const ami of pipeline.config.amis) {
    const recorded = recordedAmis[ami.name]?.target === "local" ? recordedAmis[ami.name] : undefined;
    const amiImages = records.filter((r) => r.node === ami.name);
    const amiDecisions = planImageRetention(ami.name, amiImages, ami.retention.keep, recorded?.key).map((d) => ({
      ...d,
      kind: "ami" as const,
    }));
    decisions.push(...amiDecisions);
    // The stage below each AMI image kept, from the inputs the image was baked from (its labels).
    const keptOn = new Map<string, string>();
    for (const d of amiDecisions.filter((x) => x.action === "keep")) {
      const image = amiImages.find((r) => r.id === d.id);
      if (image?.inputs)
        keptOn.set(amiStages(ami, { key: image.key, inputs: image.inputs })[0].key, shortKey(image.key));
    }
    const below = stageNode(ami.name, "host");
    decisions.push(
      ...planStageRetention(
        below,
        records.filter((r) => r.node === below),
        keptOn,
        recorded?.stages?.[0]?.key,
      ),
    );
  }
  return decisions;
}

async function hasCredentials(ec2: Ec2Tool): Promise<boolean> {
  try {
    await ec2.checkCredentials();
    return true;
  } catch (e) {
    if (e instanceof NoCredentialsError) return false;
    throw e;
  }
}

/** Every region's copies are read first: a key marked bake:keep in one region is kept in all. */
async function planAws(
  pipeline: Pipeline,
  lastBaked: Record<string, { key: string; target: string }>,
  ec2: Ec2Tool,
): Promise<PruneDecision[]> {
  const { config } = pipeline;
  const decisions: PruneDecision[] = [];
  const inUse = new Map<string, Map<string, string>>();
  for (const ami of config.amis) {
    const current =
      pipeline.keys.get(ami.name)?.key ?? (lastBaked[ami.name]?.target === "aws" ? lastBaked[ami.name].key : undefined);
    const byRegion = new Map<string, BakedAmi[]>();
    for (const region of [ami.region, ...ami.copyTo])
      byRegion.set(region, await ec2.listBakedAmis(region, config.project, ami.name));
    const kept = keysMarkedKeep([...byRegion.values()].flat());
    for (const [region, amis] of byRegion) {
      if (!inUse.has(region)) inUse.set(region, await ec2.imagesInUse(region));
      const planned = planAmiRetention(ami.name, region, amis, ami.retention.keep, inUse.get(region)!, current, kept);
      for (const d of planned.filter((p) => p.action === "remove")) {
        const shared = await ec2.sharedWith(region, d.id);
        if (shared.length)
          d.warning = `shared with ${shared.join(", ")}: instances in those accounts are not visible here`;
      }
      decisions.push(...planned);
      // The host stage's AMIs (a staged bake's, in the AMI's region only): kept while a kept AMI stands on one.
      if (region === ami.region) {
        const below = stageNode(ami.name, "host");
        const keptOn = new Map(
          planned
            .filter((d) => d.action === "keep")
            .flatMap((d) => {
              const source = amis.find((a) => a.imageId === d.id)?.tags["bake:source-ami"];
              return source ? [[source, d.id] as const] : [];
            }),
        );
        decisions.push(
          ...planAwsStageRetention(
            below,
            region,
            await ec2.listBakedAmis(region, config.project, below),
            keptOn,
            inUse.get(region)!,
            stagesOn(ami, "aws", pipeline.keys.get(ami.name))?.[0].key,
          ),
        );
      }
      for (const o of await ec2.orphanedSnapshots(region, config.project, ami.name)) {
        decisions.push({
          kind: "snapshot",
          name: ami.name,
          where: region,
          id: o.snapshotId,
          key: o.key,
          created: o.created,
          action: "remove",
          reason: "its AMI was deregistered",
        });
      }
    }
  }
  return decisions;
}

async function readLeftovers(pipeline: Pipeline, docker: DockerTool | undefined): Promise<LeftoverState> {
  const bakeDir = path.join(pipeline.config.dir, ".bake");
  const folders = (sub: string) => {
    try {
      return readdirSync(path.join(bakeDir, sub), { withFileTypes: true })
        .filter((e) => e.isDirectory())
        .map((e) => path.join(bakeDir, sub, e.name));
    } catch {
      return [];
    }
  };
  const parentTags = docker
    ? [...new Set([...(await docker.listTags("bake-parent/*/*")), ...(await docker.listTags("bake-parent/*"))])].sort()
    : [];
  const bootCopies = await Promise.all(
    folders("vm").flatMap((vm) => {
      const [, ami, key12] = /^(.+)-([0-9a-f]{12})$/.exec(path.basename(vm)) ?? [];
      const copies = readdirSync(vm, { withFileTypes: true }).filter(
        (e) => e.isDirectory() && e.name.startsWith("boot-"),
      );
      return copies.map(async (e) => ({
        path: path.join(vm, e.name),
        inUse: ami ? await isLocked(amiBakeLock(pipeline.config.project, `${ami}-vm-${key12}`)) : false,
      }));
    }),
  );
  return {
    parentTags: parentTags.map((ref) => ({ ref, ownerRunning: parentTagOwnerRunning(ref) })),
    amiFolders: await Promise.all(
      folders("ami").map(async (p) => ({
        path: p,
        bytes: folderBytes(p),
        inUse: await isLocked(amiBakeLock(pipeline.config.project, p)),
      })),
    ),
    logRuns: folders("logs").map((p) => path.basename(p)),
    bootTests: docker ? await readBootTests(docker, pipeline.config.project) : [],
    bootCopies,
  };
}

/** The project's boot-test namespaces on the engine, each with whether its owner still runs on this machine. */
async function readBootTests(docker: DockerTool, project: string): Promise<NonNullable<LeftoverState["bootTests"]>> {
  const containers = await docker
    .listContainers({ "bake.project": project })
    .then((all) => all.filter((c) => c.labels["bake.namespace"]));
  const namespaces = [...new Set(containers.map((c) => c.labels["bake.namespace"]))].sort();
  return namespaces.map((namespace) => {
    const inside = containers.filter((c) => c.labels["bake.namespace"] === namespace);
    const owner = inside.map((c) => c.labels[BOOT_OWNER_LABEL]).find(Boolean);
    return { namespace, containers: inside.length, ownerRunning: bootOwnerRunning(owner) };
  });
}

/** The bytes under a folder; a file that vanishes meanwhile (a bake removing it) counts nothing. */
function folderBytes(dir: string): number {
  const size = (file: string) => statSync(file, { throwIfNoEntry: false })?.size ?? 0;
  try {
    return readdirSync(dir, { recursive: true, withFileTypes: true })
      .filter((e) => e.isFile())
      .reduce((n, e) => n + size(path.join(e.parentPath, e.name)), 0);
  } catch {
    return 0;
  }
}

/** An AMI's VM disks, then the host stage disks below them: a stage a kept disk stands on (its backing file) stays. */
async function planVm(
  pipeline: Pipeline,
  ami: string,
  keep: number,
  recorded: Record<string, ManifestAmi>,
): Promise<PruneDecision[]> {
  const last = recorded[ami]?.target === "vm" ? recorded[ami] : undefined;
  const disks = planVmRetention(ami, await readVmDisks(pipeline, ami), keep, last?.key);
  const keptOn = new Map<string, string>();
  for (const d of disks.filter((x) => x.action === "keep")) {
    const below = readVmRecord(d.id)?.below;
    if (below) keptOn.set(below.key, shortKey(d.key));
  }
  const below = stageNode(ami, "host");
  const stages = planVmStageRetention(below, await readVmDisks(pipeline, below), keptOn, last?.stages?.[0]?.key);
  return [...disks, ...stages];
}

/** The vm target's disk folders of one AMI (.bake/vm/<ami>-<key12>/). */
async function readVmDisks(pipeline: Pipeline, ami: string): Promise<VmDiskFolder[]> {
  const root = path.join(pipeline.config.dir, ".bake", "vm");
  const folders = existsSync(root)
    ? readdirSync(root).filter((f) =>
        new RegExp(`^${ami.replace(/[.*+?^${}()|[\]\\]/g, "\\$&")}-[0-9a-f]{12}$`).test(f),
      )
    : [];
  return Promise.all(
    folders.map(async (f) => {
      const dir = path.join(root, f);
      const record = readVmRecord(dir);
      const inUse = await isLocked(amiBakeLock(pipeline.config.project, `${ami}-vm-${f.slice(-12)}`));
      return {
        path: dir,
        key: record?.key,
        created: record?.created ?? statSync(dir).mtime.toISOString(),
        bytes: folderBytes(dir),
        inUse,
      };
    }),
  );
}

/** Removes one item; false when it turned out to be in use (the decision then says so). */
async function remove(
  d: PruneDecision,
  pipeline: Pipeline,
  docker: DockerTool,
  ec2: Ec2Tool | undefined,
): Promise<boolean> {
  if (d.kind === "vm") {
    // Checked again at removal: a bake of that key may have started since the plan was made.
    const [, ami, key12] = /^(.+)-([0-9a-f]{12})$/.exec(path.basename(d.id)) ?? [];
    if (ami && (await isLocked(amiBakeLock(pipeline.config.project, `${ami}-vm-${key12}`)))) {
      Object.assign(d, { action: "keep", reason: "a bake started using it" });
      return false;
    }
    rmSync(d.id, { recursive: true, force: true });
    return true;
  }
  if (d.kind === "leftover") {
    if (d.name === "parent tag") await docker.removeImage(d.id);
    else if (d.name === "boot test") await removeNamespace(docker, d.id);
    else if (d.name === "ami folder" && (await isLocked(amiBakeLock(pipeline.config.project, d.id)))) {
      Object.assign(d, { action: "keep", reason: "a bake started using it" });
      return false;
    } else
      rmSync(d.name === "logs" ? path.join(pipeline.config.dir, ".bake", "logs", d.id) : d.id, {
        recursive: true,
        force: true,
      });
    return true;
  }
  if (d.where === "local") {
    if (await docker.removeUnusedImage(d.id)) return true;
    Object.assign(d, { action: "keep", reason: "used by a container" });
    return false;
  }
  if (d.kind === "snapshot") {
    await ec2!.deleteSnapshot(d.where, d.id);
    return true;
  }
  await ec2!.deregister(d.where, d.id);
  // Every snapshot is tried: one that fails does not orphan the others.
  const errors: string[] = [];
  for (const snap of d.snapshots ?? [])
    await ec2!.deleteSnapshot(d.where, snap).catch((e: Error) => errors.push(`${snap}: ${e.message}`));
  if (errors.length) throw new Error(`deregistered, but snapshots were not deleted: ${errors.join("; ")}`);
  return true;
}
