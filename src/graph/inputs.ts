/** Reads the inputs of every node (files, Dockerfiles, playbooks) and digests them. */
import path from "node:path";
import pLimit from "p-limit";
import type { AmiNode, BakeConfig, ImageNode, TestSpec } from "../config/model.js";
import { contextDigest, hashFile, listContext, type ContextListing } from "./context-files.js";
import { ansibleInputs } from "./playbook-inputs.js";
import { ANSIBLE_INPUT, ROOTFS_TIDY, digestOf, type InputDigests } from "./keys.js";
import { readTemplates } from "./templates.js";
import { ec2AmiToolsDigest, hostProvisioningDigest } from "./provisioning.js";
import { vmDiskDigest } from "./vm-disk-spec.js";
import { VM_DISK_INPUT } from "./keys.js";
import { readLock } from "../config/bake-lock.js";
import { DigestCache } from "./digest-cache.js";

export interface ReadInputs {
  digests: Map<string, InputDigests>;
  /** The build context of every image with a Dockerfile: the build sends exactly these files. */
  listings: Map<string, ContextListing>;
  /** Images whose context has large files to hash: their `context` digest is taken while sending. */
  deferred: Set<string>;
}

/**
 * The inputs of every node, or of the named ones only (a build reads no playbook). Images named
 * in `deferLarge` leave their large uncached files unhashed: the build hashes them while it
 * sends them (see ReadInputs.deferred).
 */
export async function readInputs(
  config: BakeConfig,
  only?: Set<string>,
  deferLarge = new Set<string>(),
): Promise<ReadInputs> {
  const digests = new Map<string, InputDigests>();
  const listings = new Map<string, ContextListing>();
  const lock = readLock(config.dir);
  const cache = DigestCache.forProject(config.dir);
  const wanted = (name: string) => !only || only.has(name);
  await Promise.all([
    ...config.images
      .filter((img) => wanted(img.name))
      .map(async (img) =>
        digests.set(
          img.name,
          await imageInputs(
            img,
            listings,
            lock.debootstrap[img.name]?.release,
            cache,
            deferLarge.has(img.name),
            config.dir,
          ),
        ),
      ),
    ...config.amis
      .filter((ami) => wanted(ami.name))
      .map(async (ami) =>
        digests.set(ami.name, {
          ...(await amiInputs(ami, config.dir)),
          // What the host starts each service from (ports, env, command, health): baked into it.
          ...(ami.services.length
            ? {
                contracts: digestOf(ami.services.map((n) => [n, config.images.find((i) => i.name === n)?.run ?? null])),
              }
            : {}),
        }),
      ),
  ]);
  cache.save();
  const deferred = new Set([...listings].filter(([, l]) => l.deferred).map(([name]) => name));
  return { digests, listings, deferred };
}

export async function readInputDigests(config: BakeConfig): Promise<Map<string, InputDigests>> {
  return (await readInputs(config)).digests;
}

/** bake's own file of pass_env values beside bake.yml: never in a build context unless asked for by name. */
export const DOT_ENV = ".env";
/**
 * bake's own state in the project's folder, which every run rewrites: never in a build context
 * unless asked for by name, or a context holding the project would change with every build.
 */
export const BAKE_STATE = [".bake", "bake-manifest.json", "bake-provenance.intoto.jsonl"];

export async function imageInputs(
  img: ImageNode,
  listings?: Map<string, ContextListing>,
  upstreamRelease?: string,
  cache?: DigestCache,
  deferLarge = false,
  projectDir?: string,
): Promise<InputDigests> {
  const inputs: InputDigests = { kind: "image" };
  // A pinned release index (bake.lock) makes fresh upstream packages a new key.
  if (img.rootfs?.debootstrap)
    inputs.rootfs = digestOf(
      upstreamRelease
        ? { debootstrap: img.rootfs.debootstrap, release: upstreamRelease, tidy: ROOTFS_TIDY }
        : { debootstrap: img.rootfs.debootstrap, tidy: ROOTFS_TIDY },
    );
  if (img.rootfs?.tar) inputs.rootfs = `tar:${await hashFile(img.rootfs.tar)}`;
  if (img.from) inputs.from = img.from;
  if (img.dockerfile) {
    inputs.dockerfile = await hashFile(img.dockerfile);
    const secretFiles = Object.values(img.secrets ?? {}).flatMap((s) => (s.file ? [s.file] : []));
    const withhold = projectDir ? [DOT_ENV, ...BAKE_STATE].map((f) => path.join(projectDir, f)) : [];
    const listing = await listContext(img.context!, {
      dockerfile: img.dockerfile,
      cache,
      deferLarge,
      withhold,
      secretFiles,
    });
    listings?.set(img.name, listing);
    if (!listing.deferred) inputs.context = contextDigest(listing.entries);
    inputs.args = digestOf(img.args);
    // Which secrets the build mounts (their ids), never their values: as BuildKit's cache does.
    if (img.secrets) inputs.secrets = digestOf(Object.keys(img.secrets).sort());
  }
  if (img.test) inputs.test = await testDigest(img.test);
  return inputs;
}

/** A node's test is part of what it is: a changed spec or vars file is a new key (tested again). */
async function testDigest(test: TestSpec): Promise<string> {
  return digestOf({
    spec: await hashFile(test.spec),
    vars: test.vars ? await hashFile(test.vars) : null,
    retryTimeout: test.retryTimeout,
    sleep: test.sleep,
  });
}

/** The Packer templates decide the rendered HCL together with the AMI's settings and keys. */
export function templateDigest(): string {
  return digestOf(Object.fromEntries(readTemplates()));
}

/**
 * An AMI's own inputs: its settings, the Packer templates, and every file Ansible may read for
 * its playbook, one component each (`ansible:<name>`), so that `bake plan` names the file.
 */
export async function amiInputs(ami: AmiNode, dir: string): Promise<InputDigests> {
  const spec = {
    builder: ami.builder,
    bundle: ami.bundle ?? null,
    region: ami.region,
    source: ami.source,
    instanceType: ami.instanceType,
    playbook: ami.playbook ? path.relative(dir, ami.playbook) : null,
    engine: ami.engine,
    runtimeEnv: ami.runtimeEnv,
    // Which stage ships which image (only when bake.yml says more than the default).
    ...(ami.releaseImages.length ? { releaseImages: ami.releaseImages } : {}),
  };
  // bake's own provisioning (engine, agent, shipped images, services) runs on every host.
  const inputs: InputDigests = {
    kind: "ami",
    spec: digestOf(spec),
    template: templateDigest(),
    provisioning: hostProvisioningDigest(),
  };
  if (ami.test) inputs.test = await testDigest(ami.test);
  // An instance-store bake also runs bake's own playbook that installs the EC2 AMI tools.
  if (ami.builder === "instance-store") inputs.amiTools = ec2AmiToolsDigest();
  // The disk a VM host starts from; computeKeys folds it in on the vm target only.
  if (ami.vm) inputs[VM_DISK_INPUT] = vmDiskDigest(ami.vm);
  const limit = pLimit(8);
  if (!ami.playbook) return inputs;
  await Promise.all(
    ansibleInputs(ami.playbook, dir).map((f) =>
      limit(async () => void (inputs[`${ANSIBLE_INPUT}${f.name}`] = await hashFile(f.file))),
    ),
  );
  return inputs;
}
