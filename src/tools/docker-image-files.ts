/** What is inside an image: files read through a container that is created to look, never started. */
import type { Readable } from "node:stream";
import { posix } from "node:path";
import { BakeError } from "../errors.js";
import { firstTarEntry } from "./tar.js";
import type { EngineConnection } from "./docker-engine.js";

/** The engine's verbs for an image's files (part of DockerTool). */
export interface ImageFileVerbs {
  /** Whether the image holds this path (a container is created to look, never started). */
  imageHasPath(image: string, path: string): Promise<boolean>;
  /**
   * The contents of these files in the image, by path (links followed; absent files left out),
   * and an empty entry for each of `present` that exists: nothing is run.
   */
  readImageFiles(image: string, paths: string[], present?: string[]): Promise<Map<string, Buffer>>;
}

export function imageFileVerbs({ dockerode }: EngineConnection): ImageFileVerbs {
  const readImageFiles: ImageFileVerbs["readImageFiles"] = async (image, paths, present = []) => {
    const container = await dockerode().docker.createContainer({
      Image: image,
      Cmd: ["/bin/true"],
      Entrypoint: [""],
      NetworkDisabled: true,
    } as any);
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
    async imageHasPath(image, path) {
      return (await readImageFiles(image, [], [path])).has(path);
    },
    readImageFiles,
  };
}

/** The first entry of the engine's archive of one path: a file's content or a link's target; undefined when absent. */
async function archivedFile(
  container: any,
  at: string,
): Promise<{ content: Buffer; link?: undefined } | { content?: undefined; link: string } | undefined> {
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
  if (first?.type === "file" && !first.content)
    throw new BakeError(
      `${at} in the image is ${first.size} bytes, more than bake reads (${IMAGE_FILE_MAX_BYTES / 2 ** 20} MiB)`,
    );
  return first?.content ? { content: first.content } : undefined;
}

/** The most bake reads of one file from an image (a package database). */
export const IMAGE_FILE_MAX_BYTES = 64 * 2 ** 20;
