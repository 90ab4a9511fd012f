/**
 * An AMI's entry in bake.yml checked beyond the schema: AWS names (regions, accounts, bucket,
 * instance type), the playbook, the images it ships and runs, its local and vm hosts, its test
 * and the runtime env path.
 */
import path from "node:path";
import type { AmiEntry, ImageEntry } from "./schema.js";
import { DEFAULT_RUNTIME_ENV, type AmiNode, type Layer, type VmSpec, VM_PACKAGES } from "./model.js";
import type { SourceMap, YamlPath } from "./source-map.js";
import { kindOf, type Report } from "./check-report.js";
import { checkDebootstrap, checkTest } from "./check-image.js";

const REGION = /^[a-z]{2}(?:-gov|-iso[a-z]*)?-[a-z]+-\d+$/;
const ACCOUNT = /^\d{12}$/;
const OWNER_ALIASES = new Set(["self", "amazon", "aws-marketplace", "aws-backup-vault"]);

export function checkAmi(
  name: string,
  ami: AmiEntry,
  imageEntries: Map<string, ImageEntry>,
  layers: Map<string, Layer>,
  at: YamlPath,
  dir: string,
  map: SourceMap,
  err: Report,
): AmiNode {
  const { bundle, shareWith, owners } = checkAws(name, ami, at, err);
  const playbook = ami.playbook === undefined ? undefined : path.resolve(dir, ami.playbook);
  if (
    ami.playbook !== undefined &&
    playbook &&
    !err.outside([...at, "playbook"], "playbook", ami.playbook, playbook) &&
    kindOf(playbook) !== "file"
  )
    err([...at, "playbook"], `playbook ${ami.playbook} does not exist`, `looked for ${playbook}`);
  const { preload, services, releaseImages } = checkShipped(ami, layers, at, err);
  if (ami.local) checkLocalHost(ami.local, imageEntries, layers, [...at, "local", "image"], err);
  const vm = ami.vm ? checkVm(ami.vm, [...at, "vm"], err, map) : undefined;
  const test = ami.test === undefined ? undefined : checkTest(ami.test, [...at, "test"], dir, err, map);
  checkRuntimeEnv(ami.runtime_env, [...at, "runtime_env"], err);
  return {
    name,
    builder: ami.builder,
    bundle,
    region: ami.region,
    copyTo: ami.copy_to ?? [],
    shareWith,
    source: { owners, name: ami.source.name },
    instanceType: ami.instance_type,
    ...(playbook ? { playbook } : {}),
    engine: ami.engine ?? "bake",
    preload,
    services,
    releaseImages,
    retention: { keep: ami.retention?.keep ?? 5 },
    ...(ami.local ? { local: { image: ami.local.image, position: map.locate([...at, "local", "image"]) } } : {}),
    ...(vm ? { vm } : {}),
    runtimeEnv: ami.runtime_env ?? DEFAULT_RUNTIME_ENV,
    ...(test ? { test } : {}),
    position: map.locate(at, true),
  };
}

/** The vm target's host: a debootstrap spec with what a booted VM host needs (VM_PACKAGES). */
function checkVm(vm: NonNullable<AmiEntry["vm"]>, at: YamlPath, err: Report, map: SourceMap): VmSpec {
  const rootfs = checkDebootstrap(vm.rootfs.debootstrap, [...at, "rootfs", "debootstrap"], err) as VmSpec["rootfs"];
  const include = rootfs.debootstrap.include;
  const lacking = VM_PACKAGES.filter((p) => !include.some(p.test));
  if (lacking.length) {
    const where = vm.rootfs.debootstrap.include
      ? [...at, "rootfs", "debootstrap", "include"]
      : [...at, "rootfs", "debootstrap"];
    err(
      where,
      `the VM host's debootstrap spec lacks ${lacking.map((p) => p.name).join(", ")}: ${lacking.map((p) => p.why).join("; ")}`,
      `include: [${VM_PACKAGES.map((p) => (p.name.startsWith("a kernel") ? "linux-image-cloud-amd64" : p.name)).join(", ")}, ...]`,
    );
  }
  return {
    rootfs,
    diskSize: vm.disk_size ?? "4G",
    memory: vm.memory ?? 2048,
    cpus: vm.cpus ?? 2,
    position: map.locate(at),
  };
}

/**
 * Instance families whose instances can boot an instance-store root volume (EC2 User Guide, "Root
 * volumes": "the only instance types that support instance store root volumes").
 */
const INSTANCE_STORE_ROOT = ["c1", "c3", "d2", "i2", "m1", "m2", "m3", "r3", "x1"];

/** What only AWS reads: regions, account ids (owners may be aliases), the bundle and the instance type. */
function checkAws(name: string, ami: AmiEntry, at: YamlPath, err: Report) {
  const regionOk = (p: YamlPath, r: string) => {
    if (!REGION.test(r)) err(p, `"${r}" is not an AWS region name`, "e.g. us-east-1 or eu-west-1");
  };
  regionOk([...at, "region"], ami.region);
  (ami.copy_to ?? []).forEach((r, i) => regionOk([...at, "copy_to", i], r));
  const account = (p: YamlPath, v: string | number, aliases: boolean) => {
    const s = String(v);
    if (ACCOUNT.test(s) || (aliases && OWNER_ALIASES.has(s))) return s;
    const hint =
      typeof v === "number"
        ? "write account ids in quotes: YAML reads 0123… as a number and drops the leading zero"
        : `an AWS account id is 12 digits${aliases ? `, or one of ${[...OWNER_ALIASES].join(", ")}` : ""}`;
    err(p, `"${s}" is not an AWS account id`, hint);
    return s;
  };
  let bundle: AmiNode["bundle"];
  if (ami.bundle)
    bundle = {
      s3Bucket: ami.bundle.s3_bucket,
      accountId: account([...at, "bundle", "account_id"], ami.bundle.account_id, false),
    };
  if (ami.builder === "instance-store" && !ami.bundle)
    err(
      [...at, "builder"],
      `AMI "${name}" is instance-store but has no bundle:`,
      "add bundle: { s3_bucket: ..., account_id: ... }",
    );
  if (ami.builder === "ebs" && ami.bundle)
    err([...at, "bundle"], `AMI "${name}" is ebs: bundle: applies only to instance-store`, "remove bundle:", true);
  if (ami.bundle && !/^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$/.test(ami.bundle.s3_bucket))
    err(
      [...at, "bundle", "s3_bucket"],
      `"${ami.bundle.s3_bucket}" is not a valid S3 bucket name`,
      "3-63 lower-case letters, digits, dots and hyphens",
    );
  const shareWith = (ami.share_with ?? []).map((v, i) => account([...at, "share_with", i], v, false));
  const owners = ami.source.owners.map((v, i) => account([...at, "source", "owners", i], v, true));
  if (!/^[a-z0-9]+[0-9]*[a-z]*\.[a-z0-9]+$/.test(ami.instance_type))
    err([...at, "instance_type"], `"${ami.instance_type}" is not an EC2 instance type`, "e.g. t3.small or m3.medium");
  else if (ami.builder === "instance-store" && !INSTANCE_STORE_ROOT.includes(ami.instance_type.split(".")[0])) {
    err(
      [...at, "instance_type"],
      `${ami.instance_type} cannot boot an instance-store root: only the previous-generation ${INSTANCE_STORE_ROOT.map((f) => f.toUpperCase()).join(", ")} types can`,
      "use e.g. m3.medium, or builder: ebs for current instance types",
    );
  }
  return { bundle, shareWith, owners };
}

/** preload: names images; services: names releases (images with run:); release_images: names preloaded images. */
function checkShipped(ami: AmiEntry, layers: Map<string, Layer>, at: YamlPath, err: Report) {
  const preload = ami.preload ?? [];
  preload.forEach((p, i) => {
    if (!layers.has(p))
      err([...at, "preload", i], `preload image "${p}" is not defined`, `use one of: ${[...layers.keys()].join(", ")}`);
  });
  const services = ami.services ?? [];
  services.forEach((s, i) => {
    const layer = layers.get(s);
    if (!layer) err([...at, "services", i], `service "${s}" is not defined`, `define images.${s} with run:`);
    else if (layer !== "release")
      err(
        [...at, "services", i],
        `"${s}" is a ${layer} image, not a release`,
        "services: lists release images (those with run:)",
      );
  });
  const releaseImages = ami.release_images ?? [];
  releaseImages.forEach((r, i) => {
    const where = [...at, "release_images", i];
    if (services.includes(r))
      err(where, `"${r}" is a service: services always ship in the release stage`, "remove it from release_images:");
    else if (!preload.includes(r))
      err(
        where,
        `release image "${r}" is not in preload:`,
        `release_images: lists images of preload: (${preload.join(", ") || "none"}) that ship with the release stage`,
      );
  });
  return { preload, services, releaseImages };
}

/** The local target's host image: defined, and with systemd when bake.yml says what it holds. */
function checkLocalHost(
  local: NonNullable<AmiEntry["local"]>,
  imageEntries: Map<string, ImageEntry>,
  layers: Map<string, Layer>,
  where: YamlPath,
  err: Report,
): void {
  const host = imageEntries.get(local.image);
  const spec = host?.rootfs?.debootstrap;
  if (!host)
    err(
      where,
      `local image "${local.image}" is not defined`,
      `define images.${local.image} with systemd (e.g. a debootstrap base including systemd-sysv), or use one of: ${[...layers.keys()].join(", ")}`,
    );
  // A debootstrap base with nothing on top has exactly its include list; others are checked once built.
  else if (spec && !host.dockerfile && !(spec.include ?? []).some((p) => p === "systemd-sysv" || p === "systemd")) {
    err(
      where,
      `local image "${local.image}" has no systemd: the local host boots with systemd as PID 1`,
      `add systemd-sysv to images.${local.image}.rootfs.debootstrap.include`,
    );
  }
}

function checkRuntimeEnv(runtimeEnv: string | undefined, where: YamlPath, err: Report): void {
  if (runtimeEnv !== undefined && !path.posix.isAbsolute(runtimeEnv))
    err(where, `runtime_env "${runtimeEnv}" is not an absolute path on the host`, "e.g. /etc/bake/runtime.env");
  // The path reaches debugfs requests, unit files and the agent's contract: plain characters only.
  else if (runtimeEnv !== undefined && !/^(\/[A-Za-z0-9._@+-]+)+$/.test(runtimeEnv))
    err(
      where,
      `runtime_env "${runtimeEnv}" holds characters a host path here may not (spaces, line breaks, quotes, …)`,
      "letters, digits and . _ @ + - between slashes, e.g. /etc/bake/runtime.env",
    );
}
