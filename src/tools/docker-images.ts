/** The Docker engine's images: find, inspect, import, build (classic and BuildKit), tag, save, remove. */
import { createHash } from "node:crypto";
import { createWriteStream } from "node:fs";
import http from "node:http";
import { Readable } from "node:stream";
import { posix } from "node:path";
import { firstTarEntry } from "./tar.js";
import { pipeline } from "node:stream/promises";
import { BakeError } from "../errors.js";
import { BuildKitProgress, decodeTrace, openSession, SessionRefusedError, type ServedEntry } from "./buildkit.js";
import { BuildProgress, streamError, type StreamMessage } from "./docker-stream.js";
import type Docker from "dockerode";
import { BuildStreamError, engineTarget, LABEL, toRecord, type BakeImageRecord, type EngineConnection } from "./docker-engine.js";

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

/** The engine's verbs for images (part of DockerTool). */
export interface ImageVerbs {
  /** Every image labelled with this project: one query to the engine. */
  listBakeImages(project: string): Promise<BakeImageRecord[]>;
  /** The image each reference names (undefined where there is none), looked up at once. */
  findBakeImages(refs: string[]): Promise<(BakeImageRecord | undefined)[]>;
  /** The image's id and labels, or undefined when the engine does not have it. */
  inspectImage(ref: string): Promise<{ id: string; labels: Record<string, string>; repoDigests: string[]; size: number; created: string } | undefined>;
  /** Imports a rootfs tar stream as an image; returns its id. */
  importRootfs(tar: Readable, ref: { repo: string; tag: string }, labels: Record<string, string>, signal?: AbortSignal): Promise<string>;
  /** Builds through the classic builder; throws BuildStreamError when the stream reports a failure. */
  build(request: BuildRequest): Promise<string>;
  /** Whether builds can go through BuildKit with a session (a Linux engine on a plain socket, API >= 1.39). */
  canBuildKit(): Promise<boolean>;
  /** Builds through BuildKit with a session; throws BuildStreamError when the stream reports a failure. */
  buildWithSession(request: SessionBuildRequest): Promise<string>;
  tag(id: string, repo: string, tag: string): Promise<void>;
  removeImage(ref: string): Promise<void>;
  /** Every tag on the engine that matches a reference pattern (`bake-parent/*`). */
  listTags(pattern: string): Promise<string[]>;
  /** Removes an image (and its tags) unless a container uses it; false when one does. */
  removeUnusedImage(id: string): Promise<boolean>;
  /** `docker save` of these references into one archive file, streamed. */
  saveImages(refs: string[], file: string, signal?: AbortSignal): Promise<void>;
  /** Whether the image holds this path (a container is created to look, never started). */
  imageHasPath(image: string, path: string): Promise<boolean>;
  /**
   * The contents of these files in the image, by path (links followed; absent files left out),
   * and an empty entry for each of `present` that exists: nothing is run.
   */
  readImageFiles(image: string, paths: string[], present?: string[]): Promise<Map<string, Buffer>>;
}

export function imageVerbs({ dockerode, quick, endpoint, inspectRaw, follow }: EngineConnection): ImageVerbs {
  let buildKit: Promise<boolean> | undefined;
  const readImageFiles: ImageVerbs["readImageFiles"] = async (image, paths, present = []) => {
    const container = await dockerode().docker.createContainer({ Image: image, Cmd: ["/bin/true"], Entrypoint: [""], NetworkDisabled: true } as any);
    const found = new Map<string, Buffer>();
    try {
      // HEAD of each path. dockerode answers it with the response stream, which must be read to
      // its end: an unread one keeps its connection busy, and the process alive, until the engine
      // drops it (seen: every build of an image with /bin/rpm ended 5-10 s after its output).
      const there = await Promise.all(
        present.map((p) =>
          (container as any).infoArchive({ path: p }).then(
            (res: Readable) => {
              res.resume();
              return true;
            },
            (e: any) => (e?.statusCode === 404 ? false : Promise.reject(e)),
          ),
        ),
      );
      present.forEach((p, i) => there[i] && found.set(p, Buffer.alloc(0)));
      // Each path in its own request, all at once (one round trip's wait, not one per path).
      const contents = await Promise.all(
        paths.map(async (wanted) => {
          // A symbolic link (/etc/os-release → ../usr/lib/os-release) is followed inside the image.
          let at = wanted;
          for (let hops = 0; hops < 8; hops++) {
            const entry = await archivedFile(container, at);
            if (!entry) return undefined;
            if (entry.link === undefined) return entry.content;
            at = posix.resolve(posix.dirname(at), entry.link);
          }
          return undefined;
        }),
      );
      paths.forEach((p, i) => contents[i] && found.set(p, contents[i]!));
      return found;
    } finally {
      await container.remove({ force: true }).catch(() => undefined);
    }
  };
  return {
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
      return i && { id: i.Id, labels: i.Config?.Labels ?? {}, repoDigests: i.RepoDigests ?? [], size: i.Size, created: i.Created };
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
    async saveImages(refs, file, signal) {
      const docker = dockerode().longDocker;
      const stream: NodeJS.ReadableStream = await new Promise((resolve, reject) =>
        (docker as any).modem.dial({ path: "/images/get?", method: "GET", options: { names: refs }, isStream: true, abortSignal: signal, statusCodes: { 200: true, 404: "no such image", 500: "server error" } }, (err: Error | null, res: NodeJS.ReadableStream) => (err ? reject(err) : resolve(res))),
      );
      await pipeline(stream, createWriteStream(file), { signal });
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
    async imageHasPath(image, path) {
      return (await readImageFiles(image, [], [path])).has(path);
    },
    readImageFiles,
    async listTags(pattern) {
      const images = await dockerode().docker.listImages({ filters: JSON.stringify({ reference: [pattern] }) });
      // The engine's reference filter, again on each tag: `*` is one path component (`bake-parent/*/*`).
      const [repo] = pattern.split(":");
      const glob = new RegExp(`^${repo.split("*").map((p) => p.replace(/[.+?^${}()|[\]\\]/g, "\\$&")).join("[^/:]*")}:`);
      const matches = (t: string) => glob.test(t);
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
/** Removals in flight: a build that needs the tag again makes it only once the engine removed it. */
const removingParentTags = new Map<string, Promise<void>>();
export async function holdParentTag(tag: string, make: () => Promise<void>): Promise<void> {
  let held = parentTags.get(tag);
  if (!held) {
    // Made after a removal of the same tag has landed: the engine could otherwise take the tag
    // request first and the removal after it, and the next build's FROM would name no image.
    held = { made: (removingParentTags.get(tag) ?? Promise.resolve()).then(make), users: 0 };
    parentTags.set(tag, held);
  }
  held.users++;
  await held.made;
}
export async function releaseParentTag(tag: string, remove: () => Promise<void>): Promise<void> {
  const held = parentTags.get(tag);
  if (held && --held.users > 0) return;
  parentTags.delete(tag);
  const removal = remove().catch(() => undefined);
  removingParentTags.set(tag, removal);
  await removal;
  if (removingParentTags.get(tag) === removal) removingParentTags.delete(tag);
}

/** The first entry of the engine's archive of one path: a file's content or a link's target; undefined when absent. */
async function archivedFile(container: any, at: string): Promise<{ content: Buffer; link?: undefined } | { content?: undefined; link: string } | undefined> {
  let stream: Readable;
  try {
    stream = await container.getArchive({ path: at });
  } catch (e: any) {
    if (e?.statusCode === 404) return undefined;
    throw e;
  }
  // Bounded by size and type: a link such as /etc/os-release → / must not pull the whole root
  // filesystem into memory, nor a file of gigabytes where a package database should be.
  const first = await firstTarEntry(stream, IMAGE_FILE_MAX_BYTES);
  if (first?.type === "symlink") return { link: first.linkname ?? "" };
  if (first?.type === "file" && !first.content) throw new BakeError(`${at} in the image is ${first.size} bytes, more than bake reads (${IMAGE_FILE_MAX_BYTES / 2 ** 20} MiB)`);
  return first?.content ? { content: first.content } : undefined;
}

/** The most bake reads of one file from an image (a package database). */
export const IMAGE_FILE_MAX_BYTES = 64 * 2 ** 20;
