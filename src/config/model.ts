/** The validated, normalised pipeline that the rest of bake works from. Paths are absolute. */
import type { SourcePosition } from "../errors.js";
import type { UrlCredentials } from "./url-credentials.js";

export type Layer = "base" | "service" | "release";

export interface DebootstrapSpec {
  suite: string;
  variant?: string;
  include: string[];
  mirror?: string;
}

export interface RootfsSpec {
  /** Its mirror without credentials: the spec is hashed into keys and shown. */
  debootstrap?: DebootstrapSpec;
  /** The credentials the mirror URL carried in bake.yml, kept apart from everything shown. */
  mirrorCredentials?: UrlCredentials;
  tar?: string;
}

export interface PortSpec {
  hostIp: string;
  /** undefined: Docker picks a free host port. */
  hostPort?: number;
  containerPort: number;
  protocol: "tcp" | "udp";
}

export interface HealthSpec {
  http?: string;
  port?: number;
  cmd?: string[];
  interval: number;
  timeout: number;
  retries: number;
}

export interface RunContract {
  ports: PortSpec[];
  env: Record<string, string>;
  passEnv: string[];
  command?: string[];
  health?: HealthSpec;
}

/** A goss spec and its vars file (absolute paths), and where bake.yml names it. */
export interface TestSpec {
  spec: string;
  vars?: string;
  /** goss's --retry-timeout and --sleep ("30s", "1s"). */
  retryTimeout: string;
  sleep: string;
  position: SourcePosition;
}

export interface ImageNode {
  name: string;
  layer: Layer;
  parent?: string;
  rootfs?: RootfsSpec;
  from?: string;
  dockerfile?: string;
  context?: string;
  args: Record<string, string>;
  run?: RunContract;
  test?: TestSpec;
  /** Build secrets by id: where each value comes from when the image builds (never the value). */
  secrets?: Record<string, { env?: string; file?: string }>;
  position: SourcePosition;
}

export interface AmiNode {
  name: string;
  builder: "ebs" | "instance-store";
  bundle?: { s3Bucket: string; accountId: string };
  region: string;
  copyTo: string[];
  shareWith: string[];
  source: { owners: string[]; name: string };
  instanceType: string;
  /** The AMI's own playbook (the user's concerns); bake provisions its contract around it. */
  playbook?: string;
  /** Who installs the Docker engine: bake (Debian's docker.io, before the playbook) or the AMI itself. */
  engine: "bake" | "own";
  preload: string[];
  services: string[];
  /** Preloaded images that ship in the release stage (with the services) on a staged bake. */
  releaseImages: string[];
  retention: { keep: number };
  /** The local target's host: the image it starts from (systemd as PID 1). */
  local?: { image: string; position: SourcePosition };
  /** The vm target's host: the disk it starts from and the VM it boots in. */
  vm?: VmSpec;
  /** Where the host reads its services' pass_env values at boot (an absolute path on the host). */
  runtimeEnv: string;
  test?: TestSpec;
  position: SourcePosition;
}

export interface VmSpec {
  rootfs: RootfsSpec & { debootstrap: DebootstrapSpec };
  /** qemu-img's size form: 4G, 512M. */
  diskSize: string;
  /** MiB. */
  memory: number;
  cpus: number;
  position: SourcePosition;
}

/** What a VM host's debootstrap spec must include, each with what needs it. */
export const VM_PACKAGES: { name: string; test: (p: string) => boolean; why: string }[] = [
  {
    name: "a kernel (e.g. linux-image-cloud-amd64)",
    test: (p) => /^linux-image-/.test(p),
    why: "QEMU boots the disk's own kernel",
  },
  { name: "systemd-sysv", test: (p) => p === "systemd-sysv", why: "the host boots with systemd as PID 1" },
  {
    name: "openssh-server",
    test: (p) => p === "openssh-server",
    why: "Packer and the boot test reach the host over SSH",
  },
  { name: "python3", test: (p) => p === "python3", why: "Ansible runs its modules with it" },
];

export const DEFAULT_RUNTIME_ENV = "/etc/bake/runtime.env";

/** How long goss retries a failing check by default (a service still starting), and its pause between tries. */
export const TEST_RETRY = { retryTimeout: "30s", sleep: "1s" } as const;

export interface BakeConfig {
  /** bake.yml as the user named it (used in messages). */
  file: string;
  /** Folder of bake.yml: relative paths resolve against it. */
  dir: string;
  project: string;
  /** host[:port][/path] without a trailing slash, or undefined for local only. */
  registry?: string;
  images: ImageNode[];
  amis: AmiNode[];
}

/** Images are tagged `<repo>:<key[0:12]>`. */
export const KEY_TAG_LENGTH = 12;

/** A key as tags, names and messages show it: its first KEY_TAG_LENGTH characters. */
export function shortKey(key: string): string;
export function shortKey(key: string | undefined): string | undefined;
export function shortKey(key: string | undefined): string | undefined {
  return key?.slice(0, KEY_TAG_LENGTH);
}

/** Where the local target's machine image goes: `<project>/<ami>`, never pushed. */
export function localAmiRepository(config: Pick<BakeConfig, "project">, ami: string): string {
  return `${config.project}/${ami}`;
}

/** `<registry>/<project>/<image>` or `<project>/<image>` without a registry. */
export function imageRepository(config: Pick<BakeConfig, "project" | "registry">, name: string): string {
  return config.registry ? `${config.registry}/${config.project}/${name}` : `${config.project}/${name}`;
}

/** The images an AMI carries: its preloaded ones and those of its services, each once. */
export function shippedImages(ami: Pick<AmiNode, "preload" | "services">): string[] {
  return [...new Set([...ami.preload, ...ami.services])];
}
