/**
 * The boot test of a local machine image: started as a host boots (systemd as PID 1), it must
 * reach `running` with no failed unit, its loader must have the shipped images present under
 * their keys, and every service must run from its runtime contract and answer its health check
 * on 127.0.0.1. The host's engine is the outer one (standin.ts). Everything the test starts is
 * namespaced (container and network names, a `bake.namespace` label, host ports the engine
 * picks) so it never touches `bake up`'s containers, and is removed at the end, interrupt or not.
 */
import { randomBytes } from "node:crypto";
import { hostname } from "node:os";
import { processRuns } from "../files/process-lock.js";
import { BakeError } from "../errors.js";
import { redact } from "../tools/exec.js";
import { cleanUpOnForcedStop } from "../state/forced-cleanup.js";
import type { DockerTool } from "../tools/docker.js";
import { LINE_BREAK, waitHealthy, type Service } from "../up/services.js";
import { ENGINE_SOCKET_IN_HOST, ENGINE_STANDIN } from "./standin.js";
import path from "node:path";
import type { AmiNode, TestSpec } from "../config/model.js";
import { gossInContainer } from "../goss/image-test.js";
import { gossBinary, requireGoss } from "../tools/goss.js";

/** What `systemctl is-system-running --wait` answers once the boot is over. */
export const SETTLED = new Set(["running", "degraded", "maintenance", "stopping", "offline"]);

export interface BootCheck {
  name: string;
  ok: boolean;
  detail: string;
}

export interface BootReport {
  ok: boolean;
  seconds: number;
  checks: BootCheck[];
}

export interface BootTestInput {
  docker: DockerTool;
  /** The machine image to boot (an image id). */
  image: string;
  project: string;
  ami: string;
  /** The images the loader must leave present, by reference and key. */
  shipped: { ref: string; key: string }[];
  services: Service[];
  /** pass_env values, written into the host's runtime environment file as user-data would. */
  passEnv: Record<string, string>;
  runtimeEnv: string;
  /** The outer engine's unix socket on this machine. */
  engineSocket: string;
  /** The AMI's goss spec, run in the booted host after bake's own checks. */
  test?: { spec: TestSpec; goss: Buffer; name: string };
  /** Seconds to reach `running` and for the services to become healthy. */
  timeoutSeconds?: number;
  signal?: AbortSignal;
  onLine?: (line: string) => void;
}

/** The AMI's goss spec as a boot test runs it, with goss and the spec's name relative to the project. */
export function amiGossTest(projectDir: string, ami: AmiNode): Pick<BootTestInput, "test"> {
  if (!ami.test) return {};
  return { test: { spec: ami.test, goss: gossBinary(requireGoss()), name: path.relative(projectDir, ami.test.spec) } };
}

/** The host's runtime environment file: the pass_env values and, on the local target, the boot test's namespace. */
export function runtimeEnvFile(passEnv: Record<string, string>, namespace?: string): string {
  // passEnvValues refused such values with the variable's name; this file is never written with one.
  const broken = Object.keys(passEnv).filter((k) => LINE_BREAK.test(passEnv[k]));
  if (broken.length)
    throw new BakeError(`pass_env ${broken.join(", ")} holds a line break: not written to the runtime env file`);
  const lines = Object.keys(passEnv)
    .sort()
    .map((k) => `${k}=${passEnv[k]}`);
  // A host sharing the outer engine (the local target) names and publishes its services apart.
  return [...lines, ...(namespace ? [`BAKE_NAMESPACE=${namespace}`, "BAKE_PUBLISH=ephemeral"] : []), ""].join("\n");
}

/** Who started a boot test's host: `<host name>:<pid>`, so that `bake prune` can tell a leftover. */
export const BOOT_OWNER_LABEL = "bake.owner";

/** Whether the bake named by a boot test's owner label still runs; undefined when it is another machine's. */
export function bootOwnerRunning(owner: string | undefined, host = hostname()): boolean | undefined {
  if (!owner) return false;
  const [name, pid] = [owner.slice(0, owner.lastIndexOf(":")), Number(owner.slice(owner.lastIndexOf(":") + 1))];
  if (name !== host) return undefined;
  return processRuns(pid);
}

/** The container that boots the image as a host. */
export function hostContainer(
  input: Pick<BootTestInput, "image" | "project" | "ami" | "engineSocket">,
  namespace: string,
): Record<string, unknown> {
  return {
    name: `${namespace}-${input.project}-${input.ami}`,
    Image: input.image,
    Entrypoint: [""],
    Cmd: ["/sbin/init"],
    Env: ["container=docker"],
    StopSignal: "SIGRTMIN+3",
    Labels: {
      "bake.project": input.project,
      "bake.namespace": namespace,
      "bake.boot-test": input.ami,
      [BOOT_OWNER_LABEL]: `${hostname()}:${process.pid}`,
    },
    HostConfig: {
      Tmpfs: { "/run": "", "/run/lock": "" },
      Binds: ["/sys/fs/cgroup:/sys/fs/cgroup:ro", `${input.engineSocket}:${ENGINE_SOCKET_IN_HOST}`],
      NetworkMode: "none",
    },
  };
}

/** One boot test as it runs: the host container, its clock, and how each check is told. */
interface BootRun {
  input: BootTestInput;
  docker: DockerTool;
  id: string;
  namespace: string;
  started: number;
  deadline: number;
  run: (cmd: string[]) => Promise<{ code: number; out: string }>;
  check: (name: string, ok: boolean, raw: string) => boolean;
}

export async function bootTest(input: BootTestInput): Promise<BootReport> {
  const { docker } = input;
  const started = Date.now();
  const checks: BootCheck[] = [];
  // Every detail (journal lines, a service's own log lines) through the one redaction: a service
  // that prints its pass_env value shows ***, on stderr, in .bake/logs and in the error alike.
  const secrets = Object.values(input.passEnv);
  const b: BootRun = {
    input,
    docker,
    id: "",
    namespace: `bake-boot-${randomBytes(3).toString("hex")}`,
    started,
    deadline: started + 1000 * (input.timeoutSeconds ?? 180),
    run: async (cmd) => {
      let out = "";
      const code = await docker.exec(b.id, cmd, (_s, c) => (out += c.toString("utf8")));
      return { code, out: out.trim() };
    },
    check: (name, ok, raw) => {
      const detail = redact(raw, secrets);
      checks.push({ name, ok, detail });
      input.onLine?.(
        `boot test: ${ok ? "ok" : "FAILED"} ${name} (${((Date.now() - started) / 1000).toFixed(1)} s): ${detail}`,
      );
      return ok;
    },
  };
  // A forced stop (a second signal) still removes the host and its services: they hold the secrets.
  const release = cleanUpOnForcedStop(() => removeNamespace(docker, b.namespace, b.id));
  try {
    await startHost(b);
    await checkBoot(b);
    await checkPreload(b);
    await checkServices(b);
    if (input.test) await checkSpec(b, input.test);
  } finally {
    await removeNamespace(docker, b.namespace, b.id);
    release();
  }
  return { ok: checks.every((c) => c.ok), seconds: (Date.now() - started) / 1000, checks };
}

/** The host container, with the engine stand-in's units and the runtime env file, started. */
async function startHost(b: BootRun): Promise<void> {
  const { input, docker } = b;
  b.id = await docker.createContainer(hostContainer(input, b.namespace));
  await docker.putFiles(b.id, [
    ...Object.entries(ENGINE_STANDIN).map(([file, content]) => ({
      path: `/etc/systemd/system/${file}`,
      content,
      mode: 0o644,
    })),
    { path: input.runtimeEnv, content: runtimeEnvFile(input.passEnv, b.namespace), mode: 0o600 },
  ]);
  await docker.startContainer(b.id);
  input.onLine?.(`boot test: booting ${input.image.slice(0, 19)} as ${b.namespace}-${input.project}-${input.ami}`);
  input.onLine?.(
    `boot test: the host's docker.service stands in for an engine of its own: the outer engine answers at ${ENGINE_SOCKET_IN_HOST} (no engine runs in an unprivileged container)`,
  );
}

/** 1. systemd reaches a steady state (asked again until its bus answers), with no failed unit. */
async function checkBoot(b: BootRun): Promise<void> {
  const { input, run, deadline, started } = b;
  const state = await untilDeadline(deadline, input.signal, async () => {
    for (;;) {
      const answer = (await run(["systemctl", "is-system-running", "--wait"])).out.split("\n").pop()!;
      // "offline" in the first seconds is a systemd not yet answering on its bus (seen at 0.6 s on
      // a busy machine), not a settled state: asked again for up to 30 s.
      const early = answer === "offline" && Date.now() - started < 30_000;
      if ((SETTLED.has(answer) && !early) || Date.now() > deadline || input.signal?.aborted) return answer;
      await new Promise((r) => setTimeout(r, 200));
    }
  });
  const booted = state ?? "still starting";
  b.check("boot", booted === "running", `systemd ${booted} after ${((Date.now() - started) / 1000).toFixed(1)} s`);
  const failed = (await run(["systemctl", "--failed", "--no-legend", "--plain"])).out
    .split("\n")
    .map((l) => l.split(/\s+/)[0])
    .filter(Boolean);
  const journals = await Promise.all(
    failed.map(
      async (u) => `${u}:\n${(await run(["journalctl", "-u", u, "-n", "15", "--no-pager", "-o", "cat"])).out}`,
    ),
  );
  b.check(
    "units",
    failed.length === 0,
    failed.length ? `failed units: ${failed.join(", ")}\n${journals.join("\n")}` : "no failed units",
  );
}

/** 2. The loader ran before the services and the shipped images are there under their keys. */
async function checkPreload(b: BootRun): Promise<void> {
  const { input } = b;
  const loader = await unitState(b.run, "bake-preload.service");
  const found = await b.docker.findBakeImages(input.shipped.map((s) => s.ref));
  const missing = input.shipped.filter((s, i) => found[i]?.key !== s.key).map((s) => s.ref);
  b.check(
    "preload",
    loader.ok && !missing.length,
    `${loader.text}; ${missing.length ? `not present under their keys: ${missing.join(", ")}` : `present under their keys: ${input.shipped.map((s) => s.ref).join(", ")}`}`,
  );
}

/** 3. Every service runs from its contract and answers on 127.0.0.1. */
async function checkServices(b: BootRun): Promise<void> {
  const { input, docker, run } = b;
  const containerOf = (s: Service) => `${b.namespace}-${s.contract.ansible.name}`;
  const health = await waitHealthy(input.services, docker, input.signal, containerOf);
  for (const s of input.services) {
    const unitName = `bake-service@${s.contract.ansible.name}.service`;
    const unit = await unitState(run, unitName);
    const h = health.find((x) => x.service === s.release.name)!;
    const probe = h.ok ? await httpProbe(docker, s, h.container) : undefined;
    const ok = unit.ok && h.ok && (probe?.ok ?? true);
    const journal = unit.ok
      ? ""
      : `\n${(await run(["journalctl", "-u", unitName, "-n", "15", "--no-pager", "-o", "cat"])).out}`;
    b.check(
      `service ${s.release.name}`,
      ok,
      `${unit.text}; container ${h.container} ${h.state}${probe ? `; ${probe.detail}` : ""}${h.lastLogs ? `; its last log lines:\n${h.lastLogs}` : ""}${journal}`,
    );
  }
}

/** 4. The AMI's own spec, run by goss in the booted host. */
async function checkSpec(b: BootRun, test: NonNullable<BootTestInput["test"]>): Promise<void> {
  const t = await gossInContainer(
    b.docker,
    b.id,
    { project: b.input.project, node: b.input.ami },
    test.spec,
    test.goss,
  );
  const counts = t.summary
    ? `${t.summary.count - t.summary.failed} of ${t.summary.count} checks passed`
    : "goss printed no summary";
  b.check(`test ${test.name}`, t.ok, t.ok ? counts : `${counts}\n${t.failures.join("\n")}`);
}

/** Removes the host and everything its services started under the namespace. */
export async function removeNamespace(docker: DockerTool, namespace: string, hostId = ""): Promise<void> {
  if (hostId) await docker.removeContainer(hostId).catch(() => undefined);
  for (const c of await docker.listContainers({ "bake.namespace": namespace }).catch(() => []))
    await docker.removeContainer(c.id).catch(() => undefined);
  await docker.removeNetworks({ "bake.namespace": namespace }).catch(() => []);
}

export async function unitState(
  run: (cmd: string[]) => Promise<{ code: number; out: string }>,
  unit: string,
): Promise<{ ok: boolean; text: string }> {
  const { out } = await run(["systemctl", "show", unit, "-p", "ActiveState", "-p", "Result", "-p", "UnitFileState"]);
  const props = Object.fromEntries(out.split("\n").map((l) => l.split("=", 2) as [string, string]));
  return {
    ok: props.ActiveState === "active" && props.Result === "success",
    text: `${unit} ${props.ActiveState ?? "?"} (${props.Result ?? "?"}, ${props.UnitFileState || "not installed"})`,
  };
}

/** GET of the service's health path on the host port the engine published for it, when its contract has one. */
async function httpProbe(
  docker: DockerTool,
  s: Service,
  container: string,
): Promise<{ ok: boolean; detail: string } | undefined> {
  const health = s.release.run!.health;
  if (!health?.http) return undefined;
  const info = await docker.inspectContainer(container);
  const binding = (info?.NetworkSettings?.Ports?.[`${health.port}/tcp`] ?? [])[0] as { HostPort: string } | undefined;
  if (!binding) return { ok: false, detail: `port ${health.port} is not published` };
  const url = `http://127.0.0.1:${binding.HostPort}${health.http}`;
  try {
    const res = await fetch(url, { signal: AbortSignal.timeout(5000) });
    await res.arrayBuffer();
    return { ok: res.ok, detail: `GET ${url} answered ${res.status}` };
  } catch (e) {
    return { ok: false, detail: `GET ${url}: ${(e as Error).message}` };
  }
}

/** The first answer of `attempt` before the deadline (undefined when none came). */
export async function untilDeadline<T>(
  deadline: number,
  signal: AbortSignal | undefined,
  attempt: () => Promise<T>,
): Promise<T | undefined> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<undefined>((resolve) => {
    timer = setTimeout(() => resolve(undefined), Math.max(0, deadline - Date.now()));
    signal?.addEventListener("abort", () => resolve(undefined), { once: true });
  });
  try {
    return await Promise.race([attempt(), timeout]);
  } finally {
    clearTimeout(timer);
  }
}
