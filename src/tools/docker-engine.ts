/**
 * The connection to the Docker engine that every docker-*.ts verb module shares: dockerode
 * (loaded on first use), plain HTTP for quick calls, and the helpers that read the engine's
 * streamed answers. What the engine's answers mean to bake (labels, records) lives here too.
 */
import { createRequire } from "node:module";
import http from "node:http";
import type { Readable } from "node:stream";
import type Docker from "dockerode";
import type { InputDigests } from "../graph/keys.js";
import { BakeError } from "../errors.js";
import { JsonLines, type StreamMessage } from "./docker-stream.js";

export const LABEL = {
  project: "bake.project",
  node: "bake.node",
  key: "bake.key",
  parent: "bake.parent",
  inputs: "bake.inputs",
  rootfs: "bake.rootfs",
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

/** A failure the engine reported inside a build's progress stream. */
export class BuildStreamError extends BakeError {
  constructor(
    message: string,
    readonly step: string | undefined,
    readonly tail: string[],
  ) {
    super(message);
  }
}

export function dockerEndpoint(env = process.env): string {
  return env.DOCKER_HOST || "unix:///var/run/docker.sock";
}

/** Where plain HTTP reaches the engine (a unix socket, or tcp without TLS); undefined otherwise. */
export function engineTarget(env = process.env): http.RequestOptions | undefined {
  const host = dockerEndpoint(env);
  if (host.startsWith("unix://")) return { socketPath: host.slice("unix://".length) };
  if (host.startsWith("tcp://") && env.DOCKER_TLS_VERIFY !== "1" && !env.DOCKER_CERT_PATH) {
    const url = new URL(`http://${host.slice("tcp://".length)}`);
    return { host: url.hostname, port: Number(url.port || 2375) };
  }
  return undefined;
}

/** dockerode is loaded on first connect: commands that fail before reaching the engine skip its cost. */
export function loadDockerode(): typeof Docker {
  return createRequire(import.meta.url)("dockerode") as typeof Docker;
}

/**
 * The engine's HTTP API over the socket DOCKER_HOST names, for the few quick calls a no-op run
 * makes. dockerode (which loads ssh and gRPC support) is loaded only when there is work to do.
 * Returns undefined when DOCKER_HOST needs more than plain unix or tcp (TLS, ssh).
 */
export function engineClient(
  env = process.env,
  timeoutMs = 10_000,
): ((method: string, apiPath: string) => Promise<{ status: number; body: any }>) | undefined {
  const target = engineTarget(env);
  if (!target) return undefined;
  return (method, apiPath) =>
    new Promise((resolve, reject) => {
      const req = http.request({ ...target, method, path: apiPath, timeout: timeoutMs }, (res) => {
        let text = "";
        res.setEncoding("utf8");
        res.on("data", (c) => (text += c));
        res.on("end", () => {
          let body: any = text;
          try {
            body = text ? JSON.parse(text) : undefined;
          } catch {
            /* plain text body */
          }
          resolve({ status: res.statusCode ?? 0, body });
        });
      });
      req.on("timeout", () =>
        req.destroy(
          Object.assign(new Error(`no answer from ${dockerEndpoint(env)} within ${timeoutMs} ms`), {
            code: "ETIMEDOUT",
          }),
        ),
      );
      req.on("error", reject);
      req.end();
    });
}

export interface EngineConnection {
  endpoint: string;
  /** dockerode: `docker` for short calls (with the socket timeout), `longDocker` for builds, pulls and pushes. */
  dockerode(): { docker: Docker; longDocker: Docker };
  /** Plain HTTP to the engine, when DOCKER_HOST allows it (unix, or tcp without TLS). */
  quick: ((method: string, apiPath: string) => Promise<{ status: number; body: any }>) | undefined;
  /** The engine's inspect of an image, undefined when it has none. */
  inspectRaw(ref: string): Promise<Docker.ImageInspectInfo | undefined>;
  /** Reads a JSON-lines progress stream to its end (or the signal). */
  follow(stream: NodeJS.ReadableStream, onMessage: (m: StreamMessage) => void, signal?: AbortSignal): Promise<void>;
}

export function connectEngine(options: { timeoutMs?: number } = {}): EngineConnection {
  let loaded: { docker: Docker; longDocker: Docker } | undefined;
  const dockerode = () => {
    if (!loaded) {
      const Dockerode = loadDockerode();
      // Builds, pulls and pushes are long: no socket timeout on them.
      loaded = {
        docker: new Dockerode({ timeout: options.timeoutMs } as Docker.DockerOptions),
        longDocker: new Dockerode(),
      };
    }
    return loaded;
  };
  const quick = engineClient(process.env, options.timeoutMs);
  const endpoint = dockerEndpoint();
  /** The engine's inspect of an image, undefined when it has none (plain http when it can). */
  const inspectRaw = async (ref: string): Promise<Docker.ImageInspectInfo | undefined> => {
    if (!quick)
      return dockerode()
        .docker.getImage(ref)
        .inspect()
        .catch((e: any) => (e?.statusCode === 404 ? undefined : Promise.reject(e)));
    const res = await quick("GET", `/images/${encodeURIComponent(ref)}/json`);
    if (res.status === 404) return undefined;
    if (res.status !== 200)
      throw new BakeError(
        `docker engine at ${endpoint}: inspecting ${ref} answered HTTP ${res.status}: ${res.body?.message ?? ""}`,
      );
    return res.body;
  };
  const follow = async (stream: NodeJS.ReadableStream, onMessage: (m: StreamMessage) => void, signal?: AbortSignal) => {
    const lines = new JsonLines();
    await new Promise<void>((resolve, reject) => {
      const abort = () => {
        (stream as Readable).destroy?.();
        reject(signal?.reason ?? new Error("aborted"));
      };
      if (signal?.aborted) return abort();
      signal?.addEventListener("abort", abort, { once: true });
      stream.on("data", (chunk: Buffer) => lines.push(chunk).forEach(onMessage));
      stream.on("end", () => {
        lines.end().forEach(onMessage);
        signal?.removeEventListener("abort", abort);
        resolve();
      });
      stream.on("error", (e) => {
        signal?.removeEventListener("abort", abort);
        reject(e);
      });
    });
  };
  return { endpoint, dockerode, quick, inspectRaw, follow };
}

export function toRecord(id: string, tags: string[], labels: Record<string, string>, created: number): BakeImageRecord {
  let inputs: InputDigests | undefined;
  try {
    inputs = labels[LABEL.inputs] ? JSON.parse(labels[LABEL.inputs]) : undefined;
  } catch {
    inputs = undefined;
  }
  return {
    id,
    tags: tags.filter((t) => t !== "<none>:<none>"),
    node: labels[LABEL.node] ?? "",
    key: labels[LABEL.key] ?? "",
    inputs,
    created,
  };
}

/** `host:5000/a/b:tag` → `host:5000/a/b`; a digest reference loses its digest. */
export function repositoryOf(ref: string): string {
  const noDigest = ref.split("@")[0];
  const slash = noDigest.lastIndexOf("/");
  const colon = noDigest.lastIndexOf(":");
  return colon > slash ? noDigest.slice(0, colon) : noDigest;
}

/** Explains an engine connection failure in one line. */
export function describeDockerError(error: unknown, endpoint: string): string {
  const e = error as { code?: string; message?: string };
  if (e?.code === "ENOENT" || e?.code === "ECONNREFUSED") return `docker engine unreachable at ${endpoint} (${e.code})`;
  if (e?.code === "EACCES") return `no permission to use ${endpoint} (EACCES)`;
  return `docker engine at ${endpoint}: ${e?.message ?? String(error)}`;
}
