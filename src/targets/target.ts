/**
 * What every AMI target does, behind one interface: `aws` (Packer's amazon builders), `local` (a
 * systemd host in a container of the local engine) and `vm` (a QEMU disk). The AMI's run
 * (ami-bake/) holds the key's lock, builds the shipped images and renders nothing itself: it asks
 * the target of the run for each step. A new target is one module beside these that implements
 * AmiTarget (with its part of the template and its Packer source partial in packer/partials/),
 * and one line in the table of targets/index.ts.
 */
import { rmSync } from "node:fs";
import path from "node:path";
import type { AmiNode } from "../config/model.js";
import type { Target } from "../graph/keys.js";
import type { Stage } from "../graph/stages.js";
import type { PlanEntry } from "../plan/plan.js";
import type { Pipeline, Tools } from "../state/read.js";
import type { RunLogs } from "../state/logs.js";
import type { DockerTool } from "../tools/docker.js";
import type { PackerTool } from "../tools/packer.js";
import type { BootReport } from "../host/boot-test.js";
import type { ImageResult } from "../images/node-build.js";
import { exportImages, runPacker, type RenderedFolder } from "../ami/bake-ami.js";
import { HOST_PACKAGES_ARCHIVE, PRELOAD_ARCHIVE, type PackerVariable } from "../ami/context.js";
import { keepHostPackages } from "../sbom/host-packages.js";

/** One bake of one key, as the AMI's run hands it to its target. */
export interface BakeRun {
  target: Target;
  key: string;
  /** The folder Packer runs in (ami/bake-ami.ts amiWorkDir). */
  dir: string;
  plan: PlanEntry[];
  packer: PackerTool;
  force: boolean;
  bootTest: boolean;
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
  built?: ImageResult[];
  boot?: BootReport;
}

/** What a target's bake receives: the shipped images are built and the folder is rendered. */
export interface TargetBake {
  pipeline: Pipeline;
  ami: AmiNode;
  run: BakeRun;
  tools: Tools;
  docker: DockerTool;
  folder: RenderedFolder;
  built: ImageResult[];
  /** Secret values to redact, pass_env names withheld from Packer, and the boot test's pass_env values. */
  env: { secrets: string[]; withheld: Record<string, undefined>; passEnv: Record<string, string> };
}

export interface Reconciling {
  sourceAmi?: string;
  revision?: string;
  signal?: AbortSignal;
  onLine: (line: string) => void;
}

export interface AmiTarget {
  readonly name: Target;
  /** Whether a bake ends with a boot test on this machine: its pass_env values must then be set before anything builds. */
  readonly bootsHere: boolean;
  /** What this target needs the AMI to name, and of this machine: a config or usage error (exit 2) otherwise. `bake render` checks it too. */
  needs(ami: AmiNode): void;
  /**
   * The rendered HCL's variables read from Packer's environment: `sensitive` (paths and sockets of
   * this machine, never shown) and `machine` (where Packer reaches things here).
   */
  variables(ami: AmiNode): { sensitive: PackerVariable[]; machine: PackerVariable[] };
  /** Before a bake reads further: what the account must allow (AWS: credentials, the regions named). */
  ready?(pipeline: Pipeline, ami: AmiNode, tools: Tools): Promise<void>;
  /** Where the AMI of this key is (an AMI id, an image id, a disk's path), if it exists. */
  find(pipeline: Pipeline, ami: AmiNode, key: string, tools: Tools): Promise<string | undefined>;
  /** An AMI found by its key, made whole: its id per region (on AWS its tags, copies and shares first). */
  whole(
    pipeline: Pipeline,
    ami: AmiNode,
    found: string,
    tools: Tools,
    options: Reconciling,
  ): Promise<Record<string, string>>;
  /** Held around one bake of a key besides this machine's lock (AWS: a lease in the account). */
  hold?(
    pipeline: Pipeline,
    ami: AmiNode,
    key: string,
    tools: Tools,
    options: { signal: AbortSignal; say: (l: string) => void },
  ): Promise<{ name: string; release: () => Promise<void> }>;
  /** Once the shipped images are built, before anything is rendered: what they must hold (the local host image boots systemd). */
  checkBuilt?(pipeline: Pipeline, ami: AmiNode, docker: DockerTool): Promise<void>;
  /** The folder Packer runs in: what every target renders (ami/bake-ami.ts renderFolder) and this target's own files. */
  render(
    pipeline: Pipeline,
    ami: AmiNode,
    dir: string,
    packer: PackerTool,
    extra: { sourceAmi?: string; revision?: string },
  ): Promise<RenderedFolder>;
  /** Packer's run and what follows it on this target: the AMI's id per region, the boot test's report. */
  bake(b: TargetBake): Promise<BakeOutcome>;
  /** What the manifest records of this target's AMI beside its regions (the vm target: its disk). */
  recorded?(pipeline: Pipeline, ami: AmiNode, key: string): Record<string, unknown>;
}

export function imagesOf(built: ImageResult[]): BakeOutcome["images"] {
  return Object.fromEntries(built.map((r) => [r.name, { key: r.key, id: r.id, tags: r.tags }]));
}

/** One stage of a staged bake as a target runs it: its folder and the images it ships. */
export interface StageRun {
  name: string;
  folder: RenderedFolder;
  images: string[];
  /** The images of the stage below: the archive leaves out their layers (the host holds them). */
  below?: string[];
}

/**
 * The shipped images into the folder (a stage's, on a staged bake), then Packer; the archive is
 * not kept past the run (it is the size of every image it holds).
 */
export async function exportAndRunPacker(
  b: TargetBake,
  env: Record<string, string | undefined>,
  stage?: StageRun,
): Promise<string[]> {
  const { pipeline, ami, run } = b;
  const folder = stage?.folder ?? b.folder;
  try {
    run.say(`${stage ? `stage ${stage.name}: ` : ""}exporting the shipped images`);
    await exportImages(pipeline, ami, folder.dir, b.docker, run.signal, stage?.images, stage?.below);
    run.say(`${stage ? `stage ${stage.name}: ` : ""}packer build ${folder.dir}`);
    return await runPacker(ami, folder, run.packer, {
      projectDir: pipeline.config.dir,
      env,
      secrets: b.env.secrets,
      force: run.force,
      signal: run.signal,
      onLine: run.say,
      onRaw: (l) =>
        run.logs.line(`${ami.name}.${stage && stage.name !== "release" ? `${stage.name}-stage.` : ""}packer`, l),
    });
  } finally {
    rmSync(path.join(folder.dir, PRELOAD_ARCHIVE), { force: true });
  }
}

/**
 * The host's package list Packer wrote into the folder, kept under the AMI's key (or, for a host
 * stage, the stage's node and key) with where it was read (`source`).
 */
export async function keepPackagesOf(
  b: TargetBake,
  source: string,
  stage?: Pick<Stage, "node" | "key">,
  /** The folder Packer downloaded the list into: the bake's, or its release stage's. */
  dir = b.run.dir,
): Promise<void> {
  const { pipeline, ami, run } = b;
  await keepHostPackages(
    pipeline.config.dir,
    stage?.node ?? ami.name,
    run.target,
    stage?.key ?? run.key,
    path.join(dir, HOST_PACKAGES_ARCHIVE),
    source,
  );
}
