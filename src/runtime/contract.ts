/**
 * The runtime contract of a release (its `run:`), turned into what the Ansible `service` role
 * receives. `bake up` uses the same contract for its containers (see issue notes).
 */
import type { RunContract } from "../config/model.js";

export interface ServiceVars {
  name: string;
  image: string;
  ports: { host_ip: string; host_port: number | null; container_port: number; protocol: string }[];
  env: Record<string, string>;
  pass_env: string[];
  command: string[] | null;
  health: { http: string | null; port: number | null; cmd: string[] | null; interval: number; timeout: number; retries: number } | null;
}

export function serviceVars(name: string, image: string, run: RunContract): ServiceVars {
  return {
    name,
    image,
    ports: run.ports.map((p) => ({ host_ip: p.hostIp, host_port: p.hostPort ?? null, container_port: p.containerPort, protocol: p.protocol })),
    env: run.env,
    pass_env: run.passEnv,
    command: run.command ?? null,
    health: run.health ? { http: run.health.http ?? null, port: run.health.port ?? null, cmd: run.health.cmd ?? null, interval: run.health.interval, timeout: run.health.timeout, retries: run.health.retries } : null,
  };
}
