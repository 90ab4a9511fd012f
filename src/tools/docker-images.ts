/** The Docker engine's images as an inventory: find, inspect, tag, save, remove. */
import { createWriteStream, rmSync } from "node:fs";
import { pipeline } from "node:stream/promises";
import { BakeError } from "../errors.js";
import type Docker from "dockerode";
import { LABEL, toRecord, type BakeImageRecord, type EngineConnection } from "./docker-engine.js";
import { copyTarWithout, tarFiles } from "./tar.js";

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
  /**
   * `docker save` of the images into a file. With `below`: without the layers those images hold
   * (the archive then loads only where they are loaded: the engine skips a layer it has).
   */
  saveImages(refs: string[], file: string, signal?: AbortSignal, below?: string[]): Promise<void>;
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
    async saveImages(refs, file, signal, below) {
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
      if (!below?.length) return void (await pipeline(stream, createWriteStream(file), { signal }));
      const whole = `${file}.whole`;
      try {
        await pipeline(stream, createWriteStream(whole), { signal });
        const held = new Set<string>();
        for (const ref of below) {
          const layers = (await inspectRaw(ref))?.RootFS?.Layers ?? [];
          layers.forEach((_, i) => held.add(layers.slice(0, i + 1).join(",")));
        }
        await copyTarWithout(whole, file, await layersHeld(whole, held));
      } finally {
        rmSync(whole, { force: true });
      }
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

/**
 * Which layer files of a `docker save` archive hold a layer chain in `held` (each chain: its diff
 * ids so far, joined by commas): the archive's manifest.json names each image's config (its
 * diff ids) and its layer files, in the same order.
 */
async function layersHeld(archive: string, held: Set<string>): Promise<(name: string) => boolean> {
  const files = await tarFiles(archive, (n) => n === "manifest.json" || /^[0-9a-f]{64}\.json$/.test(n));
  const manifest = JSON.parse(files.get("manifest.json")?.toString("utf8") ?? "[]") as {
    Config: string;
    Layers: string[];
  }[];
  const drop = new Set<string>();
  for (const image of manifest) {
    const diffIds: string[] = JSON.parse(files.get(image.Config)?.toString("utf8") ?? "{}").rootfs?.diff_ids ?? [];
    image.Layers.forEach((layer, i) => {
      if (diffIds.length === image.Layers.length && held.has(diffIds.slice(0, i + 1).join(","))) drop.add(layer);
    });
  }
  return (name) => drop.has(name);
}
