/** The only module that talks to the Docker engine (through dockerode). */
import { createRequire } from "node:module";
import type Docker from "dockerode";
import type { InputDigests } from "../graph/keys.js";

export const LABEL = {
  project: "bake.project",
  node: "bake.node",
  key: "bake.key",
  parent: "bake.parent",
  inputs: "bake.inputs",
} as const;

/** An image bake built, as the engine reports it. */
export interface BakeImageRecord {
  id: string;
  tags: string[];
  node: string;
  key: string;
  inputs?: InputDigests;
  created: number;
}

export interface DockerTool {
  /** Where the engine is, for messages. */
  readonly endpoint: string;
  ping(): Promise<{ version: string; apiVersion: string }>;
  /** Every image labelled with this project: one query to the engine. */
  listBakeImages(project: string): Promise<BakeImageRecord[]>;
}

export function dockerEndpoint(env = process.env): string {
  return env.DOCKER_HOST || "unix:///var/run/docker.sock";
}

/** dockerode is loaded on first connect: commands that fail before reaching the engine skip its cost. */
export function loadDockerode(): typeof Docker {
  return createRequire(import.meta.url)("dockerode") as typeof Docker;
}

export function connectDocker(options: { timeoutMs?: number } = {}): DockerTool {
  const Dockerode = loadDockerode();
  const docker = new Dockerode({ timeout: options.timeoutMs } as Docker.DockerOptions);
  const endpoint = dockerEndpoint();
  return {
    endpoint,
    async ping() {
      const v = await docker.version();
      return { version: v.Version, apiVersion: v.ApiVersion };
    },
    async listBakeImages(project) {
      const images = await docker.listImages({ filters: JSON.stringify({ label: [`${LABEL.project}=${project}`] }) });
      return images.map((img) => toRecord(img.Id, img.RepoTags ?? [], img.Labels ?? {}, img.Created));
    },
  };
}

export function toRecord(id: string, tags: string[], labels: Record<string, string>, created: number): BakeImageRecord {
  let inputs: InputDigests | undefined;
  try {
    inputs = labels[LABEL.inputs] ? JSON.parse(labels[LABEL.inputs]) : undefined;
  } catch {
    inputs = undefined;
  }
  return { id, tags: tags.filter((t) => t !== "<none>:<none>"), node: labels[LABEL.node] ?? "", key: labels[LABEL.key] ?? "", inputs, created };
}

/** Explains an engine connection failure in one line. */
export function describeDockerError(error: unknown, endpoint: string): string {
  const e = error as { code?: string; message?: string };
  if (e?.code === "ENOENT" || e?.code === "ECONNREFUSED") return `docker engine unreachable at ${endpoint} (${e.code})`;
  if (e?.code === "EACCES") return `no permission to use ${endpoint} (EACCES)`;
  return `docker engine at ${endpoint}: ${e?.message ?? String(error)}`;
}
