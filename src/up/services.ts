/**
 * Running release containers locally with their runtime contract: start (through the Docker
 * API, or through the production Ansible role), wait for health, and stop exactly what bake
 * started.
 */
import { createHash, randomBytes } from "node:crypto";
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import type { BakeConfig, ImageNode } from "../config/model.js";
import { imageRepository, shortKey } from "../config/model.js";
import { BakeError, UsageError } from "../errors.js";
import { runtimeContract, networkName, type RuntimeContract } from "../runtime/contract.js";
import type { ContainerRecord, DockerTool } from "../tools/docker.js";
import { runLocalPlaybook, unsafeExtraVars } from "../tools/ansible.js";
import { DOT_ENV } from "../graph/inputs.js";

export interface Service {
  release: ImageNode;
  contract: RuntimeContract;
}

/**
 * The named release images as services, each with its runtime contract, in bake.yml's order: none
 * for no name (an AMI that runs no service). An unknown name or one without `run:` is exit 2.
 */
export function servicesOf(config: BakeConfig, names: string[], keys: Map<string, string | undefined>): Service[] {
  const releases = config.images.filter((i) => i.layer === "release");
  for (const n of names) {
    const image = config.images.find((i) => i.name === n);
    if (!image)
      throw new UsageError(`unknown service ${n}: ${config.file} defines ${releases.map((r) => r.name).join(", ")}`);
    if (image.layer !== "release")
      throw new UsageError(`${n} is a ${image.layer} image, not a release: only images with run: can be started`);
  }
  const chosen = releases.filter((r) => names.includes(r.name));
  return chosen.map((release) => {
    const key = keys.get(release.name)!;
    return {
      release,
      contract: runtimeContract({
        project: config.project,
        service: release.name,
        image: `${imageRepository(config, release.name)}:${shortKey(key)}`,
        key,
        run: release.run!,
      }),
    };
  });
}

/** Reads KEY=VALUE lines of a .env file (comments, blank lines, optional quotes, `export`). */
export function parseDotEnv(text: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const raw of text.split(/\r?\n/)) {
    const line = raw.trim();
    if (!line || line.startsWith("#")) continue;
    const m = /^(?:export\s+)?([A-Za-z_][A-Za-z0-9_]*)\s*=\s*(.*)$/.exec(line);
    if (!m) continue;
    let value = m[2];
    if (/^(".*"|'.*')$/.test(value)) value = value.slice(1, -1);
    out[m[1]] = value;
  }
  return out;
}

/** pass_env values, from the environment first and then .env beside bake.yml; all must be set. */
export function passEnvValues(config: BakeConfig, services: Service[], env = process.env): Record<string, string> {
  const dotEnvFile = path.join(config.dir, DOT_ENV);
  const dotEnv = existsSync(dotEnvFile) ? parseDotEnv(readFileSync(dotEnvFile, "utf8")) : {};
  const values: Record<string, string> = {};
  const missing: string[] = [];
  for (const s of services) {
    for (const name of s.release.run!.passEnv) {
      const v = env[name] ?? dotEnv[name];
      if (v === undefined) missing.push(`${name} (for ${s.release.name})`);
      else values[name] = v;
    }
  }
  if (missing.length)
    throw new UsageError(`pass_env not set: ${missing.join(", ")}: export it, or add NAME=value to ${dotEnvFile}`);
  const broken = Object.entries(values)
    .filter(([, v]) => LINE_BREAK.test(v))
    .map(([k]) => k);
  if (broken.length) {
    throw new UsageError(
      `pass_env ${broken.join(", ")}: a value holds a line break or NUL, which the host's runtime env file (one KEY=VALUE per line, as docker --env-file) cannot carry: encode it on one line (e.g. base64) and decode it in the service`,
    );
  }
  return values;
}

/**
 * What a pass_env value may not hold: a line break of any kind Python's splitlines() or a reader
 * of `docker --env-file` lines could split on, or NUL. The same rule on every path (`bake up`, the
 * local and VM boot tests), so that what the boot test checks is what a host runs.
 */
export const LINE_BREAK = /[\n\r\v\f\x1c-\x1e\x85\u2028\u2029\0]/;

const PASS_ENV_LABEL = "bake.pass-env";

/** `salt:sha256(salt, values)` of a service's pass_env values: tells a rotated secret without holding it. */
export function passEnvDigest(values: Record<string, string>, names: string[], salt: string): string {
  const h = createHash("sha256").update(salt);
  for (const n of [...names].sort()) h.update(`\0${n}=${values[n] ?? ""}`);
  return `${salt}:${h.digest("hex")}`;
}

export async function startWithApi(
  services: Service[],
  config: BakeConfig,
  docker: DockerTool,
  passEnv: Record<string, string>,
): Promise<string[]> {
  await docker.ensureNetwork(networkName(config.project), { "bake.project": config.project });
  const changed: string[] = [];
  for (const s of services) {
    const want = s.contract.create(passEnv);
    const existing = await docker.inspectContainer(want.name);
    const names = s.release.run!.passEnv;
    // A rotated secret recreates the container: compared through a salted digest, never the values.
    const [salt] = String(existing?.Config?.Labels?.[PASS_ENV_LABEL] ?? "").split(":");
    want.Labels = { ...want.Labels, [PASS_ENV_LABEL]: passEnvDigest(passEnv, names, randomBytes(8).toString("hex")) };
    const sameSecrets =
      !names.length || existing?.Config?.Labels?.[PASS_ENV_LABEL] === passEnvDigest(passEnv, names, salt);
    if (
      existing &&
      sameSecrets &&
      existing.Config?.Labels?.["bake.contract"] === want.Labels["bake.contract"] &&
      existing.Image === (await docker.inspectImage(want.Image))?.id
    ) {
      if (!existing.State?.Running) await docker.startContainer(existing.Id);
      continue;
    }
    if (existing) await docker.removeContainer(existing.Id);
    const id = await docker.createContainer(want as unknown as Record<string, unknown>);
    await docker.startContainer(id);
    changed.push(s.release.name);
  }
  return changed;
}

/** Runs bake's ansible/bake/up.yml (the production `service` role) against the local engine. */
export async function startWithAnsible(
  services: Service[],
  config: BakeConfig,
  passEnv: Record<string, string>,
  playbook: string,
  onLine: (l: string) => void,
): Promise<void> {
  const dir = mkdtempSync(path.join(tmpdir(), "bake-up-"));
  try {
    const vars = path.join(dir, "vars.yml");
    writeFileSync(vars, unsafeExtraVars({ bake_services: services.map((s) => s.contract.ansible) }));
    await runLocalPlaybook(playbook, vars, { env: passEnv, secrets: Object.values(passEnv), onLine });
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

export interface Health {
  service: string;
  container: string;
  ok: boolean;
  state: string;
  urls: string[];
  lastLogs?: string;
}

/**
 * Waits until every service is healthy (or running, without a health check). `containerOf` names
 * a service's container (a host's boot test runs them under a namespace).
 */
export async function waitHealthy(
  services: Service[],
  docker: DockerTool,
  signal?: AbortSignal,
  containerOf = (s: Service) => s.contract.ansible.name,
): Promise<Health[]> {
  return Promise.all(
    services.map(async (s): Promise<Health> => {
      const name = containerOf(s);
      const hc = s.release.run!.health;
      const deadline = Date.now() + 1000 * (hc ? hc.interval * (hc.retries + 2) + hc.timeout + 30 : 30);
      for (;;) {
        const info = await docker.inspectContainer(name);
        if (!info) return { service: s.release.name, container: name, ok: false, state: "missing", urls: [] };
        const health = info.State?.Health?.Status as string | undefined;
        const running = Boolean(info.State?.Running);
        const done = hc ? health === "healthy" : running;
        const failed = !running || health === "unhealthy" || Date.now() > deadline || signal?.aborted;
        if (done || failed) {
          const urls = Object.values(
            (info.NetworkSettings?.Ports ?? {}) as Record<string, { HostIp: string; HostPort: string }[] | null>,
          )
            .flatMap((bindings) => bindings ?? [])
            .map((b) => `http://${b.HostIp === "0.0.0.0" || b.HostIp === "" ? "127.0.0.1" : b.HostIp}:${b.HostPort}`);
          const result: Health = {
            service: s.release.name,
            container: name,
            ok: done,
            state: health ?? info.State?.Status ?? "unknown",
            urls: [...new Set(urls)],
          };
          if (!done) result.lastLogs = await lastLogs(docker, info.Id, 20);
          return result;
        }
        await new Promise((r) => setTimeout(r, 500));
      }
    }),
  );
}

export async function lastLogs(docker: DockerTool, id: string, lines: number): Promise<string> {
  const chunks: Buffer[] = [];
  await docker.containerLogs(id, { follow: false, tail: lines }, (_s, c) => chunks.push(c));
  return Buffer.concat(chunks).toString("utf8").trimEnd();
}

/** The project's service containers that `bake up` started (a boot test's, namespaced, are not). */
export async function upContainers(
  config: BakeConfig,
  docker: DockerTool,
  labels: Record<string, string> = {},
): Promise<ContainerRecord[]> {
  return (await docker.listContainers({ "bake.project": config.project, ...labels })).filter(
    (c) => c.labels["bake.service"] && !c.labels["bake.namespace"],
  );
}

/** Removes the project's service containers and its network: only what carries bake's labels. */
export async function stopAll(config: BakeConfig, docker: DockerTool, names: string[] = []): Promise<string[]> {
  const containers = (await upContainers(config, docker)).filter(
    (c) => !names.length || names.includes(c.labels["bake.service"]),
  );
  for (const c of containers) await docker.removeContainer(c.id);
  const left = await upContainers(config, docker);
  if (!left.length) await docker.removeNetwork(networkName(config.project));
  return containers.map((c) => c.name);
}

export function failureMessage(unhealthy: Health[]): BakeError {
  return new BakeError(
    unhealthy
      .map(
        (h) =>
          `${h.service} did not become healthy (${h.state})${h.lastLogs ? `; its last log lines:\n${h.lastLogs}` : ""}`,
      )
      .join("\n"),
  );
}
