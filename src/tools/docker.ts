/** The only module that talks to the Docker engine (through dockerode). */
import { createHash } from "node:crypto";
import { createRequire } from "node:module";
import { createWriteStream } from "node:fs";
import { pipeline } from "node:stream/promises";
import http from "node:http";
import { Readable } from "node:stream";
import type Docker from "dockerode";
import tar from "tar-stream";
import type { InputDigests } from "../graph/keys.js";
import { BakeError } from "../errors.js";
import { dockerConfigFile, refusedMessage, REFUSED, registryAuth, registryOf } from "./docker-credentials.js";
import { BuildKitProgress, decodeTrace, openSession, SessionRefusedError, type ServedEntry } from "./buildkit.js";
import { BuildProgress, JsonLines, pushDigest, streamError, type StreamMessage } from "./docker-stream.js";

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

/** What every build asks of the engine, whichever builder runs it. */
interface BuildSettings {
  tags: string[];
  buildArgs: Record<string, string>;
  labels: Record<string, string>;
  noCache: boolean;
  signal?: AbortSignal;
  onLine?: (line: string) => void;
}

export interface BuildRequest extends BuildSettings {
  context: Readable;
  /** Path of the Dockerfile inside the context tar. */
  dockerfile: string;
}

/** A build through BuildKit with a session (buildkit.ts): the engine reads what it needs. */
export interface SessionBuildRequest extends BuildSettings {
  /** The context's entries (after .dockerignore), read from disk when the engine asks. */
  context: ServedEntry[];
  /** The Dockerfile bake serves, its FROM ${BAKE_PARENT} already naming `parentTag`. */
  dockerfileText: string;
  parentId: string;
  parentTag: string;
  /** Names what the engine keeps of the node's files between builds (one per node). */
  sharedKey: string;
  /** Build secrets by id, served through the session when a RUN --mount asks. */
  secrets?: Map<string, Buffer>;
}

export interface DockerTool {
  /** Where the engine is, for messages. */
  readonly endpoint: string;
  ping(): Promise<{ version: string; apiVersion: string }>;
  /** Throws the connection error when the engine does not answer. */
  reachable(): Promise<void>;
  /** Every image labelled with this project: one query to the engine. */
  listBakeImages(project: string): Promise<BakeImageRecord[]>;
  /** The image each reference names (undefined where there is none), looked up at once. */
  findBakeImages(refs: string[]): Promise<(BakeImageRecord | undefined)[]>;
  /** The image's id and labels, or undefined when the engine does not have it. */
  inspectImage(ref: string): Promise<{ id: string; labels: Record<string, string>; repoDigests: string[]; size: number } | undefined>;
  /** Imports a rootfs tar stream as an image; returns its id. */
  importRootfs(tar: Readable, ref: { repo: string; tag: string }, labels: Record<string, string>, signal?: AbortSignal): Promise<string>;
  /** Builds through the classic builder; throws BuildStreamError when the stream reports a failure. */
  build(request: BuildRequest): Promise<string>;
  /** Whether builds can go through BuildKit with a session (a Linux engine on a plain socket, API >= 1.39). */
  canBuildKit(): Promise<boolean>;
  /** Builds through BuildKit with a session; throws BuildStreamError when the stream reports a failure. */
  buildWithSession(request: SessionBuildRequest): Promise<string>;
  tag(id: string, repo: string, tag: string): Promise<void>;
  /** Pushes repo:tag; returns the manifest digest. */
  push(repo: string, tag: string, signal?: AbortSignal, onLine?: (line: string) => void): Promise<string>;
  /** Pulls a reference; returns false when the registry does not have it. */
  pull(ref: string, signal?: AbortSignal, onLine?: (line: string) => void): Promise<boolean>;
  /** The registry's manifest digest for a reference, without pulling (the engine asks the registry). */
  distributionDigest(ref: string): Promise<string | undefined>;
  removeImage(ref: string): Promise<void>;
  /** Every tag on the engine that matches a reference pattern (`bake-parent/*`). */
  listTags(pattern: string): Promise<string[]>;
  /** Removes an image (and its tags) unless a container uses it; false when one does. */
  removeUnusedImage(id: string): Promise<boolean>;
  /** `docker save` of these references into one archive file, streamed. */
  saveImages(refs: string[], file: string, signal?: AbortSignal): Promise<void>;
  ensureNetwork(name: string, labels: Record<string, string>): Promise<void>;
  removeNetwork(name: string): Promise<boolean>;
  /** Removes every network carrying all of these labels; returns their names. */
  removeNetworks(labels: Record<string, string>): Promise<string[]>;
  /** Containers (running or not) carrying every one of these labels. */
  listContainers(labels: Record<string, string>): Promise<ContainerRecord[]>;
  inspectContainer(idOrName: string): Promise<any | undefined>;
  createContainer(options: Record<string, unknown>): Promise<string>;
  startContainer(id: string): Promise<void>;
  removeContainer(id: string): Promise<void>;
  /** Demultiplexed logs; with follow, resolves when the container stops or the signal aborts. */
  containerLogs(id: string, options: { follow: boolean; tail?: number; signal?: AbortSignal }, write: (stream: "stdout" | "stderr", chunk: Buffer) => void): Promise<void>;
  /** Runs a command in a running container, streaming its output; returns its exit code. */
  exec(id: string, cmd: string[], write: (stream: "stdout" | "stderr", chunk: Buffer) => void): Promise<number>;
  /** Writes files into a container (created or running), from memory: nothing lands on this machine's disk. */
  putFiles(id: string, files: { path: string; content: string; mode: number }[]): Promise<void>;
  /** Whether the image holds this path (a container is created to look, never started). */
  imageHasPath(image: string, path: string): Promise<boolean>;
}

export interface ContainerRecord {
  id: string;
  name: string;
  image: string;
  state: string;
  status: string;
  labels: Record<string, string>;
  ports: { ip?: string; publicPort?: number; privatePort: number; type: string }[];
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

/** The query of POST /build for a request (the classic builder; labels only when asked for). */
export function buildQuery(request: Pick<BuildRequest, "tags" | "dockerfile" | "buildArgs" | "labels" | "noCache">): string {
  const q = new URLSearchParams();
  for (const t of request.tags) q.append("t", t);
  q.set("dockerfile", request.dockerfile);
  q.set("buildargs", JSON.stringify(request.buildArgs));
  if (Object.keys(request.labels).length) q.set("labels", JSON.stringify(request.labels));
  if (request.noCache) q.set("nocache", "1");
  q.set("rm", "1");
  q.set("forcerm", "1");
  return q.toString();
}

/**
 * Streams a tar to the engine and resolves with the response once it starts. Used for builds:
 * through plain http a 1 GiB context uploads ~0.35 s faster than through dockerode's modem.
 */
function uploadTar(target: http.RequestOptions, apiPath: string, body: Readable, signal?: AbortSignal): Promise<http.IncomingMessage> {
  return new Promise((resolve, reject) => {
    const req = http.request({ ...target, method: "POST", path: apiPath, headers: { "Content-Type": "application/x-tar" }, signal }, (res) => {
      if (res.statusCode === 200) return resolve(res);
      let text = "";
      res.setEncoding("utf8");
      res.on("data", (c) => (text += c));
      res.on("end", () => {
        let message = text.trim();
        try {
          message = JSON.parse(text).message ?? message;
        } catch {
          /* plain text body */
        }
        reject(Object.assign(new BakeError(`docker engine answered HTTP ${res.statusCode}: ${message}`), { statusCode: res.statusCode }));
      });
    });
    req.on("error", reject);
    body.on("error", (e) => req.destroy(e));
    body.pipe(req);
  });
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
export function engineClient(env = process.env, timeoutMs = 10_000): ((method: string, apiPath: string) => Promise<{ status: number; body: any }>) | undefined {
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
      req.on("timeout", () => req.destroy(Object.assign(new Error(`no answer from ${dockerEndpoint(env)} within ${timeoutMs} ms`), { code: "ETIMEDOUT" })));
      req.on("error", reject);
      req.end();
    });
}

export function connectDocker(options: { timeoutMs?: number } = {}): DockerTool {
  let loaded: { docker: Docker; longDocker: Docker } | undefined;
  const dockerode = () => {
    if (!loaded) {
      const Dockerode = loadDockerode();
      // Builds, pulls and pushes are long: no socket timeout on them.
      loaded = { docker: new Dockerode({ timeout: options.timeoutMs } as Docker.DockerOptions), longDocker: new Dockerode() };
    }
    return loaded;
  };
  const quick = engineClient(process.env, options.timeoutMs);
  const endpoint = dockerEndpoint();
  let buildKit: Promise<boolean> | undefined;
  /** The engine's inspect of an image, undefined when it has none (plain http when it can). */
  const inspectRaw = async (ref: string): Promise<Docker.ImageInspectInfo | undefined> => {
    if (!quick) return dockerode().docker.getImage(ref).inspect().catch((e: any) => (e?.statusCode === 404 ? undefined : Promise.reject(e)));
    const res = await quick("GET", `/images/${encodeURIComponent(ref)}/json`);
    if (res.status === 404) return undefined;
    if (res.status !== 200) throw new BakeError(`docker engine at ${endpoint}: inspecting ${ref} answered HTTP ${res.status}: ${res.body?.message ?? ""}`);
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
  return {
    endpoint,
    async ping() {
      const v = await dockerode().docker.version();
      return { version: v.Version, apiVersion: v.ApiVersion };
    },
    async reachable() {
      if (!quick) {
        await dockerode().docker.ping();
        return;
      }
      const res = await quick("GET", "/_ping");
      if (res.status !== 200) throw new BakeError(`docker engine at ${endpoint}: /_ping answered HTTP ${res.status}`);
    },
    async findBakeImages(refs) {
      return Promise.all(
        refs.map(async (ref) => {
          const image = await inspectRaw(ref);
          return image && toRecord(image.Id, image.RepoTags ?? [], image.Config?.Labels ?? {}, Math.floor(Date.parse(image.Created) / 1000));
        }),
      );
    },
    async listBakeImages(project) {
      const filters = JSON.stringify({ label: [`${LABEL.project}=${project}`] });
      let images: Docker.ImageInfo[];
      if (quick) {
        const res = await quick("GET", `/images/json?filters=${encodeURIComponent(filters)}`);
        if (res.status !== 200) throw new BakeError(`docker engine at ${endpoint}: listing images answered HTTP ${res.status}: ${res.body?.message ?? ""}`);
        images = res.body;
      } else images = await dockerode().docker.listImages({ filters });
      return images.map((img) => toRecord(img.Id, img.RepoTags ?? [], img.Labels ?? {}, img.Created));
    },
    async inspectImage(ref) {
      const i = await inspectRaw(ref);
      return i && { id: i.Id, labels: i.Config?.Labels ?? {}, repoDigests: i.RepoDigests ?? [], size: i.Size };
    },
    async importRootfs(tar, ref, labels, signal) {
      const changes = Object.entries(labels).map(([k, v]) => `LABEL ${JSON.stringify(k)}=${JSON.stringify(v)}`);
      const stream = (await dockerode().longDocker.importImage(tar as any, { repo: ref.repo, tag: ref.tag, changes, abortSignal: signal } as any)) as unknown as NodeJS.ReadableStream;
      const messages: StreamMessage[] = [];
      await follow(stream, (m) => messages.push(m), signal);
      const error = streamError(messages);
      if (error) throw new BakeError(`importing the rootfs failed: ${error}`);
      const found = await this.inspectImage(`${ref.repo}:${ref.tag}`);
      if (!found) throw new BakeError(`importing the rootfs produced no image ${ref.repo}:${ref.tag}`);
      return found.id;
    },
    async build(request) {
      const target = engineTarget();
      const stream: NodeJS.ReadableStream = target
        ? await uploadTar(target, `/build?${buildQuery(request)}`, request.context, request.signal)
        : await (dockerode().longDocker.buildImage as any)(request.context, {
            t: request.tags,
            dockerfile: request.dockerfile,
            buildargs: request.buildArgs,
            labels: request.labels,
            nocache: request.noCache,
            rm: true,
            forcerm: true,
            abortSignal: request.signal,
          } as any);
      const progress = new BuildProgress();
      await follow(stream, (m) => progress.accept(m).forEach((l) => request.onLine?.(l)), request.signal);
      if (progress.error) throw new BuildStreamError(progress.error, progress.step, progress.tail);
      if (!progress.imageId) throw new BuildStreamError("the build stream ended without an image id", progress.step, progress.tail);
      return progress.imageId.startsWith("sha256:") ? progress.imageId : (await this.inspectImage(progress.imageId))!.id;
    },
    async canBuildKit() {
      const target = engineTarget();
      if (!target) return false;
      buildKit ??= new Promise<boolean>((resolve) => {
        const req = http.request({ ...target, method: "GET", path: "/_ping", timeout: 5000 }, (res) => {
          res.resume();
          const [major, minor] = String(res.headers["api-version"] ?? "0.0").split(".").map(Number);
          resolve(res.statusCode === 200 && res.headers["ostype"] === "linux" && (major > 1 || (major === 1 && minor >= 39)));
        });
        req.on("error", () => resolve(false));
        req.on("timeout", () => req.destroy());
        req.end();
      });
      return buildKit;
    },
    async buildWithSession(request) {
      const target = engineTarget()!;
      const [repo, tag] = [request.parentTag.slice(0, request.parentTag.lastIndexOf(":")), request.parentTag.slice(request.parentTag.lastIndexOf(":") + 1)];
      let session: { id: string; close: () => void } | undefined;
      try {
        await holdParentTag(request.parentTag, () => this.tag(request.parentId, repo, tag));
        const text = request.dockerfileText;
        const dockerfile: ServedEntry = { path: "Dockerfile", type: "file", executable: false, size: Buffer.byteLength(text), digest: createHash("sha256").update(text).digest("hex"), source: { text } };
        session = await openSession(target, { context: request.context, dockerfile: [dockerfile] }, request.sharedKey, request.secrets).catch((e) => {
          if (e instanceof SessionRefusedError) buildKit = Promise.resolve(false); // the rest of the run builds classic
          throw e;
        });
        const q = new URLSearchParams(buildQuery({ ...request, dockerfile: "Dockerfile" }));
        for (const [k, v] of Object.entries({ version: "2", session: session.id, remote: "client-session" })) q.set(k, v);
        const stream = await uploadTar(target, `/build?${q}`, Readable.from([]), request.signal);
        const progress = new BuildKitProgress();
        await follow(stream, (m: any) => progress.accept(m, m.id === "moby.buildkit.trace" && typeof m.aux === "string" ? decodeTrace(m.aux) : undefined).forEach((l) => request.onLine?.(l)), request.signal);
        if (progress.error) throw new BuildStreamError(progress.error, progress.step, progress.tail);
        if (!progress.imageId) throw new BuildStreamError("the build stream ended without an image id", progress.step, progress.tail);
        return progress.imageId;
      } finally {
        session?.close();
        await releaseParentTag(request.parentTag, () => quick ? quick("DELETE", `/images/${encodeURIComponent(request.parentTag)}?noprune=1`).then(() => undefined) : dockerode().docker.getImage(request.parentTag).remove({ noprune: true }).then(() => undefined));
      }
    },
    async tag(id, repo, tag) {
      if (quick) {
        const res = await quick("POST", `/images/${encodeURIComponent(id)}/tag?repo=${encodeURIComponent(repo)}&tag=${encodeURIComponent(tag)}`);
        if (res.status !== 201) throw new BakeError(`tagging ${repo}:${tag} answered HTTP ${res.status}: ${res.body?.message ?? ""}`);
        return;
      }
      await dockerode().docker.getImage(id).tag({ repo, tag });
    },
    async push(repo, tag, signal, onLine) {
      const auth = await registryAuth(registryOf(repo));
      const stream: NodeJS.ReadableStream = await (dockerode().longDocker.getImage(`${repo}:${tag}`) as any).push({ tag, authconfig: auth ?? { serveraddress: registryOf(repo) }, abortSignal: signal } as any);
      const messages: StreamMessage[] = [];
      await follow(stream, (m) => {
        messages.push(m);
        if (m.status && onLine) onLine(`${m.id ? `${m.id}: ` : ""}${m.status}`);
      }, signal);
      const error = streamError(messages);
      if (error && REFUSED.test(error)) throw new BakeError(refusedMessage(`pushing ${repo}:${tag}`, error, registryOf(repo), Boolean(auth), dockerConfigFile()));
      if (error) throw new BakeError(`pushing ${repo}:${tag} failed: ${error}`);
      const digest = pushDigest(messages);
      if (!digest) throw new BakeError(`pushing ${repo}:${tag} reported no digest`);
      return digest;
    },
    async pull(ref, signal, onLine) {
      const auth = await registryAuth(registryOf(ref));
      let stream: NodeJS.ReadableStream;
      try {
        stream = await dockerode().longDocker.pull(ref, { authconfig: auth, abortSignal: signal } as any);
      } catch (e: any) {
        if (e?.statusCode === 404) return false;
        const reason = String(e?.json?.message ?? e?.message ?? e);
        if (REFUSED.test(reason)) throw new BakeError(refusedMessage(`pulling ${ref}`, reason, registryOf(ref), Boolean(auth), dockerConfigFile()));
        throw e;
      }
      const messages: StreamMessage[] = [];
      await follow(stream, (m) => {
        messages.push(m);
        if (m.status && onLine && !m.progress) onLine(`${m.id ? `${m.id}: ` : ""}${m.status}`);
      }, signal);
      const error = streamError(messages);
      if (error) {
        if (/not found|manifest unknown/i.test(error)) return false;
        if (REFUSED.test(error)) throw new BakeError(refusedMessage(`pulling ${ref}`, error, registryOf(ref), Boolean(auth), dockerConfigFile()));
        throw new BakeError(`pulling ${ref} failed: ${error}`);
      }
      return true;
    },
    async distributionDigest(ref) {
      try {
        const info: any = await (dockerode().docker.getImage(ref) as any).distribution({ authconfig: await registryAuth(registryOf(ref)) });
        return info?.Descriptor?.digest;
      } catch (e: any) {
        if (e?.statusCode === 404 || e?.statusCode === 401 || e?.statusCode === 403) return undefined;
        throw e;
      }
    },
    async saveImages(refs, file, signal) {
      const docker = dockerode().longDocker;
      const stream: NodeJS.ReadableStream = await new Promise((resolve, reject) =>
        (docker as any).modem.dial({ path: "/images/get?", method: "GET", options: { names: refs }, isStream: true, abortSignal: signal, statusCodes: { 200: true, 404: "no such image", 500: "server error" } }, (err: Error | null, res: NodeJS.ReadableStream) => (err ? reject(err) : resolve(res))),
      );
      await pipeline(stream, createWriteStream(file), { signal });
    },
    async ensureNetwork(name, labels) {
      const { docker } = dockerode();
      const found = await docker.listNetworks({ filters: JSON.stringify({ name: [name] }) });
      if (found.some((n) => n.Name === name)) return;
      await docker.createNetwork({ Name: name, Labels: labels, CheckDuplicate: true } as any);
    },
    async removeNetwork(name) {
      const { docker } = dockerode();
      try {
        await docker.getNetwork(name).remove();
        return true;
      } catch (e: any) {
        if (e?.statusCode === 404) return false;
        throw e;
      }
    },
    async removeNetworks(labels) {
      const { docker } = dockerode();
      const found = await docker.listNetworks({ filters: JSON.stringify({ label: Object.entries(labels).map(([k, v]) => `${k}=${v}`) }) });
      for (const n of found) await docker.getNetwork(n.Id).remove().catch((e: any) => {
        if (e?.statusCode !== 404) throw e;
      });
      return found.map((n) => n.Name);
    },
    async listContainers(labels) {
      const filters = JSON.stringify({ label: Object.entries(labels).map(([k, v]) => `${k}=${v}`) });
      const list = await dockerode().docker.listContainers({ all: true, filters });
      return list.map((c) => ({
        id: c.Id,
        name: (c.Names?.[0] ?? "").replace(/^\//, ""),
        image: c.Image,
        state: c.State,
        status: c.Status,
        labels: c.Labels ?? {},
        ports: (c.Ports ?? []).map((p) => ({ ip: p.IP, publicPort: p.PublicPort, privatePort: p.PrivatePort, type: p.Type })),
      }));
    },
    async inspectContainer(idOrName) {
      try {
        return await dockerode().docker.getContainer(idOrName).inspect();
      } catch (e: any) {
        if (e?.statusCode === 404) return undefined;
        throw e;
      }
    },
    async createContainer(options) {
      return (await dockerode().docker.createContainer(options as any)).id;
    },
    async startContainer(id) {
      await dockerode().docker.getContainer(id).start();
    },
    async removeContainer(id) {
      await dockerode()
        .docker.getContainer(id)
        .remove({ force: true, v: true })
        .catch((e: any) => {
          if (e?.statusCode !== 404) throw e;
        });
    },
    async containerLogs(id, options, write) {
      const { longDocker } = dockerode();
      const container = longDocker.getContainer(id);
      const info = await container.inspect();
      const tty = Boolean(info.Config?.Tty);
      // Without follow the engine answers with the whole log at once; an abortSignal would make
      // dockerode treat the answer as a stream that never ends.
      const opts = { stdout: true, stderr: true, follow: options.follow, tail: options.tail ?? "all", ...(options.follow ? { abortSignal: options.signal } : {}) } as any;
      const data: any = await container.logs(opts);
      if (!options.follow) {
        demuxBuffer(Buffer.isBuffer(data) ? data : Buffer.from(data), tty, write);
        return;
      }
      await new Promise<void>((resolve, reject) => {
        const out = { write: (c: Buffer) => write("stdout", c) };
        const err = { write: (c: Buffer) => write("stderr", c) };
        if (tty) data.on("data", (c: Buffer) => write("stdout", c));
        else longDocker.modem.demuxStream(data, out as any, err as any);
        data.on("end", resolve);
        data.on("error", (e: Error) => (options.signal?.aborted ? resolve() : reject(e)));
        options.signal?.addEventListener("abort", () => {
          data.destroy?.();
          resolve();
        });
      });
    },
    async exec(id, cmd, write) {
      const { longDocker } = dockerode();
      const exec = await longDocker.getContainer(id).exec({ Cmd: cmd, AttachStdout: true, AttachStderr: true });
      const stream: any = await exec.start({ hijack: true, stdin: false } as any);
      await new Promise<void>((resolve, reject) => {
        longDocker.modem.demuxStream(stream, { write: (c: Buffer) => write("stdout", c) } as any, { write: (c: Buffer) => write("stderr", c) } as any);
        stream.on("end", resolve);
        stream.on("error", reject);
      });
      return (await exec.inspect()).ExitCode ?? 0;
    },
    async removeUnusedImage(id) {
      const { docker } = dockerode();
      const info = await docker.getImage(id).inspect().catch(() => undefined);
      if (!info) return true;
      // Asked first: the engine refuses only at the last step, after every other tag is gone.
      if ((await docker.listContainers({ all: true, filters: JSON.stringify({ ancestor: [info.Id] }) })).length) return false;
      try {
        // Untag every name first: removal by id refuses an image with several tags.
        for (const tag of info.RepoTags ?? []) if (tag !== "<none>:<none>") await docker.getImage(tag).remove({ noprune: false });
        await docker.getImage(id).remove().catch((e: any) => {
          if (e?.statusCode !== 404) throw e;
        });
        return true;
      } catch (e: any) {
        if (e?.statusCode === 409) return false;
        throw e;
      }
    },
    async putFiles(id, files) {
      const pack = tar.pack();
      for (const f of files) pack.entry({ name: f.path.replace(/^\/+/, ""), mode: f.mode, uid: 0, gid: 0 }, f.content);
      pack.finalize();
      const chunks: Buffer[] = [];
      for await (const c of pack) chunks.push(c as Buffer);
      await dockerode().docker.getContainer(id).putArchive(Buffer.concat(chunks), { path: "/" });
    },
    async imageHasPath(image, path) {
      const container = await dockerode().docker.createContainer({ Image: image, Cmd: ["/bin/true"], Entrypoint: [""], NetworkDisabled: true } as any);
      try {
        await (container as any).infoArchive({ path });
        return true;
      } catch (e: any) {
        if (e?.statusCode === 404) return false;
        throw e;
      } finally {
        await container.remove({ force: true }).catch(() => undefined);
      }
    },
    async listTags(pattern) {
      const images = await dockerode().docker.listImages({ filters: JSON.stringify({ reference: [pattern] }) });
      const [repo] = pattern.split(":");
      const matches = (t: string) => t.startsWith(repo.replace(/\*$/, ""));
      return images.flatMap((i) => (i.RepoTags ?? []).filter(matches));
    },
    async removeImage(ref) {
      await dockerode().docker.getImage(ref).remove({ force: true }).catch((e: any) => {
        if (e?.statusCode !== 404) throw e;
      });
    },
  };
}

/**
 * The tags that name parents for BuildKit builds in flight (several children of one parent share
 * one), made before the first and removed after the last; a removal only untags: the parent
 * keeps its own tags.
 */
const parentTags = new Map<string, { made: Promise<void>; users: number }>();
async function holdParentTag(tag: string, make: () => Promise<void>): Promise<void> {
  const held = parentTags.get(tag) ?? { made: make(), users: 0 };
  held.users++;
  parentTags.set(tag, held);
  await held.made;
}
async function releaseParentTag(tag: string, remove: () => Promise<void>): Promise<void> {
  const held = parentTags.get(tag);
  if (held && --held.users > 0) return;
  parentTags.delete(tag);
  await remove().catch(() => undefined);
}

/** Splits a non-streamed log buffer (8-byte frame headers unless the container has a TTY). */
export function demuxBuffer(buf: Buffer, tty: boolean, write: (stream: "stdout" | "stderr", chunk: Buffer) => void): void {
  if (tty) {
    write("stdout", buf);
    return;
  }
  let at = 0;
  while (at + 8 <= buf.length) {
    const kind = buf[at];
    const size = buf.readUInt32BE(at + 4);
    write(kind === 2 ? "stderr" : "stdout", buf.subarray(at + 8, at + 8 + size));
    at += 8 + size;
  }
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
