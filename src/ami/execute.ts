/**
 * Execute step of `bake ami` once the plan says bake: one bake per key at a time (the machine's
 * lock, and on AWS the account's lease), then build what the AMI ships, export it, run Packer,
 * reconcile on EC2 or boot-test the local host.
 */
import { rmSync } from "node:fs";
import path from "node:path";
import { KEY_TAG_LENGTH, type AmiNode } from "../config/model.js";
import type { Pipeline, Tools } from "../state/read.js";
import { BuildFailedError } from "../errors.js";
import type { Target } from "../graph/keys.js";
import type { PlanEntry } from "../plan/plan.js";
import { executeBuild } from "../images/execute.js";
import type { RunLogs } from "../state/logs.js";
import { amiBakeLock, exportImages, localImageId, packerEnvironment, reconcileAws, renderFolder, runPacker } from "./bake-ami.js";
import { AWS_CONNECTION_ENV, DOCKER_SOCKET_ENV, HOST_PACKAGES_ARCHIVE, PRELOAD_ARCHIVE } from "./context.js";
import { keepHostPackages } from "../sbom/packages.js";
import { ec2Endpoint } from "../tools/ec2.js";
import { acquireLease, leasePrefix } from "./lease.js";
import { bootPassEnv, bootTestLocal, checkHostImage } from "../host/local-host.js";
import type { BootReport } from "../host/boot-test.js";
import type { PackerTool } from "../tools/packer.js";
import { amiIdsByRegion } from "../tools/packer-output.js";
import { gitInfo } from "../tools/git.js";
import { withLock } from "../files/process-lock.js";
import { GOSS_ENV, requireGoss } from "../tools/goss.js";
import { ACCELERATOR_ENV } from "../tools/qemu.js";
import { keepAndBootVm, keepSerialLog, prepareVm } from "../host/vm-host.js";
import type { DockerTool } from "../tools/docker.js";
import type { RenderedFolder } from "./bake-ami.js";
import { PACKER_DISK } from "../host/vm-disk.js";
import { findVmDisk } from "../state/vm-record.js";

export interface BakeRun {
  target: Target;
  key: string;
  dir: string;
  plan: PlanEntry[];
  packer: PackerTool;
  force: boolean;
  bootTest: boolean;
  local?: { engineSocket: string };
  sourceAmi?: string;
  revision?: string;
  signal: AbortSignal;
  /** Aborts when another bake took this key's lock over: nothing the lock guards is touched after. */
  lockLost?: AbortSignal;
  logs: RunLogs;
  say: (line: string) => void;
}

export interface BakeOutcome {
  regions: Record<string, string>;
  /** "existing": another bake finished this key while this one waited for it. */
  action: "baked" | "existing";
  images: Record<string, { key: string; id: string; tags: string[] }>;
  /** The images this bake built or reused on its way (their SBOMs and statements go to the manifest). */
  built?: Built;
  boot?: BootReport;
}

type Built = Awaited<ReturnType<typeof executeBuild>>;

function imagesOf(built: Built): BakeOutcome["images"] {
  return Object.fromEntries(built.map((r) => [r.name, { key: r.key, id: r.id, tags: r.tags }]));
}

/** The shipped images into the folder, then Packer; the archive is not kept past the run (it is the size of every shipped image). */
async function exportAndRunPacker(pipeline: Pipeline, ami: AmiNode, run: BakeRun, docker: DockerTool, folder: RenderedFolder, env: Record<string, string | undefined>, secrets: string[]): Promise<string[]> {
  try {
    run.say("exporting the shipped images");
    await exportImages(pipeline, ami, run.dir, docker, run.signal);
    run.say(`packer build ${folder.dir}`);
    return await runPacker(ami, folder, run.packer, { projectDir: pipeline.config.dir, env, secrets, force: run.force, signal: run.signal, onLine: run.say, onRaw: (l) => run.logs.line(`${ami.name}.packer`, l) });
  } finally {
    rmSync(path.join(run.dir, PRELOAD_ARCHIVE), { force: true });
  }
}

/**
 * The vm target: the bake's disk, Packer's qemu run, the disk kept and boot-tested (host/vm-host.ts).
 * The rendered folder holds the disk Packer started from, the kernel and the key: it is removed
 * whatever happens, its serial console log kept with the run's logs.
 */
async function bakeVm(pipeline: Pipeline, ami: AmiNode, run: BakeRun, docker: DockerTool, folder: RenderedFolder, built: Built, packerEnv: { secrets: string[]; withheld: Record<string, undefined>; passEnv: Record<string, string> }): Promise<BakeOutcome> {
  try {
    const accel = await prepareVm(pipeline, ami, run.dir, { step: run.say, line: run.say }, run.signal);
    const env = { ...packerEnv.withheld, [ACCELERATOR_ENV]: accel.accelerator, PACKER_CACHE_DIR: path.join(run.dir, "packer_cache") };
    try {
      await exportAndRunPacker(pipeline, ami, run, docker, folder, env, packerEnv.secrets);
    } finally {
      rmSync(path.join(run.dir, PACKER_DISK), { force: true });
    }
    await keepHostPackages(pipeline.config.dir, ami.name, run.target, run.key, path.join(run.dir, HOST_PACKAGES_ARCHIVE), `vm:${ami.name}-${run.key.slice(0, KEY_TAG_LENGTH)}`);
    const { record, boot } = await keepAndBootVm(pipeline, ami, run.dir, { accel, bootTest: run.bootTest, passEnv: packerEnv.passEnv, signal: run.signal, lockLost: run.lockLost, onLine: run.say, logsDir: run.logs.dir });
    return { regions: { vm: path.relative(pipeline.config.dir, path.join(record.dir, record.disk)) }, action: "baked", images: imagesOf(built), built, boot };
  } finally {
    keepSerialLog(path.join(run.dir, "serial.log"), run.logs.dir, `${ami.name}.packer-serial.log`);
    if (!run.lockLost?.aborted) rmSync(run.dir, { recursive: true, force: true });
  }
}

/** Holds the key's lock (and lease), looks again for the key, and bakes only when it is still missing. */
export async function bakeOnce(pipeline: Pipeline, ami: AmiNode, tools: Tools, run: BakeRun): Promise<BakeOutcome> {
  const key12 = run.key.slice(0, KEY_TAG_LENGTH);
  return withLock(amiBakeLock(pipeline.config.project, run.dir), async (lost) => {
    // A lock taken over stops the bake as an interrupt would, but the folder and disks the lock
    // guards are the new holder's: the clean-ups below leave them (run.lockLost).
    run = { ...run, signal: AbortSignal.any([run.signal, lost]), lockLost: lost };
    try {
      return await bakeHeld(pipeline, ami, tools, run, key12);
    } catch (e) {
      if (lost.aborted) throw lost.reason;
      throw e;
    }
  }, { signal: run.signal, onWait: (holder) => run.say(`waiting for key ${key12}: ${holder} is baking it`) });
}

/** With the key's lock held: the AWS lease, a last look for the key, then the bake. */
async function bakeHeld(pipeline: Pipeline, ami: AmiNode, tools: Tools, run: BakeRun, key12: string): Promise<BakeOutcome> {
  const lease = run.target === "aws"
    ? await acquireLease(tools.ec2(), ami.region, leasePrefix(pipeline.config.project, ami.name, key12), { signal: run.signal, onWait: run.say, onLost: run.say })
    : undefined;
  try {
    const meanwhile = run.force ? undefined : await findBaked(pipeline, ami, run.key, run.target, tools);
    if (meanwhile) {
      run.say(`another bake finished key ${key12} while this one waited: ${meanwhile}`);
      const regions = run.target === "aws" ? await reconcileAws(pipeline, ami, meanwhile, tools.ec2(), { sourceAmi: run.sourceAmi, revision: run.revision, signal: run.signal, onLine: run.say }) : { [run.target]: meanwhile };
      return { regions, action: "existing", images: {} };
    }
    return await bake(pipeline, ami, tools, run);
  } finally {
    await lease?.release().catch((e: Error) => run.say(`the AWS lease ${lease.name} was not released (it expires by itself): ${e.message}`));
  }
}

async function findBaked(pipeline: Pipeline, ami: AmiNode, key: string, target: Target, tools: Tools): Promise<string | undefined> {
  if (target === "aws") return (await tools.ec2().findAmiByKey(ami.region, key))?.imageId;
  if (target === "vm") {
    const found = findVmDisk(pipeline.config.dir, ami.name, key);
    return found ? path.relative(pipeline.config.dir, path.join(found.dir, found.disk)) : undefined;
  }
  return (await tools.docker().listBakeImages(pipeline.config.project)).find((r) => r.node === ami.name && r.key === key)?.id;
}

async function bake(pipeline: Pipeline, ami: AmiNode, tools: Tools, run: BakeRun): Promise<BakeOutcome> {
  const { local, say, logs } = run;
  // The AMI's test runs after the Packer run (or as its last step): without goss, stop now.
  if (ami.test) requireGoss();
  const { secrets, withheld } = packerEnvironment(pipeline, ami);
  // The boot test hands the host its pass_env values as user-data would: all must be set (exit 2), before anything builds.
  const passEnv = (local || run.target === "vm") && run.bootTest ? bootPassEnv(pipeline, ami) : {};
  const docker = tools.docker();
  const built = await executeBuild(pipeline, run.plan.filter((e) => e.kind === "image"), docker, () => gitInfo(pipeline.config.dir), logs, {
    noCache: false,
    push: false,
    concurrency: 2,
    tags: [],
    signal: run.signal,
    plain: Boolean(process.env.CI) || !process.stderr.isTTY,
  });
  const state = pipeline.state.images.ok ? pipeline.state.images.value : [];
  for (const r of built) if (!state.some((s) => s.id === r.id)) state.push({ id: r.id, tags: r.tags, node: r.name, key: r.key, created: Date.now() / 1000 });
  if (local) await checkHostImage(pipeline, ami, docker);
  rmSync(run.dir, { recursive: true, force: true });
  const folder = await renderFolder(pipeline, ami, run.dir, run.packer, { sourceAmi: run.sourceAmi, revision: run.revision });
  if (run.target === "vm") return bakeVm(pipeline, ami, run, docker, folder, built, { secrets, withheld, passEnv });
  const targetEnv = local ? { [DOCKER_SOCKET_ENV]: local.engineSocket } : { [AWS_CONNECTION_ENV.ec2Endpoint]: ec2Endpoint() ?? "", ...(ami.test ? { [GOSS_ENV]: requireGoss() } : {}) };
  const ids = await exportAndRunPacker(pipeline, ami, run, docker, folder, { ...withheld, ...targetEnv }, secrets);
  const images = imagesOf(built);
  let regions: Record<string, string>;
  if (run.target === "aws") {
    const baked = amiIdsByRegion(ids.join(","))[ami.region];
    if (!baked) throw new BuildFailedError(ami.name, `${ami.name}: packer reported no AMI in ${ami.region} (artifacts: ${ids.join(", ")})`);
    await keepHostPackages(pipeline.config.dir, ami.name, run.target, run.key, path.join(run.dir, HOST_PACKAGES_ARCHIVE), `${ami.region}:${baked}`);
    regions = await reconcileAws(pipeline, ami, baked, tools.ec2(), { sourceAmi: run.sourceAmi, revision: run.revision, signal: run.signal, onLine: say });
  } else {
    regions = { local: localImageId(ids) };
    await keepHostPackages(pipeline.config.dir, ami.name, run.target, run.key, path.join(run.dir, HOST_PACKAGES_ARCHIVE), regions.local);
  }
  const boot = local && run.bootTest ? await bootTestLocal(pipeline, ami, regions.local, docker, { ...local, passEnv, signal: run.signal, onLine: say }) : undefined;
  return { regions, action: "baked", images, built, boot };
}
