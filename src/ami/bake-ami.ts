/**
 * Execute step of `bake render` and `bake ami`: render the folder Packer runs in, export the
 * shipped images, run Packer, and reconcile copies, shares and tags on EC2. The plan (read
 * step) decided whether any of it is needed.
 */
import { copyFileSync, mkdirSync, rmSync, writeFileSync } from "node:fs";
import { copyProvisioning } from "../graph/provisioning.js";
import path from "node:path";
import type { AmiNode } from "../config/model.js";
import { imageRepository, KEY_TAG_LENGTH, shippedImages } from "../config/model.js";
import { knownKeys, type Pipeline } from "../state/read.js";
import { BakeError, BuildFailedError, ToolFailedError, UsageError } from "../errors.js";
import { ansibleConfigFile } from "../graph/playbook-inputs.js";
import type { DockerTool } from "../tools/docker.js";
import type { Ec2Tool } from "../tools/ec2.js";
import type { PackerTool } from "../tools/packer.js";
import { needsRequiredPlugins } from "../tools/packer.js";
import { awsFailure } from "../tools/packer-output.js";
import { ansibleVars, amiTags, BAKE_VARS, GOSS_FOLDER, PRELOAD_ARCHIVE, sensitiveVariables, templateContext } from "./context.js";
import { readTemplates, renderTemplate } from "./render.js";
import { ENGINE_STANDIN } from "../host/standin.js";
import { unsafeExtraVars } from "../tools/ansible.js";
import { machineLock } from "../files/process-lock.js";
import type { Target } from "../graph/keys.js";
import { generateKey } from "../tools/ssh.js";
import { VM_FILES } from "../state/vm-record.js";

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
    throw new UsageError(`"${name}" is not an AMI in ${pipeline.config.file}${amis.length ? `: it defines ${amis.join(", ")}` : ""}`);
  }
  return node.ami;
}

/** Writes ami.pkr.hcl and bake-vars.yml into dir and formats them with `packer fmt`. */
export async function renderFolder(pipeline: Pipeline, ami: AmiNode, dir: string, packer: PackerTool, extra: { sourceAmi?: string; revision?: string }): Promise<RenderedFolder> {
  const version = await packer.version();
  const imageKeys = knownKeys(pipeline);
  const host = ami.local?.image;
  const hostRecord = host && pipeline.state.images.ok ? pipeline.state.images.value.find((r) => r.node === host && r.key === imageKeys.get(host)) : undefined;
  const hcl = renderTemplate(readTemplates(), templateContext({
    config: pipeline.config,
    ami,
    target: pipeline.target,
    key: pipeline.keys.get(ami.name)?.key,
    inputs: pipeline.keys.get(ami.name)?.inputs,
    imageKeys,
    baseImageId: hostRecord?.id ?? (host ? `${imageRepository(pipeline.config, host)}:${(imageKeys.get(host) ?? "unknown").slice(0, KEY_TAG_LENGTH)}` : undefined),
    sourceAmi: extra.sourceAmi,
    requiredPlugins: needsRequiredPlugins(version),
    outDir: dir,
    revision: extra.revision,
  }));
  mkdirSync(dir, { recursive: true });
  const hclFile = path.join(dir, "ami.pkr.hcl");
  writeFileSync(hclFile, hcl);
  writeFileSync(path.join(dir, BAKE_VARS), unsafeExtraVars(ansibleVars(pipeline.config, ami, pipeline.target, imageKeys)));
  // bake's own playbooks and roles (engine, agent, shipped images, services; the EC2 AMI tools), beside the HCL.
  copyProvisioning(dir);
  if (ami.test && pipeline.target === "aws") {
    mkdirSync(path.join(dir, GOSS_FOLDER), { recursive: true });
    copyFileSync(ami.test.spec, path.join(dir, GOSS_FOLDER, "goss.yaml"));
    if (ami.test.vars) copyFileSync(ami.test.vars, path.join(dir, GOSS_FOLDER, "vars.yaml"));
  }
  // The vm target's SSH key pair, of this folder only: Packer logs in with it, and the disk the
  // bake boots carries its public half.
  if (pipeline.target === "vm") await generateKey(path.join(dir, VM_FILES.key), `bake@${pipeline.config.project}-${ami.name}`);
  if (pipeline.target === "local") {
    for (const [file, text] of Object.entries(ENGINE_STANDIN)) {
      mkdirSync(path.dirname(path.join(dir, "host-standin", file)), { recursive: true });
      writeFileSync(path.join(dir, "host-standin", file), text);
    }
  }
  await packer.fmt(dir);
  return { dir, hclFile };
}

/**
 * Environment variables the rendered folder reads, which of their values are secret, and the
 * pass_env names taken out of Packer's environment (the host reads them at boot, never the bake).
 */
export function packerEnvironment(pipeline: Pipeline, ami: AmiNode, env = process.env): { missing: string[]; secrets: string[]; withheld: Record<string, undefined> } {
  const { sensitive, passEnv } = sensitiveVariables(ami, pipeline.config, pipeline.target);
  const missing = sensitive.filter((s) => s.env.startsWith("BAKE_X509_") && !env[s.env]).map((s) => s.env);
  const secrets = [...passEnv.map((p) => env[p]), env.AWS_SECRET_ACCESS_KEY, env.AWS_SESSION_TOKEN].filter((v): v is string => Boolean(v));
  return { missing, secrets, withheld: Object.fromEntries(passEnv.map((p) => [p, undefined])) };
}

export interface BakeResult {
  key: string;
  target: Target;
  regions: Record<string, string>;
  action: "existing" | "baked";
}

/** Exports the shipped images into the folder as one `docker save` archive. */
export async function exportImages(pipeline: Pipeline, ami: AmiNode, dir: string, docker: DockerTool, signal?: AbortSignal): Promise<void> {
  const refs = shippedImages(ami).map((n) => `${imageRepository(pipeline.config, n)}:${pipeline.keys.get(n)!.key!.slice(0, KEY_TAG_LENGTH)}`);
  const file = path.join(dir, PRELOAD_ARCHIVE);
  try {
    await docker.saveImages(refs, file, signal);
  } catch (e) {
    rmSync(file, { force: true });
    throw e;
  }
}

/**
 * Runs Packer in the project's folder (Ansible's working folder then), with ANSIBLE_CONFIG naming
 * the ansible.cfg the AMI's key covers (playbook-inputs.ts), so Ansible reads no other.
 */
export async function runPacker(ami: AmiNode, folder: RenderedFolder, packer: PackerTool, options: { projectDir: string; env?: Record<string, string | undefined>; secrets: string[]; force: boolean; signal?: AbortSignal; onLine: (line: string) => void; onRaw: (line: string) => void }): Promise<string[]> {
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
      const where = aws.step ? ` at "${aws.step}"${aws.task ? ` (task "${aws.task}")` : ""}${aws.instance ? ` on instance ${aws.instance}` : ""}` : "";
      const cleanup = [
        ...(aws.cleaned.length ? [`Packer cleaned up: ${aws.cleaned.join("; ")}`] : []),
        ...(aws.leftBehind.length ? [`left behind (remove it by hand): ${aws.leftBehind.join("; ")}`] : []),
      ];
      throw new BuildFailedError(ami.name, `${ami.name}: packer build failed${where}${e.exitCode !== undefined ? ` (exit ${e.exitCode})` : ""}${errors.length ? `: ${errors.at(-1)!.split("\n")[0]}` : ""}`, [errors.slice(-5).join("\n") || e.stderrTail, ...cleanup].join("\n"));
    }
    throw e;
  }
}

/** The local target's result: the committed image id Packer reported. */
export function localImageId(artifactIds: string[]): string {
  const id = artifactIds.find((a) => /^sha256:[0-9a-f]{64}$/.test(a));
  if (!id) throw new BakeError(`packer reported no image id (artifacts: ${artifactIds.join(", ")})`);
  return id;
}

/**
 * Makes the AMI whole on EC2: its tags in the home region, a tagged copy in every copy_to region
 * (found by key, else CopyImage and wait), and launch permission for share_with accounts.
 */
export async function reconcileAws(pipeline: Pipeline, ami: AmiNode, home: string, ec2: Ec2Tool, options: { sourceAmi?: string; revision?: string; signal?: AbortSignal; onLine: (l: string) => void }): Promise<Record<string, string>> {
  const key = pipeline.keys.get(ami.name)!.key!;
  const imageKeys = knownKeys(pipeline);
  const tags = amiTags({ config: pipeline.config, ami, key, imageKeys, sourceAmi: options.sourceAmi, revision: options.revision });
  const regions: Record<string, string> = { [ami.region]: home };
  await ec2.tagImage(ami.region, home, tags);
  for (const region of ami.copyTo) {
    // A copy carries its tags from creation; one an earlier run started under this name (before
    // copies were tagged at creation) is found by name. Either may still be pending: wait for it.
    const name = `${pipeline.config.project}-${ami.name}-${key.slice(0, KEY_TAG_LENGTH)}`;
    const existing = (await ec2.findAmiByKey(region, key)) ?? (await ec2.findOwnedByName(region, name));
    let copy = existing?.imageId;
    if (!copy) {
      options.onLine(`copying ${home} to ${region}`);
      copy = await ec2.copyImage({ region: ami.region, imageId: home }, region, name, tags);
    }
    await ec2.waitAvailable(region, copy, 60 * 60_000, options.signal);
    if (!existing || existing.tags["bake:key"] !== key) await ec2.tagImage(region, copy, tags);
    regions[region] = copy;
  }
  if (ami.shareWith.length) {
    for (const [region, id] of Object.entries(regions)) {
      const added = await ec2.shareImage(region, id, ami.shareWith);
      if (added.length) options.onLine(`shared ${id} in ${region} with ${added.join(", ")}`);
    }
  }
  return regions;
}

