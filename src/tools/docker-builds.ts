/** The Docker engine's builds: a rootfs imported, a Dockerfile built by the classic builder or by BuildKit with a session. */
import { createHash } from "node:crypto";
import http from "node:http";
import { Readable } from "node:stream";
import { BakeError } from "../errors.js";
import { openSession, SessionRefusedError } from "./buildkit.js";
import type { ServedEntry } from "./buildkit-files.js";
import { BuildKitProgress, decodeTrace } from "./buildkit-progress.js";
import { BuildProgress, streamError, type StreamMessage } from "./docker-stream.js";
import { BuildStreamError, engineTarget, type EngineConnection } from "./docker-engine.js";
import type { ImageVerbs } from "./docker-images.js";

/** How long the engine may take to answer the ping that decides the builder. */
const PING_MS = 20_000;

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
  /**
   * A shared registry's cache: the image carries BuildKit's inline cache (so that what is pushed
   * can seed another engine's build), and the steps of these images in the registry are reused
   * where their cache keys match (a clean CI runner pulls layers instead of running steps again).
   */
  registryCache?: { from: string[] };
}

/** The query of POST /build for a request (the classic builder; labels only when asked for). */
export function buildQuery(
  request: Pick<BuildRequest, "tags" | "dockerfile" | "buildArgs" | "labels" | "noCache">,
): string {
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
function uploadTar(
  target: http.RequestOptions,
  apiPath: string,
  body: Readable,
  signal?: AbortSignal,
): Promise<http.IncomingMessage> {
  return new Promise((resolve, reject) => {
    const req = http.request(
      {
        ...target,
        method: "POST",
        path: apiPath,
        headers: { ...target.headers, "Content-Type": "application/x-tar" },
        signal,
      },
      (res) => {
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
          reject(
            Object.assign(new BakeError(`docker engine answered HTTP ${res.statusCode}: ${message}`), {
              statusCode: res.statusCode,
            }),
          );
        });
      },
    );
    req.on("error", reject);
    body.on("error", (e) => req.destroy(e));
    body.pipe(req);
  });
}

/** The engine's verbs for builds (part of DockerTool). */
export interface BuildVerbs {
  /** Imports a rootfs tar stream as an image; returns its id. */
  importRootfs(
    tar: Readable,
    ref: { repo: string; tag: string },
    labels: Record<string, string>,
    signal?: AbortSignal,
  ): Promise<string>;
  /** Builds through the classic builder; throws BuildStreamError when the stream reports a failure. */
  build(request: BuildRequest): Promise<string>;
  /**
   * Why builds cannot go through BuildKit with a session (which needs a Linux engine, API >= 1.39,
   * reached on a transport bake opens sessions on); undefined when they can.
   */
  buildKitRefusal(): Promise<string | undefined>;
  /** Builds through BuildKit with a session; throws BuildStreamError when the stream reports a failure. */
  buildWithSession(request: SessionBuildRequest): Promise<string>;
}

/** The build verbs, over the engine's connection and the image verbs they tag and inspect with. */
export function buildVerbs(
  { dockerode, quick, follow }: EngineConnection,
  images: Pick<ImageVerbs, "tag" | "inspectImage">,
): BuildVerbs {
  let buildKit: Promise<string | undefined> | undefined;
  return {
    async importRootfs(tar, ref, labels, signal) {
      const changes = Object.entries(labels).map(([k, v]) => `LABEL ${JSON.stringify(k)}=${JSON.stringify(v)}`);
      const stream = (await dockerode().longDocker.importImage(
        tar as any,
        { repo: ref.repo, tag: ref.tag, changes, abortSignal: signal } as any,
      )) as unknown as NodeJS.ReadableStream;
      const messages: StreamMessage[] = [];
      await follow(stream, (m) => messages.push(m), signal);
      const error = streamError(messages);
      if (error) throw new BakeError(`importing the rootfs failed: ${error}`);
      const found = await images.inspectImage(`${ref.repo}:${ref.tag}`);
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
      if (!progress.imageId)
        throw new BuildStreamError("the build stream ended without an image id", progress.step, progress.tail);
      return progress.imageId.startsWith("sha256:")
        ? progress.imageId
        : (await images.inspectImage(progress.imageId))!.id;
    },
    async buildKitRefusal() {
      const target = engineTarget();
      if (!target) return "bake opens BuildKit sessions on unix://, tcp:// (with or without TLS) and ssh:// only";
      // Asked once per run. The engine may be busy with other builds: a slow answer is waited for,
      // and a build that takes the classic builder says why in its log.
      buildKit ??= new Promise<string | undefined>((resolve) => {
        const req = http.request({ ...target, method: "GET", path: "/_ping", timeout: PING_MS }, (res) => {
          res.resume();
          const version = String(res.headers["api-version"] ?? "0.0");
          const [major, minor] = version.split(".").map(Number);
          if (res.statusCode !== 200) resolve(`the engine answered /_ping with HTTP ${res.statusCode}`);
          else if (res.headers["ostype"] !== "linux")
            resolve(`the engine is not a Linux engine (${res.headers["ostype"]})`);
          else if (!(major > 1 || (major === 1 && minor >= 39))) resolve(`the engine's API is ${version}, before 1.39`);
          else resolve(undefined);
        });
        req.on("error", (e) => resolve(`/_ping failed: ${e.message}`));
        req.on("timeout", () => req.destroy(new Error(`no answer within ${PING_MS / 1000} s`)));
        req.end();
      });
      return buildKit;
    },
    async buildWithSession(request) {
      const target = engineTarget()!;
      const [repo, tag] = [
        request.parentTag.slice(0, request.parentTag.lastIndexOf(":")),
        request.parentTag.slice(request.parentTag.lastIndexOf(":") + 1),
      ];
      let session: { id: string; close: () => void } | undefined;
      try {
        await holdParentTag(request.parentTag, () => images.tag(request.parentId, repo, tag));
        const text = request.dockerfileText;
        const dockerfile: ServedEntry = {
          path: "Dockerfile",
          type: "file",
          executable: false,
          size: Buffer.byteLength(text),
          digest: createHash("sha256").update(text).digest("hex"),
          source: { text },
        };
        session = await openSession(
          target,
          { context: request.context, dockerfile: [dockerfile] },
          request.sharedKey,
          request.secrets,
        ).catch((e) => {
          if (e instanceof SessionRefusedError) buildKit = Promise.resolve(e.message); // the rest of the run builds classic
          throw e;
        });
        const q = new URLSearchParams(buildQuery({ ...request, dockerfile: "Dockerfile" }));
        for (const [k, v] of Object.entries({ version: "2", session: session.id, remote: "client-session" }))
          q.set(k, v);
        if (request.registryCache) {
          q.set("buildargs", JSON.stringify({ ...request.buildArgs, BUILDKIT_INLINE_CACHE: "1" }));
          if (request.registryCache.from.length) q.set("cachefrom", JSON.stringify(request.registryCache.from));
        }
        const stream = await uploadTar(target, `/build?${q}`, Readable.from([]), request.signal);
        const progress = new BuildKitProgress();
        await follow(
          stream,
          (m: any) =>
            progress
              .accept(m, m.id === "moby.buildkit.trace" && typeof m.aux === "string" ? decodeTrace(m.aux) : undefined)
              .forEach((l) => request.onLine?.(l)),
          request.signal,
        );
        if (progress.error) throw new BuildStreamError(progress.error, progress.step, progress.tail);
        if (!progress.imageId)
          throw new BuildStreamError("the build stream ended without an image id", progress.step, progress.tail);
        return progress.imageId;
      } finally {
        session?.close();
        await releaseParentTag(request.parentTag, () =>
          quick
            ? quick("DELETE", `/images/${encodeURIComponent(request.parentTag)}?noprune=1`).then(() => undefined)
            : dockerode()
                .docker.getImage(request.parentTag)
                .remove({ noprune: true })
                .then(() => undefined),
        );
      }
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
