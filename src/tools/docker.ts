/**
 * The only door to the Docker engine: the verbs bake uses, behind one narrow interface. The verbs
 * live by concern beside it (docker-images.ts, docker-registry.ts, docker-containers.ts) over
 * one shared connection (docker-engine.ts).
 */
import type { Readable } from "node:stream";
import { BakeError } from "../errors.js";
import { connectEngine } from "./docker-engine.js";
import { imageVerbs, type BuildRequest, type SessionBuildRequest } from "./docker-images.js";
import { registryVerbs } from "./docker-registry.js";
import { containerVerbs, type ContainerRecord } from "./docker-containers.js";
import type { BakeImageRecord } from "./docker-engine.js";

export { LABEL, BuildStreamError, dockerEndpoint, engineTarget, engineClient, loadDockerode, toRecord, repositoryOf, describeDockerError, type BakeImageRecord } from "./docker-engine.js";
export { buildQuery, type BuildRequest, type SessionBuildRequest } from "./docker-images.js";
export { demuxBuffer, type ContainerRecord } from "./docker-containers.js";

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
  putFiles(id: string, files: { path: string; content: string | Buffer; mode: number }[]): Promise<void>;
  /** Waits for a container to stop; returns its exit code. */
  waitContainer(id: string): Promise<number>;
  /** Whether the image holds this path (a container is created to look, never started). */
  imageHasPath(image: string, path: string): Promise<boolean>;
  /**
   * The contents of these files in the image, by path (links followed; absent files left out),
   * and an empty entry for each of `present` that exists: nothing is run.
   */
  readImageFiles(image: string, paths: string[], present?: string[]): Promise<Map<string, Buffer>>;
}

export function connectDocker(options: { timeoutMs?: number } = {}): DockerTool {
  const engine = connectEngine(options);
  const { dockerode, quick, endpoint } = engine;
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
    ...imageVerbs(engine),
    ...registryVerbs(engine),
    ...containerVerbs(engine),
  };
}
