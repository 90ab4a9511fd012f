/** The Docker engine's images as an inventory: find, inspect, tag, save, remove. */
import { createWriteStream } from "node:fs";
import { pipeline } from "node:stream/promises";
import { BakeError } from "../errors.js";
import type Docker from "dockerode";
import { LABEL, toRecord, type BakeImageRecord, type EngineConnection } from "./docker-engine.js";

/** The engine's verbs for images (part of DockerTool). */
export interface ImageVerbs {
  /** Every image labelled with this project: one query to the engine. */
  listBakeImages(project: string): Promise<BakeImageRecord[]>;
  /** The image each reference names (undefined where there is none), looked up at once. */
  findBakeImages(refs: string[]): Promise<(BakeImageRecord | undefined)[]>;
  /** The image's id and labels, or undefined when the engine does not have it. */
  inspectImage(
    ref: string,
  ): Promise<
    { id: string; labels: Record<string, string>; repoDigests: string[]; size: number; created: string } | undefined
  >;
  tag(id: string, repo: string, tag: string): Promise<void>;
  removeImage(ref: string): Promise<void>;
  /** Every tag on the engine that matches a reference pattern (`bake-parent/*`). */
  listTags(pattern: string): Promise<string[]>;
  /** Removes an image (and its tags) unless a container uses it; false when one does. */
  removeUnusedImage(id: string): Promise<boolean>;
  /** `docker save` of these references into one archive file, streamed. */
  saveImages(refs: string[], file: string, signal?: AbortSignal): Promise<void>;
}

export function imageVerbs({ dockerode, quick, endpoint, inspectRaw }: EngineConnection): ImageVerbs {
  return {
    async findBakeImages(refs) {
      return Promise.all(
        refs.map(async (ref) => {
          const image = await inspectRaw(ref);
          return (
            image &&
            toRecord(
              image.Id,
              image.RepoTags ?? [],
              image.Config?.Labels ?? {},
              Math.floor(Date.parse(image.Created) / 1000),
            )
          );
        }),
      );
    },
    async listBakeImages(project) {
      const filters = JSON.stringify({ label: [`${LABEL.project}=${project}`] });
      let images: Docker.ImageInfo[];
      if (quick) {
        const res = await quick("GET", `/images/json?filters=${encodeURIComponent(filters)}`);
        if (res.status !== 200)
          throw new BakeError(
            `docker engine at ${endpoint}: listing images answered HTTP ${res.status}: ${res.body?.message ?? ""}`,
          );
        images = res.body;
      } else images = await dockerode().docker.listImages({ filters });
      return images.map((img) => toRecord(img.Id, img.RepoTags ?? [], img.Labels ?? {}, img.Created));
    },
    async inspectImage(ref) {
      const i = await inspectRaw(ref);
      return (
        i && {
          id: i.Id,
          labels: i.Config?.Labels ?? {},
          repoDigests: i.RepoDigests ?? [],
          size: i.Size,
          created: i.Created,
        }
      );
    },
    async tag(id, repo, tag) {
      if (quick) {
        const res = await quick(
          "POST",
          `/images/${encodeURIComponent(id)}/tag?repo=${encodeURIComponent(repo)}&tag=${encodeURIComponent(tag)}`,
        );
        if (res.status !== 201)
          throw new BakeError(`tagging ${repo}:${tag} answered HTTP ${res.status}: ${res.body?.message ?? ""}`);
        return;
      }
      await dockerode().docker.getImage(id).tag({ repo, tag });
    },
    async saveImages(refs, file, signal) {
      const docker = dockerode().longDocker;
      const stream: NodeJS.ReadableStream = await new Promise((resolve, reject) =>
        (docker as any).modem.dial(
          {
            path: "/images/get?",
            method: "GET",
            options: { names: refs },
            isStream: true,
            abortSignal: signal,
            statusCodes: { 200: true, 404: "no such image", 500: "server error" },
          },
          (err: Error | null, res: NodeJS.ReadableStream) => (err ? reject(err) : resolve(res)),
        ),
      );
      await pipeline(stream, createWriteStream(file), { signal });
    },
    async removeUnusedImage(id) {
      const { docker } = dockerode();
      const info = await docker
        .getImage(id)
        .inspect()
        .catch(() => undefined);
      if (!info) return true;
      // Asked first: the engine refuses only at the last step, after every other tag is gone.
      if ((await docker.listContainers({ all: true, filters: JSON.stringify({ ancestor: [info.Id] }) })).length)
        return false;
      try {
        // Untag every name first: removal by id refuses an image with several tags.
        for (const tag of info.RepoTags ?? [])
          if (tag !== "<none>:<none>") await docker.getImage(tag).remove({ noprune: false });
        await docker
          .getImage(id)
          .remove()
          .catch((e: any) => {
            if (e?.statusCode !== 404) throw e;
          });
        return true;
      } catch (e: any) {
        if (e?.statusCode === 409) return false;
        throw e;
      }
    },
    async listTags(pattern) {
      const images = await dockerode().docker.listImages({ filters: JSON.stringify({ reference: [pattern] }) });
      // The engine's reference filter, again on each tag: `*` is one path component (`bake-parent/*/*`).
      const [repo] = pattern.split(":");
      const glob = new RegExp(
        `^${repo
          .split("*")
          .map((p) => p.replace(/[.+?^${}()|[\]\\]/g, "\\$&"))
          .join("[^/:]*")}:`,
      );
      const matches = (t: string) => glob.test(t);
      return images.flatMap((i) => (i.RepoTags ?? []).filter(matches));
    },
    async removeImage(ref) {
      await dockerode()
        .docker.getImage(ref)
        .remove({ force: true })
        .catch((e: any) => {
          if (e?.statusCode !== 404) throw e;
        });
    },
  };
}
