/**
 * What `bake doctor` checks: the config, the engine and registry, the tools bake drives, AWS, and
 * for instance-store AMIs their signing pair and bucket. Each check asks the tool's own module;
 * one line each, and for each failing one the command that fixes it.
 */
import { accessSync, constants, existsSync, statSync } from "node:fs";
import { findGoss, GOSS_ENV, gossVersion } from "../tools/goss.js";
import { ACCELERATOR_ENV, cachedAccelerator, QEMU, qemuVersion } from "../tools/qemu.js";
import { bucketState } from "../tools/s3.js";
import { loadConfig } from "../config/load.js";
import { ConfigError, ConfigErrors } from "../errors.js";
import type { Tools } from "../state/read.js";
import { run } from "../tools/exec.js";
import { appliedContext, describeDockerError, engineTransport } from "../tools/docker.js";
import { dockerConfigFile, registryAuth } from "../tools/docker-credentials.js";
import { probeRegistry } from "../tools/docker-registry.js";
import { ec2Endpoint, NoCredentialsError } from "../tools/ec2.js";

export type CheckStatus = "ok" | "warn" | "fail";

export interface Check {
  name: string;
  status: CheckStatus;
  detail: string;
  fix?: string;
}

export async function runChecks(options: { file: string }, tools: Tools): Promise<Check[]> {
  const config = await loadConfig(options.file).then(
    (c) => ({ ok: true as const, c }),
    (e) => ({ ok: false as const, e }),
  );
  const registry = config.ok ? config.c.registry : process.env.BAKE_REGISTRY || undefined;
  return Promise.all([
    checkConfig(options.file, config),
    checkDocker(tools),
    checkRegistry(registry),
    checkVersion("packer", ["version"], /Packer v?(\S+)/),
    checkVersion("ansible-playbook", ["--version"], /ansible-playbook \[core (\S+)\]|ansible-playbook (\S+)/),
    checkGoss(config.ok ? config.c : undefined),
    checkQemu(config.ok ? config.c : undefined),
    checkAws(tools),
    ...(config.ok
      ? config.c.amis
          .filter((a) => a.builder === "instance-store")
          .flatMap((a) => [checkBundleSigning(a.name), checkBundleBucket(a.name, a.bundle!.s3Bucket, a.region, tools)])
      : []),
  ]);
}

export function formatCheck(c: Check): string {
  const mark = { ok: "ok  ", warn: "warn", fail: "FAIL" }[c.status];
  return `${mark}  ${c.name.padEnd(15)} ${c.detail}${c.fix ? `\n      fix: ${c.fix}` : ""}`;
}

function checkConfig(file: string, loaded: { ok: true; c: any } | { ok: false; e: unknown }): Check {
  if (loaded.ok)
    return {
      name: "bake.yml",
      status: "ok",
      detail: `${file}: ${loaded.c.images.length} images, ${loaded.c.amis.length} AMIs`,
    };
  const e = loaded.e;
  if (e instanceof ConfigError || e instanceof ConfigErrors) {
    const first = e instanceof ConfigErrors ? e.errors[0] : e;
    return {
      name: "bake.yml",
      status: "fail",
      detail: `${first.file}:${first.line}:${first.column}: ${first.message}`,
      fix: first.hint ?? `edit ${first.file} line ${first.line}`,
    };
  }
  return {
    name: "bake.yml",
    status: "warn",
    detail: (e as Error).message,
    fix: "bake --file <path to bake.yml> doctor",
  };
}

async function checkDocker(tools: Tools): Promise<Check> {
  let endpoint = "DOCKER_HOST";
  try {
    const docker = tools.docker();
    endpoint = docker.endpoint;
    const v = await docker.ping();
    const transport = engineTransport();
    const context = appliedContext();
    const refusal = await docker.buildKitRefusal();
    const builder = refusal
      ? `builds through the classic builder: ${refusal}`
      : "builds through BuildKit with a session";
    return {
      name: "docker engine",
      status: "ok",
      detail: `${v.version} (API ${v.apiVersion}) at ${endpoint} (${transport}${context ? `, docker context ${context}` : ""}); ${builder}`,
    };
  } catch (e) {
    // The local engine is started with make services; a remote one's line above says what to fix.
    const fix =
      engineTransport() === "unix"
        ? "make services"
        : "see above; bake doctor --context NAME or DOCKER_HOST names another engine";
    return { name: "docker engine", status: "fail", detail: describeDockerError(e, endpoint), fix };
  }
}

/**
 * How long a network check waits for an answer. Generous: on a busy machine (a build or a VM
 * beside it) a local registry or endpoint can take seconds to be scheduled, and doctor should not
 * call a slow service down.
 */
const ANSWER_MS = 10_000;

/** What a network check's error says: a timeout as such, anything else by its message. */
function answerError(e: any): string {
  return e?.name === "AbortError" || e?.name === "TimeoutError"
    ? `no answer within ${ANSWER_MS / 1000}s`
    : String(e?.message ?? e);
}

async function checkRegistry(registry: string | undefined): Promise<Check> {
  if (!registry)
    return { name: "registry", status: "ok", detail: "none configured (registry: in bake.yml): images stay local" };
  const host = registry.split("/")[0];
  const probe = await probeRegistry(host, ANSWER_MS);
  if (probe.status === "unreachable") {
    const why = probe.why === "TimeoutError" ? answerError({ name: probe.why }) : probe.why;
    return { name: "registry", status: "fail", detail: `${host} unreachable (${why})`, fix: "make services" };
  }
  if (probe.status === 200)
    return { name: "registry", status: "ok", detail: `${host} answers the registry API (HTTP 200)` };
  if (probe.status === 401) {
    // It asks for credentials: say whether the Docker config file has some for it (not whether they are right).
    const file = dockerConfigFile();
    const auth = await registryAuth(host).catch((e: Error) => e);
    if (auth instanceof Error)
      return {
        name: "registry",
        status: "fail",
        detail: `${host} asks for credentials: ${auth.message}`,
        fix: `install the helper, or docker login ${host}`,
      };
    if (!auth)
      return {
        name: "registry",
        status: "fail",
        detail: `${host} asks for credentials and ${file} holds none for it`,
        fix: `docker login ${host}`,
      };
    return {
      name: "registry",
      status: "ok",
      detail: `${host} answers the registry API and asks for credentials; ${file} has them`,
    };
  }
  return {
    name: "registry",
    status: "fail",
    detail: `${host}/v2/ answered HTTP ${probe.status}`,
    fix: "make services",
  };
}

async function checkVersion(tool: string, args: string[], pattern: RegExp): Promise<Check> {
  try {
    const { stdout } = await run(tool, args, { timeoutMs: 15_000 });
    const m = pattern.exec(stdout);
    return { name: tool, status: "ok", detail: m ? `${m[1] ?? m[2]}` : stdout.split("\n")[0] };
  } catch (e: any) {
    return { name: tool, status: "fail", detail: e?.message ?? String(e), fix: "make setup" };
  }
}

/** QEMU runs the vm target: its version, and the accelerator bake uses on this machine (tools/qemu.ts). */
async function checkQemu(config: { amis: { vm?: unknown }[] } | undefined): Promise<Check> {
  const needed = Boolean(config?.amis.some((a) => a.vm));
  let version: string;
  try {
    version = await qemuVersion();
  } catch (e) {
    return {
      name: "qemu",
      status: needed ? "fail" : "warn",
      detail: `${(e as Error).message}${needed ? "; bake.yml has vm: disks (--target vm)" : " (only --target vm needs it)"}`,
      fix: "make setup",
    };
  }
  const forced = process.env[ACCELERATOR_ENV];
  const known = cachedAccelerator();
  const accel = forced
    ? `accelerator ${forced} (${ACCELERATOR_ENV})`
    : known
      ? `accelerator ${known.accelerator}: ${known.reason}`
      : existsSync("/dev/kvm")
        ? "accelerator not probed yet on this boot: /dev/kvm exists, and the first bake ami --target vm boots a kernel with KVM to see whether it works (TCG otherwise)"
        : "accelerator tcg: no /dev/kvm (software emulation: a boot takes tens of seconds)";
  return { name: "qemu", status: "ok", detail: `${QEMU} ${version}; ${accel}` };
}

/** goss runs the test: specs: where bake finds it and which version; needed only when a node has a test. */
async function checkGoss(
  config: { images: { test?: unknown }[]; amis: { test?: unknown }[] } | undefined,
): Promise<Check> {
  const binary = findGoss();
  const needed = Boolean(config && [...config.images, ...config.amis].some((n) => n.test));
  if (!binary)
    return {
      name: "goss",
      status: needed ? "fail" : "warn",
      detail: `not found (${process.env[GOSS_ENV] ? `${GOSS_ENV}=${process.env[GOSS_ENV]}` : "not on PATH"})${needed ? "; bake.yml has test: specs" : ""}`,
      fix: `make setup, or set ${GOSS_ENV} to a goss binary`,
    };
  try {
    return {
      name: "goss",
      status: "ok",
      detail: `${await gossVersion(binary)} at ${binary}${process.env[GOSS_ENV] ? ` (${GOSS_ENV})` : ""}`,
    };
  } catch (e) {
    return { name: "goss", status: "fail", detail: `${binary}: ${(e as Error).message}`, fix: "make setup" };
  }
}

/** An instance-store bake signs its bundle with the x509 pair BAKE_X509_CERT / BAKE_X509_KEY name. */
async function checkBundleSigning(ami: string): Promise<Check> {
  const name = `x509 ${ami}`;
  const unset = ["BAKE_X509_CERT", "BAKE_X509_KEY"].filter((v) => !process.env[v]);
  if (unset.length)
    return {
      name,
      status: "warn",
      detail: `${unset.join(" and ")} not set: bake ami ${ami} --target aws needs the bundle's x509 certificate and key (the local target does not)`,
      fix: `export ${unset.map((v) => `${v}=/path/to/${v.endsWith("CERT") ? "cert" : "key"}.pem`).join(" ")}`,
    };
  const unreadable = ["BAKE_X509_CERT", "BAKE_X509_KEY"].filter((v) => !readable(process.env[v]!));
  if (unreadable.length)
    return {
      name,
      status: "fail",
      detail: `${unreadable.map((v) => `${v}=${process.env[v]}`).join(", ")}: not a readable file`,
      fix: "point them at the x509 certificate and key files",
    };
  return { name, status: "ok", detail: `certificate ${process.env.BAKE_X509_CERT}, key ${process.env.BAKE_X509_KEY}` };
}

/** An instance-store bake uploads its bundle to this bucket: it must exist and be this account's to use. */
async function checkBundleBucket(ami: string, bucket: string, region: string, tools: Tools): Promise<Check> {
  const name = `bucket ${ami}`;
  try {
    await tools.ec2().checkCredentials();
  } catch (e) {
    if (e instanceof NoCredentialsError)
      return {
        name,
        status: "warn",
        detail: `s3://${bucket} not looked at: no AWS credentials`,
        fix: "export AWS_PROFILE=<profile> (or use --target local)",
      };
    throw e;
  }
  try {
    const state = await bucketState(bucket, region, ANSWER_MS);
    if (state === "ok") return { name, status: "ok", detail: `s3://${bucket} exists and answers (${region})` };
    if (state === "missing")
      return {
        name,
        status: "fail",
        detail: `s3://${bucket} does not exist: ${ami}'s bundle is uploaded there`,
        fix: `create it in ${region} (aws s3 mb s3://${bucket} --region ${region}), or set bundle.s3_bucket`,
      };
    return {
      name,
      status: "fail",
      detail: `s3://${bucket} refuses this account (HTTP 403)`,
      fix: "use a bucket this account owns, or grant it s3:PutObject and s3:GetObject",
    };
  } catch (e) {
    return {
      name,
      status: "fail",
      detail: `s3://${bucket}: ${answerError(e)}`,
      fix: "check AWS_REGION and network access to S3, or AWS_ENDPOINT_URL",
    };
  }
}

function readable(file: string): boolean {
  try {
    accessSync(file, constants.R_OK);
    return statSync(file).isFile();
  } catch {
    return false;
  }
}

async function checkAws(tools: Tools): Promise<Check> {
  const endpoint = ec2Endpoint();
  const where = endpoint ? `endpoint ${endpoint}` : "AWS";
  const region = process.env.AWS_REGION || process.env.AWS_DEFAULT_REGION || "us-east-1";
  const ec2 = tools.ec2();
  try {
    await ec2.checkCredentials();
  } catch (e) {
    const detail = e instanceof NoCredentialsError ? e.message : String((e as Error).message ?? e);
    return {
      name: "aws",
      status: "warn",
      detail: `${detail}; the local target works without them`,
      fix: "export AWS_PROFILE=<profile> (or use --target local)",
    };
  }
  try {
    const n = await ec2.ping(region, ANSWER_MS);
    return { name: "aws", status: "ok", detail: `credentials found; ${where} answers in ${region} (${n} regions)` };
  } catch (e: any) {
    return {
      name: "aws",
      status: "fail",
      detail: `${where} in ${region}: ${answerError(e)}`,
      fix: endpoint ? "make services" : "check AWS_REGION and network access to EC2, or set AWS_ENDPOINT_URL",
    };
  }
}
