/**
 * The runtime contract of a release (its `run:`). One function turns it into both the Docker
 * create options `bake up` uses and the variables the Ansible `service` role gives to
 * community.docker.docker_container, so that local runs and hosts run the same container.
 */
import { createHash } from "node:crypto";
import type { PortSpec, RunContract } from "../config/model.js";

export const RESTART_POLICY = "unless-stopped";

export interface ContractInput {
  project: string;
  service: string;
  /** Image reference (`<repo>:<key12>`). */
  image: string;
  /** The image's bake key, recorded as a label. */
  key: string;
  run: RunContract;
}

/** What the Ansible `service` role receives for one service (docker_container's own parameters). */
export interface ServiceVars {
  name: string;
  image: string;
  published_ports: string[];
  env: Record<string, string>;
  pass_env: string[];
  command: string[] | null;
  healthcheck: { test: string[]; interval: string; timeout: string; retries: number } | null;
  restart_policy: string;
  labels: Record<string, string>;
  network: string;
  /** The Docker create options `bake up` uses, without pass_env values (a host adds them at boot). */
  create: CreateOptions;
}

/** The Docker Engine create options `bake up` uses (pass_env values are added at start). */
export interface CreateOptions {
  name: string;
  Image: string;
  Env: string[];
  Cmd?: string[];
  Labels: Record<string, string>;
  ExposedPorts: Record<string, Record<string, never>>;
  Healthcheck?: { Test: string[]; Interval: number; Timeout: number; Retries: number };
  HostConfig: {
    PortBindings: Record<string, { HostIp: string; HostPort: string }[]>;
    RestartPolicy: { Name: string };
    NetworkMode: string;
  };
}

export interface RuntimeContract {
  ansible: ServiceVars;
  /** Docker create options; `passEnv` values from the environment are appended to Env. */
  create: (passEnv: Record<string, string>) => CreateOptions;
}

export const containerName = (project: string, service: string) => `${project}-${service}`;
export const networkName = (project: string) => `${project}-bake`;

/**
 * A probe that works in any image with a shell and one of wget, curl or python3: healthy when the
 * path answers with a status below 400. Python's probe is a bare HTTP/1.0 request over a socket,
 * isolated from the image's site packages and PYTHON* variables: a third of urllib's start-up cost,
 * which counts on a small host probing every service every few seconds.
 */
export function httpProbe(port: number, path: string): string[] {
  const url = `http://127.0.0.1:${port}${path}`;
  const python = [
    "import socket,sys",
    `s=socket.create_connection(('127.0.0.1',${port}),3)`,
    "s.settimeout(3)",
    `s.sendall(b'GET ${path} HTTP/1.0\\r\\nHost: 127.0.0.1:${port}\\r\\n\\r\\n')`,
    "sys.exit(int(s.makefile('rb').readline().split()[1])>=400)",
  ].join("; ");
  return [
    "CMD-SHELL",
    `wget -q -O /dev/null '${url}' 2>/dev/null || curl -fsS -o /dev/null '${url}' 2>/dev/null || python3 -I -S -c "${python}"`,
  ];
}

function portText(p: PortSpec): string {
  return `${p.hostIp.includes(":") ? `[${p.hostIp}]` : p.hostIp}:${p.hostPort ?? ""}:${p.containerPort}/${p.protocol}`;
}

export function runtimeContract(input: ContractInput): RuntimeContract {
  const { run } = input;
  const name = containerName(input.project, input.service);
  const health = run.health
    ? {
        test: run.health.http ? httpProbe(run.health.port!, run.health.http) : ["CMD", ...run.health.cmd!],
        interval: run.health.interval,
        timeout: run.health.timeout,
        retries: run.health.retries,
      }
    : undefined;
  const sortedEnv = Object.keys(run.env).sort();
  // The contract's digest (never a pass_env value): a container with another digest is replaced.
  const digest = createHash("sha256")
    .update(
      JSON.stringify([
        input.image,
        run.ports.map(portText),
        sortedEnv.map((k) => [k, run.env[k]]),
        run.passEnv,
        run.command ?? null,
        health ?? null,
        RESTART_POLICY,
      ]),
    )
    .digest("hex")
    .slice(0, 16);
  const labels = {
    "bake.project": input.project,
    "bake.service": input.service,
    "bake.key": input.key,
    "bake.contract": digest,
  };
  const ansible: Omit<ServiceVars, "create"> = {
    name,
    image: input.image,
    published_ports: run.ports.map(portText),
    env: Object.fromEntries(sortedEnv.map((k) => [k, run.env[k]])),
    pass_env: run.passEnv,
    command: run.command ?? null,
    healthcheck: health
      ? { test: health.test, interval: `${health.interval}s`, timeout: `${health.timeout}s`, retries: health.retries }
      : null,
    restart_policy: RESTART_POLICY,
    labels,
    network: networkName(input.project),
  };
  const create = (passEnv: Record<string, string>): CreateOptions => {
    const bindings: CreateOptions["HostConfig"]["PortBindings"] = {};
    const exposed: CreateOptions["ExposedPorts"] = {};
    for (const p of run.ports) {
      const key = `${p.containerPort}/${p.protocol}`;
      exposed[key] = {};
      (bindings[key] ??= []).push({ HostIp: p.hostIp, HostPort: p.hostPort ? String(p.hostPort) : "" });
    }
    return {
      name,
      Image: input.image,
      Env: [...sortedEnv.map((k) => `${k}=${run.env[k]}`), ...run.passEnv.map((k) => `${k}=${passEnv[k] ?? ""}`)],
      ...(run.command ? { Cmd: run.command } : {}),
      Labels: labels,
      ExposedPorts: exposed,
      ...(health
        ? {
            Healthcheck: {
              Test: health.test,
              Interval: health.interval * 1e9,
              Timeout: health.timeout * 1e9,
              Retries: health.retries,
            },
          }
        : {}),
      HostConfig: {
        PortBindings: bindings,
        RestartPolicy: { Name: RESTART_POLICY },
        NetworkMode: networkName(input.project),
      },
    };
  };
  const withoutPassEnv = create({});
  withoutPassEnv.Env = withoutPassEnv.Env.slice(0, sortedEnv.length);
  return { ansible: { ...ansible, create: withoutPassEnv }, create };
}

/** Kept for the AMI's bake-vars.yml: the same contract, Ansible side. */
export function serviceVars(input: ContractInput): ServiceVars {
  return runtimeContract(input).ansible;
}
