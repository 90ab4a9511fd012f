/** `bake up` / `down` / `ps` / `logs` / `exec`: release containers locally, with their runtime contract. */
import path from "node:path";
import { PROVISIONING_DIR, PROVISIONING_PLAYBOOKS } from "../graph/provisioning.js";
import { loadConfig } from "../config/load.js";
import { knownKeys, readPipeline, requireEngine, type Tools } from "../state/read.js";
import { UsageError } from "../errors.js";
import { assemblePlan } from "../plan/plan.js";
import { executeBuild } from "../images/execute.js";
import { RunLogs } from "../state/logs.js";
import { gitInfo } from "../tools/git.js";
import {
  failureMessage,
  passEnvValues,
  servicesOf,
  startWithAnsible,
  startWithApi,
  stopAll,
  upContainers,
  waitHealthy,
} from "../up/services.js";

const UP_PLAYBOOK = path.join(PROVISIONING_DIR, PROVISIONING_PLAYBOOKS.up);

export interface UpOptions {
  file: string;
  services: string[];
  via: "api" | "ansible";
  json: boolean;
  signal: AbortSignal;
}

export async function upCommand(
  options: UpOptions,
  tools: Tools,
  out: (t: string) => void,
  err: (t: string) => void,
): Promise<void> {
  const config = await loadConfig(options.file);
  const releases = options.services.length
    ? options.services
    : config.images.filter((i) => i.layer === "release").map((i) => i.name);
  if (!releases.length) throw new UsageError(`${options.file} has no release images (images with run:) to start`);
  const pipeline = await readPipeline(
    { file: options.file, target: "local", nodes: releases, imagesOnly: true },
    tools,
  );
  requireEngine(pipeline);
  const keys = knownKeys(pipeline);
  const services = servicesOf(pipeline.config, releases, keys);
  // Secrets are checked before anything is built or started.
  const passEnv = passEnvValues(pipeline.config, services);
  const docker = tools.docker();
  const logs = new RunLogs(pipeline.config.dir);
  try {
    const plan = assemblePlan(
      pipeline.nodes.filter((n) => n.kind === "image"),
      pipeline.keys,
      pipeline.state,
      "local",
    );
    await executeBuild(pipeline, plan, docker, () => gitInfo(pipeline.config.dir), logs, {
      noCache: false,
      push: false,
      concurrency: 2,
      tags: [],
      signal: options.signal,
      plain: Boolean(process.env.CI) || !process.stderr.isTTY,
    });
    if (options.via === "ansible") {
      err("starting through bake's ansible/bake/up.yml (the production service role)");
      await startWithAnsible(services, pipeline.config, passEnv, UP_PLAYBOOK, (l) => logs.line("up.ansible", l));
    } else {
      const changed = await startWithApi(services, pipeline.config, docker, passEnv);
      err(changed.length ? `started ${changed.join(", ")}` : "already up to date");
    }
  } finally {
    await logs.close();
  }
  const health = await waitHealthy(services, docker, options.signal);
  if (options.json)
    out(
      JSON.stringify(
        {
          services: health.map(({ service, container, ok, state, urls }) => ({
            service,
            container,
            healthy: ok,
            state,
            urls,
          })),
        },
        null,
        2,
      ),
    );
  else
    out(
      health
        .map((h) => `${h.service.padEnd(16)} ${h.ok ? "healthy" : h.state.padEnd(9)} ${h.urls.join(" ")}`)
        .join("\n"),
    );
  const bad = health.filter((h) => !h.ok);
  if (bad.length) throw failureMessage(bad);
}

export async function downCommand(
  options: { file: string; services: string[] },
  tools: Tools,
  out: (t: string) => void,
): Promise<void> {
  const config = await loadConfig(options.file);
  const removed = await stopAll(config, tools.docker(), options.services);
  out(removed.length ? `removed ${removed.join(", ")}` : "nothing to remove");
}

export async function psCommand(
  options: { file: string; json: boolean },
  tools: Tools,
  out: (t: string) => void,
): Promise<void> {
  const config = await loadConfig(options.file);
  const docker = tools.docker();
  const containers = await upContainers(config, docker);
  const rows = containers.map((c) => ({
    service: c.labels["bake.service"],
    container: c.name,
    state: c.state,
    status: c.status,
    ports: c.ports.filter((p) => p.publicPort).map((p) => `${p.ip}:${p.publicPort}->${p.privatePort}/${p.type}`),
  }));
  if (options.json) out(JSON.stringify({ services: rows }, null, 2));
  else
    out(
      rows.length
        ? rows
            .map((r) => `${r.service.padEnd(16)} ${r.container.padEnd(28)} ${r.status.padEnd(28)} ${r.ports.join(" ")}`)
            .join("\n")
        : "no services running",
    );
}

export async function logsCommand(
  options: { file: string; service?: string; follow: boolean; signal: AbortSignal },
  tools: Tools,
): Promise<void> {
  const config = await loadConfig(options.file);
  const docker = tools.docker();
  const containers = (await upContainers(config, docker)).filter(
    (c) => !options.service || c.labels["bake.service"] === options.service,
  );
  if (!containers.length)
    throw new UsageError(
      options.service
        ? `${options.service} is not running (bake up ${options.service})`
        : "no services running (bake up)",
    );
  const prefix = containers.length > 1;
  await Promise.all(
    containers.map((c) => {
      let partial = "";
      return docker.containerLogs(c.id, { follow: options.follow, signal: options.signal }, (stream, chunk) => {
        const target = stream === "stderr" ? process.stderr : process.stdout;
        if (!prefix) return void target.write(chunk);
        const lines = (partial + chunk.toString("utf8")).split("\n");
        partial = lines.pop() ?? "";
        for (const l of lines) target.write(`${c.labels["bake.service"]} | ${l}\n`);
      });
    }),
  );
}

export async function execCommand(
  options: { file: string; service: string; command: string[] },
  tools: Tools,
): Promise<number> {
  if (!options.command.length)
    throw new UsageError("name the command to run: bake exec <service> -- <command> [args..]");
  const config = await loadConfig(options.file);
  const docker = tools.docker();
  const [container] = (await upContainers(config, docker, { "bake.service": options.service })).filter(
    (c) => c.state === "running",
  );
  if (!container) throw new UsageError(`${options.service} is not running (bake up ${options.service})`);
  return docker.exec(container.id, options.command, (stream, chunk) =>
    (stream === "stderr" ? process.stderr : process.stdout).write(chunk),
  );
}
