/**
 * The connection to the Docker engine that every docker-*.ts verb module shares: dockerode
 * (loaded on first use), plain HTTP for quick calls, and the helpers that read the engine's
 * streamed answers. What the engine's answers mean to bake (labels, records) lives here too.
 */
import { createRequire } from "node:module";
import { existsSync, readFileSync } from "node:fs";
import http from "node:http";
import { isIP } from "node:net";
import { homedir } from "node:os";
import path from "node:path";
import type tlsModule from "node:tls";
import type { Readable } from "node:stream";
import type Docker from "dockerode";
import type { InputDigests } from "../graph/keys.js";
import { BakeError, UsageError } from "../errors.js";
import { JsonLines, type StreamMessage } from "./docker-stream.js";
import { lastSshFailure, sshEngineSocket } from "./docker-ssh.js";

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

/** The Host header of a request on a socket, as the docker CLI sends it. */
const SOCKET_HOST = "api.moby.localhost";

/** How the engine is reached: DOCKER_HOST's scheme, and TLS for tcp as the docker CLI decides it. */
export type Transport = "unix" | "tcp" | "tcp+tls" | "ssh" | "other";

/** TLS to a tcp engine, as the docker CLI reads it: DOCKER_TLS_VERIFY, DOCKER_TLS, DOCKER_CERT_PATH (default ~/.docker). */
export interface EngineTls {
  verify: boolean;
  certPath: string;
  ca?: Buffer;
  cert?: Buffer;
  key?: Buffer;
}

export function engineTls(env = process.env): EngineTls | undefined {
  if (!env.DOCKER_TLS_VERIFY && !env.DOCKER_TLS && !env.DOCKER_CERT_PATH) return undefined;
  const certPath = env.DOCKER_CERT_PATH || path.join(homedir(), ".docker");
  const read = (f: string) => (existsSync(path.join(certPath, f)) ? readFileSync(path.join(certPath, f)) : undefined);
  const verify = Boolean(env.DOCKER_TLS_VERIFY);
  const files = { ca: read("ca.pem"), cert: read("cert.pem"), key: read("key.pem") };
  if (verify && !files.ca)
    throw new UsageError(
      `DOCKER_TLS_VERIFY is set but ${path.join(certPath, "ca.pem")} does not exist: put the engine's CA certificate there, or point DOCKER_CERT_PATH at the folder holding ca.pem, cert.pem and key.pem`,
    );
  if (Boolean(files.cert) !== Boolean(files.key))
    throw new UsageError(
      `${certPath} holds ${files.cert ? "cert.pem without key.pem" : "key.pem without cert.pem"}: a client certificate needs both`,
    );
  return { verify, certPath, ...files };
}

export function engineTransport(env = process.env): Transport {
  const host = dockerEndpoint(env);
  if (host.startsWith("unix://")) return "unix";
  if (host.startsWith("ssh://")) return "ssh";
  if (host.startsWith("tcp://"))
    return env.DOCKER_TLS_VERIFY || env.DOCKER_TLS || env.DOCKER_CERT_PATH ? "tcp+tls" : "tcp";
  return "other";
}

/**
 * Where bake's own HTTP reaches the engine (quick calls, build uploads, BuildKit sessions): a unix
 * socket, plain tcp, tcp over TLS (a connection made with the CLI's certificates, on which the
 * same HTTP and its /session upgrade run), or for ssh a local socket whose every connection is one
 * `ssh … docker system dial-stdio` (docker-ssh.ts); undefined for transports bake does not know.
 */
export function engineTarget(env = process.env): http.RequestOptions | undefined {
  const host = dockerEndpoint(env);
  const transport = engineTransport(env);
  // On a socket, the Host header the docker CLI sends: Node would otherwise derive one, and the
  // check it makes on the way (is "localhost" an IPv6 address?) compiles a regular expression that
  // costs a no-op run ~5 ms.
  if (transport === "unix") return { socketPath: host.slice("unix://".length), headers: { Host: SOCKET_HOST } };
  if (transport === "ssh") return { socketPath: sshEngineSocket(host), headers: { Host: SOCKET_HOST } };
  if (transport !== "tcp" && transport !== "tcp+tls") return undefined;
  const url = new URL(`http://${host.slice("tcp://".length)}`);
  const hostname = url.hostname.replace(/^\[|\]$/g, "");
  if (transport === "tcp") return { host: hostname, port: Number(url.port || 2375) };
  const t = engineTls(env)!;
  const port = Number(url.port || 2376);
  return {
    host: hostname,
    port,
    createConnection: () =>
      (createRequire(import.meta.url)("node:tls") as typeof tlsModule).connect({
        host: hostname,
        port,
        ca: t.ca,
        cert: t.cert,
        key: t.key,
        rejectUnauthorized: t.verify,
        ...(isIP(hostname) ? {} : { servername: hostname }),
      }),
  };
}

/** dockerode's options for the engine DOCKER_HOST names, with the same TLS material as bake's own HTTP. */
function dockerodeOptions(env = process.env): Docker.DockerOptions {
  // docker-modem reads DOCKER_HOST itself and would take ssh:// to its own ssh client (keys from
  // an agent only, no ~/.ssh/config): every field it would take from there is set here.
  if (engineTransport(env) === "ssh")
    return {
      socketPath: sshEngineSocket(dockerEndpoint(env)),
      host: undefined,
      port: undefined,
      protocol: "http",
    } as Docker.DockerOptions;
  if (engineTransport(env) !== "tcp+tls") return {};
  const url = new URL(`http://${dockerEndpoint(env).slice("tcp://".length)}`);
  const t = engineTls(env)!;
  return {
    protocol: "https",
    host: url.hostname.replace(/^\[|\]$/g, ""),
    port: Number(url.port || 2376),
    ca: t.ca,
    cert: t.cert,
    key: t.key,
  } as Docker.DockerOptions;
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
      const route = dockerodeOptions();
      loaded = {
        docker: new Dockerode({ ...route, timeout: options.timeoutMs } as Docker.DockerOptions),
        longDocker: new Dockerode(route),
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
/** What a TLS handshake's failure means, and what to fix. */
const TLS_FAILURES: [RegExp, string][] = [
  [
    /SELF_SIGNED|UNABLE_TO_VERIFY|UNABLE_TO_GET_ISSUER|CERT_SIGNATURE_FAILURE/,
    "the engine's certificate is not signed by ca.pem: put the engine's CA certificate in DOCKER_CERT_PATH",
  ],
  [
    /ERR_TLS_CERT_ALTNAME_INVALID/,
    "the engine's certificate does not name this host: use the name or address it names in DOCKER_HOST",
  ],
  [/CERT_HAS_EXPIRED|CERT_NOT_YET_VALID/, "the engine's certificate is not valid now: renew it"],
  [
    /CERTIFICATE_REQUIRED|BAD_CERTIFICATE|UNKNOWN_CA|alert/i,
    "the engine refused bake's client certificate: put a certificate the engine's CA signed in DOCKER_CERT_PATH (cert.pem, key.pem)",
  ],
];

export function describeDockerError(error: unknown, endpoint: string): string {
  const e = error as { code?: string; message?: string };
  const over = engineTransport() === "tcp+tls" && endpoint === dockerEndpoint() ? " over TLS" : "";
  if (over) {
    const said = `${e?.code ?? ""} ${e?.message ?? ""}`;
    const found = TLS_FAILURES.find(([pattern]) => pattern.test(said));
    if (found)
      return `docker engine at ${endpoint}${over} (${engineTls()?.certPath}): ${found[1]} (${e?.code ?? e?.message})`;
  }
  const ssh = engineTransport() === "ssh" && endpoint === dockerEndpoint() ? lastSshFailure() : undefined;
  if (ssh) return `docker engine at ${endpoint} over ssh: ${ssh}`;
  if (e?.code === "ENOENT" || e?.code === "ECONNREFUSED")
    return `docker engine unreachable at ${endpoint}${over} (${e.code})`;
  if (e?.code === "EACCES") return `no permission to use ${endpoint} (EACCES)`;
  return `docker engine at ${endpoint}: ${e?.message ?? String(error)}`;
}
