/**
 * The build context as a tar stream, from the same listing the key was computed from. Files are
 * streamed one after another, so memory does not grow with the context. Modes, owners and times
 * are normalised the way the key sees them, so the same key sends the same bytes.
 */
import { existsSync, readFileSync, readlinkSync } from "node:fs";
import path from "node:path";
import { Readable } from "node:stream";
import tar from "tar-stream";
import { listedFile, type ContextEntry, type ContextListing } from "../graph/context-files.js";

/** Where bake puts the Dockerfile it sends (the user's, plus one LABEL instruction). */
export const SENT_DOCKERFILE = ".bake.Dockerfile";

const MTIME = new Date("2000-01-01T00:00:00Z");

/** The labels, or a function that gives them once every file was sent (a key still pending). */
type Labels = Record<string, string> | (() => Promise<Record<string, string>>);
const labelsOf = async (labels: Labels) => (typeof labels === "function" ? labels() : labels);

/**
 * `labels` are appended to the Dockerfile as one LABEL instruction (the engine's `labels`
 * parameter would add one instruction, and one container, per label). That Dockerfile travels
 * as `.bake.Dockerfile`, named in the sent `.dockerignore` so that the engine drops it before
 * COPY sees it, as the docker CLI does for a Dockerfile from outside the context. The user's
 * own Dockerfile stays in the context untouched.
 *
 * A `.dockerignore` that does not exclude itself reaches the image, and must reach it as the
 * context holds it (as `docker build` sends it): then the user's Dockerfile is named as it
 * stands, when it is inside the context, and the labels go with the request (`labelsInRequest`).
 */
export function contextTar(
  listing: ContextListing,
  dockerfile: string,
  labels: Labels = {},
  signal?: AbortSignal,
): { stream: Readable; dockerfilePath: string; labelsInRequest: boolean } {
  const pack = tar.pack();
  const common = { uid: 0, gid: 0, uname: "", gname: "", mtime: MTIME };
  const addFile = (listed: ContextEntry, abs: string, mode: number) =>
    new Promise<void>((resolve, reject) => {
      const entry = pack.entry({ ...common, name: listed.path, size: listed.size, mode, type: "file" }, (err) =>
        err ? reject(err) : resolve(),
      );
      // As listed or not at all: no link followed, the size and (once known) the digest checked.
      const source = Readable.from(listedFile(abs, listed));
      source.on("error", (e) => {
        entry.destroy(e);
        reject(e);
      });
      // The whole stream destroyed (interrupt, or an image with the pending key exists).
      entry.on("error", (e) => {
        source.destroy();
        reject(e);
      });
      source.pipe(entry);
    });
  const dockerfileText = readFileSync(dockerfile, "utf8");
  const dockerfileRel = path.relative(listing.root, dockerfile).split(path.sep).join("/");
  const labelsInRequest =
    listing.entries.some((e) => e.path === ".dockerignore") &&
    !dockerfileRel.startsWith("../") &&
    !path.isAbsolute(dockerfileRel);
  const ignorePath = path.join(listing.root, ".dockerignore");
  const ignoreText = existsSync(ignorePath)
    ? `${readFileSync(ignorePath, "utf8").replace(/\n*$/, "\n")}${SENT_DOCKERFILE}\n`
    : `${SENT_DOCKERFILE}\n.dockerignore\n`;
  (async () => {
    for (const e of listing.entries) {
      if (signal?.aborted) throw signal.reason ?? new Error("aborted");
      const abs = path.join(listing.root, e.path);
      if (!labelsInRequest && (e.path === ".dockerignore" || e.path === SENT_DOCKERFILE)) continue;
      if (e.type === "dir") pack.entry({ ...common, name: e.path, type: "directory", mode: 0o755 });
      else if (e.type === "symlink")
        pack.entry({ ...common, name: e.path, type: "symlink", linkname: readlinkSync(abs), mode: 0o777 });
      else await addFile(e, abs, e.executable ? 0o755 : 0o644);
    }
    if (labelsInRequest) {
      // The engine reads the Dockerfile from the context even when .dockerignore names it.
      if (!listing.entries.some((e) => e.path === dockerfileRel))
        pack.entry({ ...common, name: dockerfileRel, mode: 0o644 }, dockerfileText);
    } else {
      pack.entry({ ...common, name: ".dockerignore", mode: 0o644 }, ignoreText);
      pack.entry({ ...common, name: SENT_DOCKERFILE, mode: 0o644 }, withLabels(dockerfileText, await labelsOf(labels)));
    }
    pack.finalize();
  })().catch((e) => pack.destroy(e));
  return {
    stream: pack as unknown as Readable,
    dockerfilePath: labelsInRequest ? dockerfileRel : SENT_DOCKERFILE,
    labelsInRequest,
  };
}

/**
 * Appends one LABEL instruction carrying every label. Values are JSON-quoted (the Dockerfile
 * lexer reads `\"` and `\\` the same way) and `$` is escaped: the builder would expand `$NAME`
 * inside double quotes (seen: "x$HOME-y" became "x-y").
 */
export function withLabels(dockerfile: string, labels: Record<string, string>): string {
  const quote = (s: string) => JSON.stringify(s).replaceAll("$", "\\$");
  const pairs = Object.keys(labels)
    .sort()
    .map((k) => `${quote(k)}=${quote(labels[k])}`);
  if (!pairs.length) return dockerfile;
  return `${dockerfile.replace(/\n*$/, "\n")}LABEL ${pairs.join(" \\\n      ")}\n`;
}

/** An empty context holding only a generated Dockerfile (a base without one of its own). */
export function dockerfileOnlyTar(text: string, labels: Labels = {}): { stream: Readable; dockerfilePath: string } {
  const pack = tar.pack();
  (async () => {
    pack.entry(
      { name: "Dockerfile", mode: 0o644, mtime: MTIME, uid: 0, gid: 0 },
      withLabels(text, await labelsOf(labels)),
    );
    pack.finalize();
  })().catch((e) => pack.destroy(e));
  return { stream: pack as unknown as Readable, dockerfilePath: "Dockerfile" };
}
