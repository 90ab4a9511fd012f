/**
 * Checks that need more than the schema (names, parents, layers, cycles, files, ports, account
 * ids) and produces the normalised BakeConfig. Reads the file system only to see that the
 * files and folders bake.yml names exist.
 */
import { statSync } from "node:fs";
import path from "node:path";
import { isIP } from "node:net";
import { ConfigError } from "../errors.js";
import type { AmiEntry, BakeFile, DebootstrapEntry, ImageEntry, RunEntry, TestEntry } from "./schema.js";
import {
  DEFAULT_RUNTIME_ENV,
  TEST_RETRY,
  type AmiNode,
  type BakeConfig,
  type HealthSpec,
  type ImageNode,
  type Layer,
  type PortSpec,
  type RootfsSpec,
  type RunContract,
  type TestSpec,
  type VmSpec,
  VM_PACKAGES,
} from "./model.js";
import { dotted, type SourceMap, type YamlPath } from "./source-map.js";
import { projectPathGuard } from "./project-paths.js";
import { splitCredentials, stripCredentials } from "./url-credentials.js";

/** One path component of a Docker repository name. */
export const DOCKER_NAME = /^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*$/;
const ENV_NAME = /^[A-Za-z_][A-Za-z0-9_]*$/;
const REGISTRY =
  /^(?:[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?)(?:\.[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?)*(?::\d{1,5})?(?:\/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*$/;
const REGION = /^[a-z]{2}(?:-gov|-iso[a-z]*)?-[a-z]+-\d+$/;
const ACCOUNT = /^\d{12}$/;
const HEALTH_PATH = /^\/[A-Za-z0-9\-._~/%?=&+,;:@!*()]*$/;
const OWNER_ALIASES = new Set(["self", "amazon", "aws-marketplace", "aws-backup-vault"]);

export function checkSemantics(
  raw: BakeFile,
  map: SourceMap,
  dir: string,
  env: Record<string, string | undefined> = {},
): { config: BakeConfig; errors: ConfigError[] } {
  const errors: ConfigError[] = [];
  const guard = projectPathGuard(dir, env);
  const report = (p: YamlPath, message: string, hint?: string, key = false) =>
    void errors.push(new ConfigError(map.locate(p, key), message, hint));
  // Every path bake.yml names passes here: inside the project, or allowed from outside bake.yml.
  const err: Report = Object.assign(report, {
    outside: (p: YamlPath, what: string, value: string, resolved: string) => {
      if (guard.allowed(resolved)) return false;
      report(p, `${what} ${value} is outside the project`, guard.hint(resolved));
      return true;
    },
  });

  if (!DOCKER_NAME.test(raw.project)) {
    err(
      ["project"],
      `project "${raw.project}" is not a valid Docker repository name`,
      "use lower-case letters, digits and single . _ - between them, e.g. arcade",
    );
  }
  let registry: string | undefined = raw.registry?.trim().replace(/\/+$/, "") || undefined;
  if (registry && !REGISTRY.test(registry)) {
    err(
      ["registry"],
      `registry "${raw.registry}" is not host[:port][/path]`,
      "e.g. 127.0.0.1:5000 or registry.example.com/team; leave it empty for local only",
    );
    registry = undefined;
  }

  const imageEntries = Object.entries(raw.images);
  const layers = new Map<string, Layer>();
  for (const [name, img] of imageEntries) layers.set(name, img.run ? "release" : img.parent ? "service" : "base");

  const images: ImageNode[] = [];
  for (const [name, img] of imageEntries) {
    const at: YamlPath = ["images", name];
    if (!DOCKER_NAME.test(name))
      err(
        at,
        `image name "${name}" is not a valid Docker repository name`,
        "use lower-case letters, digits and single . _ - between them",
        true,
      );
    const layer = layers.get(name)!;
    images.push(checkImage(name, img, layer, layers, at, dir, map, err));
  }

  // Cycles among parents: report at the parent key of the first node on the cycle.
  const cycle = findCycle(
    images.map((i) => ({ name: i.name, deps: i.parent && layers.has(i.parent) ? [i.parent] : [] })),
  );
  if (cycle)
    err(
      ["images", cycle[0], "parent"],
      `images form a cycle: ${[...cycle, cycle[0]].join(" → ")}`,
      "a parent chain must end at a base image (one with rootfs: or from:)",
    );

  const amis: AmiNode[] = [];
  for (const [name, ami] of Object.entries(raw.amis ?? {})) {
    const at: YamlPath = ["amis", name];
    if (!DOCKER_NAME.test(name))
      err(at, `AMI name "${name}" is not valid`, "use lower-case letters, digits and single . _ - between them", true);
    if (layers.has(name)) err(at, `"${name}" names both an image and an AMI`, "give the AMI a name of its own", true);
    amis.push(checkAmi(name, ami, new Map(imageEntries), layers, at, dir, map, err));
  }

  errors.sort((a, b) => a.line - b.line || a.column - b.column);
  return { config: { file: map.file, dir, project: raw.project, registry, images, amis }, errors };
}

/** Reports a problem at a place in bake.yml; `outside` reports a path outside the project (true when it is). */
type Report = ((p: YamlPath, message: string, hint?: string, key?: boolean) => void) & {
  outside: (p: YamlPath, what: string, value: string, resolved: string) => boolean;
};

function checkImage(
  name: string,
  img: ImageEntry,
  layer: Layer,
  layers: Map<string, Layer>,
  at: YamlPath,
  dir: string,
  map: SourceMap,
  err: Report,
): ImageNode {
  const node: ImageNode = { name, layer, parent: img.parent, args: {}, position: map.locate(at, true) };
  if (img.parent === undefined) {
    if (layer === "release")
      err(
        [...at, "run"],
        `image "${name}" has run: but no parent`,
        "a release is built on a base or service image: add parent: <image>",
      );
    const sources = ["rootfs", "from"].filter((k) => (img as any)[k] !== undefined);
    if (sources.length !== 1) {
      err(
        at,
        `base image "${name}" needs exactly one of rootfs: or from:`,
        sources.length ? "keep one of them" : "add rootfs: { debootstrap: {...} } or from: <image>, or a parent:",
        true,
      );
    }
  } else {
    if (img.parent === name)
      err([...at, "parent"], `image "${name}" is its own parent`, "point parent: at another image");
    else if (!layers.has(img.parent))
      err(
        [...at, "parent"],
        `parent "${img.parent}" of image "${name}" is not defined`,
        `define images.${img.parent}, or use one of: ${[...layers.keys()].join(", ")}`,
      );
    else {
      const parentLayer = layers.get(img.parent)!;
      // A release stands on a service or straight on a base: base → service → release is the
      // reference's shape, not a rule (a two-layer graph needs no pass-through service).
      if (parentLayer === "release")
        err(
          [...at, "parent"],
          `parent "${img.parent}" of "${name}" is a release`,
          "releases are leaves: build on the service or base below it instead",
        );
    }
    for (const k of ["rootfs", "from"] as const)
      if (img[k] !== undefined)
        err([...at, k], `image "${name}" has a parent, so it cannot also have ${k}:`, `remove ${k}: or parent:`, true);
    if (img.dockerfile === undefined)
      err(
        at,
        `image "${name}" has a parent but no dockerfile:`,
        "services and releases are built from a Dockerfile: add dockerfile: path/to/Dockerfile",
        true,
      );
  }
  if (img.rootfs) {
    const kinds = Object.keys(img.rootfs);
    if (kinds.length !== 1)
      err(
        [...at, "rootfs"],
        `rootfs of "${name}" needs exactly one of debootstrap: or tar:`,
        kinds.length ? "keep one of them" : "add debootstrap: { suite: bookworm } or tar: path/to/rootfs.tar",
      );
    else if (img.rootfs.tar !== undefined) {
      const tar = path.resolve(dir, img.rootfs.tar);
      if (!err.outside([...at, "rootfs", "tar"], "rootfs tarball", img.rootfs.tar, tar) && kindOf(tar) !== "file")
        err([...at, "rootfs", "tar"], `rootfs tarball ${img.rootfs.tar} does not exist`, `looked for ${tar}`);
      node.rootfs = { tar };
    } else if (img.rootfs.debootstrap) {
      node.rootfs = checkDebootstrap(img.rootfs.debootstrap, [...at, "rootfs", "debootstrap"], err);
    }
  }
  if (img.from !== undefined) {
    if (!/^[a-z0-9][a-zA-Z0-9._\-/:@]*$/.test(img.from) || /\s/.test(img.from))
      err(
        [...at, "from"],
        `from: "${img.from}" is not an image reference`,
        "e.g. debian:bookworm-slim or 127.0.0.1:5000/upstream/debian:12",
      );
    node.from = img.from;
  }
  if (img.dockerfile !== undefined) {
    const file = path.resolve(dir, img.dockerfile);
    if (!err.outside([...at, "dockerfile"], "Dockerfile", img.dockerfile, file) && kindOf(file) !== "file")
      err([...at, "dockerfile"], `Dockerfile ${img.dockerfile} does not exist`, `looked for ${file}`);
    node.dockerfile = file;
    node.context = path.dirname(file);
  }
  if (img.context !== undefined) {
    const ctx = path.resolve(dir, img.context);
    if (!err.outside([...at, "context"], "build context", img.context, ctx) && kindOf(ctx) !== "dir")
      err([...at, "context"], `build context ${img.context} is not a folder`, `looked for ${ctx}`);
    if (img.dockerfile === undefined)
      err(
        [...at, "context"],
        `image "${name}" has a context: but no dockerfile:`,
        "add dockerfile:, or remove context:",
        true,
      );
    node.context = ctx;
  }
  for (const [k, v] of Object.entries(img.args ?? {})) {
    if (!ENV_NAME.test(k))
      err(
        [...at, "args", k],
        `build arg name "${k}" is not valid`,
        "use letters, digits and _, not starting with a digit",
        true,
      );
    if (k === "BAKE_PARENT")
      err([...at, "args", k], "BAKE_PARENT is set by bake to the parent's image id", "remove it from args:", true);
    node.args[k] = String(v);
  }
  if (img.run) node.run = checkRun(img.run, [...at, "run"], err);
  if (img.test !== undefined) node.test = checkTest(img.test, [...at, "test"], dir, err, map);
  if (img.secrets) {
    node.secrets = {};
    for (const [id, from] of Object.entries(img.secrets)) {
      const where = [...at, "secrets", id];
      if (!/^[A-Za-z0-9_.-]+$/.test(id)) err(where, `secret id "${id}" is not valid`, "letters, digits, _ . -", true);
      if ((from.env === undefined) === (from.file === undefined))
        err(where, `secret "${id}" needs exactly one of env: or file:`, "e.g. { env: NPM_TOKEN }");
      else if (from.env !== undefined && !ENV_NAME.test(from.env))
        err([...where, "env"], `"${from.env}" is not a valid environment variable name`);
      else if (from.file !== undefined) {
        const file = path.resolve(dir, from.file);
        if (!err.outside([...where, "file"], "secret file", from.file, file) && kindOf(file) !== "file")
          err([...where, "file"], `secret file ${from.file} does not exist`, `looked for ${file}`);
        node.secrets[id] = { file };
        continue;
      }
      node.secrets[id] = { env: from.env };
    }
  }
  return node;
}

/** A goss spec (and vars file) inside the project, as files. */
/** A debootstrap spec: its suite and mirror checked, the mirror's credentials kept apart. */
function checkDebootstrap(d: DebootstrapEntry, at: YamlPath, err: Report): RootfsSpec {
  if (!/^[a-z][a-z0-9-]*$/.test(d.suite))
    err([...at, "suite"], `debootstrap suite "${d.suite}" is not a suite name`, "e.g. bookworm");
  if (d.mirror !== undefined && !/^(https?|file):\/\/\S+$/.test(d.mirror))
    err([...at, "mirror"], `mirror "${stripCredentials(d.mirror)}" is not an http(s):// or file:// URL`);
  const mirror = d.mirror === undefined ? undefined : splitCredentials(d.mirror);
  return {
    debootstrap: { suite: d.suite, variant: d.variant, include: [...(d.include ?? [])].sort(), mirror: mirror?.url },
    ...(mirror?.credentials ? { mirrorCredentials: mirror.credentials } : {}),
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

function checkTest(test: TestEntry, at: YamlPath, dir: string, err: Report, map: SourceMap): TestSpec {
  const entry = typeof test === "string" ? { spec: test } : test;
  const file = (key: "spec" | "vars", value: string) => {
    const where = typeof test === "string" ? at : [...at, key];
    const resolved = path.resolve(dir, value);
    if (
      !err.outside(where, key === "spec" ? "goss spec" : "goss vars file", value, resolved) &&
      kindOf(resolved) !== "file"
    )
      err(
        where,
        `${key === "spec" ? "goss spec" : "goss vars file"} ${value} does not exist`,
        `looked for ${resolved}`,
      );
    return resolved;
  };
  const options: { retry_timeout?: string; sleep?: string } = typeof test === "string" ? {} : test;
  return {
    spec: file("spec", entry.spec),
    ...(entry.vars !== undefined ? { vars: file("vars", entry.vars) } : {}),
    retryTimeout: options.retry_timeout ?? TEST_RETRY.retryTimeout,
    sleep: options.sleep ?? TEST_RETRY.sleep,
    position: map.locate(at),
  };
}

function checkRun(run: RunEntry, at: YamlPath, err: Report): RunContract {
  const ports: PortSpec[] = [];
  (run.ports ?? []).forEach((p, i) => {
    const parsed = parsePort(String(p));
    if (typeof parsed === "string")
      err(
        [...at, "ports", i],
        `port "${p}" ${parsed}`,
        'use "8080", "8080:80" or "127.0.0.1:8080:80" (optionally /udp)',
      );
    else ports.push(parsed);
  });
  const env: Record<string, string> = {};
  for (const [k, v] of Object.entries(run.env ?? {})) {
    if (!ENV_NAME.test(k))
      err(
        [...at, "env", k],
        `environment variable name "${k}" is not valid`,
        "use letters, digits and _, not starting with a digit",
        true,
      );
    env[k] = String(v);
  }
  const passEnv = run.pass_env ?? [];
  passEnv.forEach((n, i) => {
    if (!ENV_NAME.test(n))
      err(
        [...at, "pass_env", i],
        `pass_env name "${n}" is not a valid environment variable name`,
        "use letters, digits and _, not starting with a digit",
      );
    else if (n in env) err([...at, "pass_env", i], `"${n}" is in both env: and pass_env:`, "keep it in one of them");
  });
  let health: HealthSpec | undefined;
  if (run.health) {
    const h = run.health;
    if ((h.http === undefined) === (h.cmd === undefined))
      err(
        [...at, "health"],
        "health needs exactly one of http: or cmd:",
        "e.g. health: { http: /healthz, port: 8080 }",
      );
    if (h.http !== undefined && !h.http.startsWith("/"))
      err([...at, "health", "http"], `health path "${h.http}" must start with /`, `write /${h.http}`);
    // The path goes into the container's shell health command: URL characters only, no quote or $.
    else if (h.http !== undefined && !HEALTH_PATH.test(h.http))
      err(
        [...at, "health", "http"],
        `health path "${h.http}" may hold only URL characters`,
        "letters, digits and - . _ ~ / % ? = & + , ; : @ ! * ( ); percent-encode anything else",
      );
    if (h.http !== undefined && h.port === undefined)
      err([...at, "health"], "an http health check needs port:", "add port: <the container port that serves it>");
    health = {
      http: h.http,
      port: h.port,
      cmd: h.cmd,
      interval: h.interval ?? 5,
      timeout: h.timeout ?? 3,
      retries: h.retries ?? 10,
    };
  }
  return { ports, env, passEnv, command: run.command, health };
}

/** Docker's short port forms. Returns a reason string when the text is not one of them. */
export function parsePort(text: string): PortSpec | string {
  let spec = text.trim();
  let protocol: "tcp" | "udp" = "tcp";
  const slash = spec.lastIndexOf("/");
  if (slash >= 0) {
    const proto = spec.slice(slash + 1);
    if (proto !== "tcp" && proto !== "udp") return `has an unknown protocol "${proto}"`;
    protocol = proto;
    spec = spec.slice(0, slash);
  }
  let hostIp = "127.0.0.1";
  let rest = spec;
  const ipv6 = /^\[([^\]]+)\]:(.*)$/.exec(spec);
  if (ipv6) {
    hostIp = ipv6[1];
    rest = ipv6[2];
  } else {
    const parts = spec.split(":");
    if (parts.length === 3) {
      hostIp = parts[0];
      rest = `${parts[1]}:${parts[2]}`;
    } else if (parts.length > 3) return "has too many ':'";
  }
  if (!isIP(hostIp)) return `has an invalid address "${hostIp}"`;
  const nums = rest.split(":");
  const toPort = (s: string) => (/^\d{1,5}$/.test(s) && +s >= 1 && +s <= 65535 ? +s : undefined);
  if (nums.length === 1) {
    const c = toPort(nums[0]);
    return c === undefined ? "is not a port between 1 and 65535" : { hostIp, containerPort: c, protocol };
  }
  const host = nums[0] === "" ? undefined : toPort(nums[0]);
  const container = toPort(nums[1]);
  if ((nums[0] !== "" && host === undefined) || container === undefined) return "is not a port between 1 and 65535";
  return { hostIp, hostPort: host, containerPort: container, protocol };
}

function checkAmi(
  name: string,
  ami: AmiEntry,
  imageEntries: Map<string, ImageEntry>,
  layers: Map<string, Layer>,
  at: YamlPath,
  dir: string,
  map: SourceMap,
  err: Report,
): AmiNode {
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
  const playbook = ami.playbook === undefined ? undefined : path.resolve(dir, ami.playbook);
  if (
    ami.playbook !== undefined &&
    playbook &&
    !err.outside([...at, "playbook"], "playbook", ami.playbook, playbook) &&
    kindOf(playbook) !== "file"
  )
    err([...at, "playbook"], `playbook ${ami.playbook} does not exist`, `looked for ${playbook}`);
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
  if (ami.local) {
    const host = imageEntries.get(ami.local.image);
    const spec = host?.rootfs?.debootstrap;
    if (!host)
      err(
        [...at, "local", "image"],
        `local image "${ami.local.image}" is not defined`,
        `define images.${ami.local.image} with systemd (e.g. a debootstrap base including systemd-sysv), or use one of: ${[...layers.keys()].join(", ")}`,
      );
    // A debootstrap base with nothing on top has exactly its include list; others are checked once built.
    else if (spec && !host.dockerfile && !(spec.include ?? []).some((p) => p === "systemd-sysv" || p === "systemd")) {
      err(
        [...at, "local", "image"],
        `local image "${ami.local.image}" has no systemd: the local host boots with systemd as PID 1`,
        `add systemd-sysv to images.${ami.local.image}.rootfs.debootstrap.include`,
      );
    }
  }
  const vm = ami.vm ? checkVm(ami.vm, [...at, "vm"], err, map) : undefined;
  const test = ami.test === undefined ? undefined : checkTest(ami.test, [...at, "test"], dir, err, map);
  if (ami.runtime_env !== undefined && !path.posix.isAbsolute(ami.runtime_env))
    err(
      [...at, "runtime_env"],
      `runtime_env "${ami.runtime_env}" is not an absolute path on the host`,
      "e.g. /etc/bake/runtime.env",
    );
  // The path reaches debugfs requests, unit files and the agent's contract: plain characters only.
  else if (ami.runtime_env !== undefined && !/^(\/[A-Za-z0-9._@+-]+)+$/.test(ami.runtime_env))
    err(
      [...at, "runtime_env"],
      `runtime_env "${ami.runtime_env}" holds characters a host path here may not (spaces, line breaks, quotes, …)`,
      "letters, digits and . _ @ + - between slashes, e.g. /etc/bake/runtime.env",
    );
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
    retention: { keep: ami.retention?.keep ?? 5 },
    ...(ami.local ? { local: { image: ami.local.image, position: map.locate([...at, "local", "image"]) } } : {}),
    ...(vm ? { vm } : {}),
    runtimeEnv: ami.runtime_env ?? DEFAULT_RUNTIME_ENV,
    ...(test ? { test } : {}),
    position: map.locate(at, true),
  };
}

/**
 * Instance families whose instances can boot an instance-store root volume (EC2 User Guide, "Root
 * volumes": "the only instance types that support instance store root volumes").
 */
export const INSTANCE_STORE_ROOT = ["c1", "c3", "d2", "i2", "m1", "m2", "m3", "r3", "x1"];

function kindOf(p: string): "file" | "dir" | undefined {
  try {
    const s = statSync(p);
    return s.isDirectory() ? "dir" : s.isFile() ? "file" : undefined;
  } catch {
    return undefined;
  }
}

export { dotted };

/** Returns the names on a cycle, or undefined when the dependencies form a DAG. */
export function findCycle(nodes: { name: string; deps: string[] }[]): string[] | undefined {
  const deps = new Map(nodes.map((n) => [n.name, n.deps]));
  const state = new Map<string, "visiting" | "done">();
  const stack: string[] = [];
  const visit = (name: string): string[] | undefined => {
    const s = state.get(name);
    if (s === "done") return undefined;
    if (s === "visiting") return stack.slice(stack.indexOf(name));
    state.set(name, "visiting");
    stack.push(name);
    for (const d of deps.get(name) ?? []) {
      const c = visit(d);
      if (c) return c;
    }
    stack.pop();
    state.set(name, "done");
    return undefined;
  };
  for (const n of [...nodes].sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0))) {
    const c = visit(n.name);
    if (c) return c;
  }
  return undefined;
}
