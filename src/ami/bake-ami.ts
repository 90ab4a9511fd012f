/**
 * What every AMI target shares in `bake render` and `bake ami`: the folder Packer runs in, the
 * shipped images exported into it, Packer's run and its failures told. The plan (read step)
 * decided whether any of it is needed; each target (targets/) adds what is its own.
 */
import { mkdirSync, rmSync, writeFileSync } from "node:fs";
import { copyProvisioning } from "../graph/provisioning.js";
import path from "node:path";
import type { AmiNode } from "../config/model.js";
import { imageRepository, KEY_TAG_LENGTH, shippedImages } from "../config/model.js";
import { knownKeys, type Pipeline } from "../state/read.js";
import { BuildFailedError, ToolFailedError, UsageError } from "../errors.js";
import { ansibleConfigFile } from "../graph/playbook-inputs.js";
import type { DockerTool } from "../tools/docker.js";
import type { PackerTool } from "../tools/packer.js";
import { needsRequiredPlugins } from "../tools/packer.js";
import { awsFailure } from "../tools/packer-output.js";
import {
  ansibleVars,
  BAKE_VARS,
  PRELOAD_ARCHIVE,
  passEnvNames,
  type PackerVariable,
  templateContext,
  type TargetTemplatePart,
} from "./context.js";
import { readTemplates, renderTemplate } from "./render.js";
import { unsafeExtraVars } from "../tools/ansible.js";
import { machineLock } from "../files/process-lock.js";
import type { Stage } from "../graph/stages.js";

export interface RenderedFolder {
  dir: string;
  hclFile: string;
}

/** The folder a bake renders into and exports the shipped images to: one per AMI, target and key. */
export function amiWorkDir(projectDir: string, ami: string, target: string, key: string): string {
  return path.join(projectDir, ".bake", "ami", `${ami}-${target}-${key.slice(0, KEY_TAG_LENGTH)}`);
}

/** The lock a bake holds on its folder (and key) while it runs: one bake per key on this machine. */
export function amiBakeLock(project: string, workDir: string): string {
  return machineLock(`ami-${project}-${path.basename(workDir)}`);
}

export function amiNodeOf(pipeline: Pipeline, name: string): AmiNode {
  const node = pipeline.graph.byName.get(name);
  if (!node || node.kind !== "ami") {
    const amis = pipeline.config.amis.map((a) => a.name);
    throw new UsageError(
      `"${name}" is not an AMI in ${pipeline.config.file}${amis.length ? `: it defines ${amis.join(", ")}` : ""}`,
    );
  }
  return node.ami;
}

/**
 * Writes ami.pkr.hcl, bake-vars.yml and bake's own provisioning into dir and formats them with
 * `packer fmt`: what every target renders. Each target adds its own files (targets/<name>.ts render).
 */
export async function renderFolder(
  pipeline: Pipeline,
  ami: AmiNode,
  dir: string,
  packer: PackerTool,
  extra: { sourceAmi?: string; revision?: string },
  /** The target's own part of the template (targets/<name>.ts). */
  part: TargetTemplatePart,
  /** A staged bake: the stage this folder bakes. */
  staged?: { stage: Stage },
): Promise<RenderedFolder> {
  const version = await packer.version();
  const imageKeys = knownKeys(pipeline);
  const host = ami.local?.image;
  const hostRecord =
    host && pipeline.state.images.ok
      ? pipeline.state.images.value.find((r) => r.node === host && r.key === imageKeys.get(host))
      : undefined;
  const hcl = renderTemplate(
    readTemplates(),
    templateContext(
      {
        config: pipeline.config,
        ami,
        target: pipeline.target,
        key: pipeline.keys.get(ami.name)?.key,
        inputs: pipeline.keys.get(ami.name)?.inputs,
        imageKeys,
        baseImageId:
          hostRecord?.id ??
          (host
            ? `${imageRepository(pipeline.config, host)}:${(imageKeys.get(host) ?? "unknown").slice(0, KEY_TAG_LENGTH)}`
            : undefined),
        sourceAmi: extra.sourceAmi,
        requiredPlugins: needsRequiredPlugins(version),
        outDir: dir,
        revision: extra.revision,
        stage: staged?.stage,
      },
      part,
    ),
  );
  mkdirSync(dir, { recursive: true });
  const hclFile = path.join(dir, "ami.pkr.hcl");
  writeFileSync(hclFile, hcl);
  writeFileSync(
    path.join(dir, BAKE_VARS),
    unsafeExtraVars(ansibleVars(pipeline.config, ami, pipeline.target, imageKeys, staged?.stage)),
  );
  // bake's own playbooks and roles (engine, agent, shipped images, services; the EC2 AMI tools), beside the HCL.
  copyProvisioning(dir);
  await packer.fmt(dir);
  return { dir, hclFile };
}

/**
 * Environment variables the rendered folder reads, which of their values are secret, and the
 * pass_env names taken out of Packer's environment (the host reads them at boot, never the bake).
 */
export function packerEnvironment(
  pipeline: Pipeline,
  ami: AmiNode,
  sensitive: PackerVariable[],
  env = process.env,
): { secrets: string[]; withheld: Record<string, undefined> } {
  const passEnv = passEnvNames(ami, pipeline.config);
  const secrets = [...passEnv.map((p) => env[p]), env.AWS_SECRET_ACCESS_KEY, env.AWS_SESSION_TOKEN].filter(
    (v): v is string => Boolean(v),
  );
  return { secrets, withheld: Object.fromEntries(passEnv.map((p) => [p, undefined])) };
}

/** The target's variables that must be set and are not: one usage error naming each and what it is. */
export function requireVariables(ami: AmiNode, variables: PackerVariable[], before = "", env = process.env): void {
  const missing = variables.filter((v) => v.required && !env[v.env]);
  if (missing.length)
    throw new UsageError(
      `${ami.name}: set ${missing.map((v) => v.env).join(" and ")} (${[...new Set(missing.map((v) => v.required))].join("; ")})${before}`,
    );
}

/**
 * Exports the shipped images (a stage's, on a staged bake) into the folder as one `docker save`
 * archive; above the host stage, without the layers the stage below already holds.
 */
export async function exportImages(
  pipeline: Pipeline,
  ami: AmiNode,
  dir: string,
  docker: DockerTool,
  signal?: AbortSignal,
  images: string[] = shippedImages(ami),
  /** The images of the stage below: their layers are left out (the host holds them). */
  below: string[] = [],
): Promise<void> {
  const ref = (n: string) =>
    `${imageRepository(pipeline.config, n)}:${pipeline.keys.get(n)!.key!.slice(0, KEY_TAG_LENGTH)}`;
  const refs = images.map(ref);
  const file = path.join(dir, PRELOAD_ARCHIVE);
  try {
    // A stage that ships no image still hands the host an archive: an empty tar (two zero blocks).
    if (!refs.length) writeFileSync(file, Buffer.alloc(1024));
    else await docker.saveImages(refs, file, signal, below.map(ref));
  } catch (e) {
    rmSync(file, { force: true });
    throw e;
  }
}

/**
 * Runs Packer in the project's folder (Ansible's working folder then), with ANSIBLE_CONFIG naming
 * the ansible.cfg the AMI's key covers (playbook-inputs.ts), so Ansible reads no other.
 */
export async function runPacker(
  ami: AmiNode,
  folder: RenderedFolder,
  packer: PackerTool,
  options: {
    projectDir: string;
    env?: Record<string, string | undefined>;
    secrets: string[];
    force: boolean;
    signal?: AbortSignal;
    onLine: (line: string) => void;
    onRaw: (line: string) => void;
  },
): Promise<string[]> {
  const errors: string[] = [];
  const said: string[] = [];
  // bake's own playbooks name their own ansible.cfg in their provisioners (ansible.hbs).
  const ansibleConfig = ami.playbook ? ansibleConfigFile(ami.playbook, options.projectDir) : undefined;
  try {
    const artifacts = await packer.build(folder.dir, {
      cwd: options.projectDir,
      env: { ...options.env, ...(ansibleConfig ? { ANSIBLE_CONFIG: ansibleConfig } : {}) },
      secrets: options.secrets,
      force: options.force,
      signal: options.signal,
      onRaw: options.onRaw,
      onLine: (l) => {
        if (l.startsWith("ERROR: ")) errors.push(l.slice(7));
        said.push(l);
        options.onLine(l);
      },
    });
    if (!artifacts.length) throw new BuildFailedError(ami.name, `${ami.name}: packer reported no artifact`);
    return artifacts.map((a) => a.id);
  } catch (e) {
    if (e instanceof ToolFailedError) {
      // On AWS: the step, the instance, and what Packer's clean-up removed or could not.
      const aws = awsFailure(said);
      const where = aws.step
        ? ` at "${aws.step}"${aws.task ? ` (task "${aws.task}")` : ""}${aws.instance ? ` on instance ${aws.instance}` : ""}`
        : "";
      const cleanup = [
        ...(aws.cleaned.length ? [`Packer cleaned up: ${aws.cleaned.join("; ")}`] : []),
        ...(aws.leftBehind.length ? [`left behind (remove it by hand): ${aws.leftBehind.join("; ")}`] : []),
      ];
      throw new BuildFailedError(
        ami.name,
        `${ami.name}: packer build failed${where}${e.exitCode !== undefined ? ` (exit ${e.exitCode})` : ""}${errors.length ? `: ${errors.at(-1)!.split("\n")[0]}` : ""}`,
        [errors.slice(-5).join("\n") || e.stderrTail, ...cleanup].join("\n"),
      );
    }
    throw e;
  }
}
