/** Reads the inputs of every node (files, Dockerfiles, playbooks) and digests them. */
import { readFile, readdir, stat } from "node:fs/promises";
import path from "node:path";
import { parse as parseYaml } from "yaml";
import type { AmiNode, BakeConfig, ImageNode } from "../config/model.js";
import { contextDigest, hashFile, listContext, sha256, type ContextListing } from "./context-files.js";
import { digestOf, type InputDigests } from "./keys.js";
import { readTemplates } from "../ami/templates.js";
import { readLock } from "../config/lock.js";
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
export async function readInputs(config: BakeConfig, only?: Set<string>, deferLarge = new Set<string>()): Promise<ReadInputs> {
  const digests = new Map<string, InputDigests>();
  const listings = new Map<string, ContextListing>();
  const lock = readLock(config.dir);
  const cache = DigestCache.forProject(config.dir);
  const wanted = (name: string) => !only || only.has(name);
  await Promise.all([
    ...config.images.filter((img) => wanted(img.name)).map(async (img) => digests.set(img.name, await imageInputs(img, listings, lock.debootstrap[img.name]?.release, cache, deferLarge.has(img.name)))),
    ...config.amis.filter((ami) => wanted(ami.name)).map(async (ami) => digests.set(ami.name, await amiInputs(ami, config.dir))),
  ]);
  cache.save();
  const deferred = new Set([...listings].filter(([, l]) => l.deferred).map(([name]) => name));
  return { digests, listings, deferred };
}

export async function readInputDigests(config: BakeConfig): Promise<Map<string, InputDigests>> {
  return (await readInputs(config)).digests;
}

export async function imageInputs(img: ImageNode, listings?: Map<string, ContextListing>, upstreamRelease?: string, cache?: DigestCache, deferLarge = false): Promise<InputDigests> {
  const inputs: InputDigests = { kind: "image" };
  // A pinned release index (bake.lock) makes fresh upstream packages a new key.
  if (img.rootfs?.debootstrap) inputs.rootfs = digestOf(upstreamRelease ? { debootstrap: img.rootfs.debootstrap, release: upstreamRelease } : { debootstrap: img.rootfs.debootstrap });
  if (img.rootfs?.tar) inputs.rootfs = `tar:${await hashFile(img.rootfs.tar)}`;
  if (img.from) inputs.from = img.from;
  if (img.dockerfile) {
    inputs.dockerfile = await hashFile(img.dockerfile);
    const listing = await listContext(img.context!, { dockerfile: img.dockerfile, cache, deferLarge });
    listings?.set(img.name, listing);
    if (!listing.deferred) inputs.context = contextDigest(listing.entries);
    inputs.args = digestOf(img.args);
  }
  return inputs;
}

/** The Packer templates decide the rendered HCL together with the AMI's settings and keys. */
export function templateDigest(): string {
  return digestOf(Object.fromEntries(readTemplates()));
}

export async function amiInputs(ami: AmiNode, dir: string): Promise<InputDigests> {
  const spec = {
    builder: ami.builder,
    bundle: ami.bundle ?? null,
    region: ami.region,
    source: ami.source,
    instanceType: ami.instanceType,
    playbook: path.relative(dir, ami.playbook),
  };
  const files = await playbookFiles(ami.playbook);
  const base = path.dirname(ami.playbook);
  const lines = await Promise.all(files.map(async (f) => `${path.relative(base, f)}\0${await hashFile(f)}`));
  return { kind: "ami", spec: digestOf(spec), playbook: sha256(lines.join("\n")), template: templateDigest() };
}

/**
 * The playbook, the playbooks it imports, and every file of the roles it uses (found under
 * `roles/` beside the playbook, following `roles:`, include_role/import_role and role
 * dependencies in meta/main.yml). Sorted, absolute.
 */
export async function playbookFiles(playbook: string): Promise<string[]> {
  const base = path.dirname(playbook);
  const files = new Set<string>();
  const roles = new Set<string>();
  const addRole = async (name: string) => {
    if (roles.has(name) || /[{}]/.test(name)) return;
    roles.add(name);
    const dir = path.join(base, "roles", name);
    if (!(await isDir(dir))) return;
    for (const f of await walkFiles(dir)) files.add(f);
    const meta = await readYaml(path.join(dir, "meta", "main.yml"));
    for (const dep of meta?.dependencies ?? []) await addRole(typeof dep === "string" ? dep : dep?.role ?? dep?.name);
    for (const taskFile of [...files].filter((f) => f.startsWith(dir) && f.endsWith(".yml"))) await scanTasks(await readYaml(taskFile));
  };
  const scanTasks = async (tasks: any): Promise<void> => {
    if (!Array.isArray(tasks)) return;
    for (const t of tasks) {
      if (!t || typeof t !== "object") continue;
      for (const [k, v] of Object.entries(t)) {
        if (/(^|\.)(include_role|import_role)$/.test(k) && v && typeof (v as any).name === "string") await addRole((v as any).name);
        if (k === "block" || k === "rescue" || k === "always") await scanTasks(v);
      }
    }
  };
  const addPlaybook = async (file: string) => {
    if (files.has(file)) return;
    files.add(file);
    const plays = await readYaml(file);
    if (!Array.isArray(plays)) return;
    for (const play of plays) {
      if (!play || typeof play !== "object") continue;
      const imported = play.import_playbook ?? play["ansible.builtin.import_playbook"];
      if (typeof imported === "string") await addPlaybook(path.resolve(path.dirname(file), imported));
      for (const r of play.roles ?? []) await addRole(typeof r === "string" ? r : r?.role ?? r?.name);
      for (const section of ["pre_tasks", "tasks", "post_tasks", "handlers"]) await scanTasks(play[section]);
    }
  };
  await addPlaybook(playbook);
  return [...files].sort();
}

async function readYaml(file: string): Promise<any> {
  try {
    return parseYaml(await readFile(file, "utf8"));
  } catch {
    return undefined;
  }
}

async function isDir(p: string): Promise<boolean> {
  return (await stat(p).catch(() => undefined))?.isDirectory() ?? false;
}

async function walkFiles(dir: string): Promise<string[]> {
  const entries = await readdir(dir, { withFileTypes: true, recursive: true });
  return entries.filter((e) => e.isFile()).map((e) => path.join(e.parentPath ?? (e as any).path, e.name));
}
