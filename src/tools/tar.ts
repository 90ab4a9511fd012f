/** Reading tar streams (tar-stream): every entry with its content, in order; archives on disk read or copied in part. */
import { createReadStream, createWriteStream } from "node:fs";
import type { Readable } from "node:stream";
import { pipeline } from "node:stream/promises";
import tar from "tar-stream";

export interface TarEntry {
  /** The entry's path as the archive holds it (`./var/lib/dpkg/status`, `status`). */
  name: string;
  type: string;
  linkname?: string;
  content: Buffer;
}

export async function tarEntries(stream: Readable): Promise<TarEntry[]> {
  const entries: TarEntry[] = [];
  const extract = tar.extract();
  const done = new Promise<void>((resolve, reject) => {
    extract.on("entry", (header, body, next) => {
      const chunks: Buffer[] = [];
      body.on("data", (c: unknown) => chunks.push(c as Buffer));
      body.on("end", () => {
        entries.push({
          name: header.name,
          type: header.type ?? "file",
          ...(header.linkname ? { linkname: header.linkname } : {}),
          content: Buffer.concat(chunks),
        });
        next();
      });
    });
    extract.on("finish", resolve);
    extract.on("error", reject);
  });
  stream.on("error", (e) => extract.destroy(e));
  stream.pipe(extract);
  await done;
  return entries;
}

export interface FirstEntry {
  name: string;
  type: string;
  size: number;
  linkname?: string;
  /** Only for a file of at most the bound: nothing more of the stream is read. */
  content?: Buffer;
}

/**
 * The first entry of a tar stream, and nothing after it: its content only when it is a regular
 * file of at most `maxBytes`. A folder (a link that points at `/`) or a huge file is reported by
 * type and size without being read, and the stream is closed.
 */
export async function firstTarEntry(stream: Readable, maxBytes: number): Promise<FirstEntry | undefined> {
  const extract = tar.extract();
  return new Promise<FirstEntry | undefined>((resolve, reject) => {
    let settled = false;
    const settle = (fn: () => void) => {
      if (settled) return;
      settled = true;
      fn();
      stream.unpipe?.(extract);
      stream.destroy();
      extract.destroy();
    };
    extract.on("entry", (header, body) => {
      const entry: FirstEntry = {
        name: header.name,
        type: header.type ?? "file",
        size: header.size ?? 0,
        ...(header.linkname ? { linkname: header.linkname } : {}),
      };
      if (entry.type !== "file" || entry.size > maxBytes) return settle(() => resolve(entry));
      const chunks: Buffer[] = [];
      body.on("data", (c: unknown) => chunks.push(c as Buffer));
      body.on("end", () => settle(() => resolve({ ...entry, content: Buffer.concat(chunks) })));
    });
    extract.on("finish", () => settle(() => resolve(undefined)));
    extract.on("error", (e) => settle(() => reject(e)));
    stream.on("error", (e) => settle(() => reject(e)));
    stream.pipe(extract);
  });
}

/** The regular files of a tar archive for which `want` says yes, read whole; every other entry is passed over unread. */
export async function tarFiles(file: string, want: (name: string) => boolean): Promise<Map<string, Buffer>> {
  const files = new Map<string, Buffer>();
  const extract = tar.extract();
  const done = new Promise<void>((resolve, reject) => {
    extract.on("entry", (header, body, next) => {
      const chunks: Buffer[] = [];
      const keep = (header.type ?? "file") === "file" && want(header.name);
      body.on("data", (c: unknown) => keep && chunks.push(c as Buffer));
      body.on("end", () => {
        if (keep) files.set(header.name, Buffer.concat(chunks));
        next();
      });
      body.resume();
    });
    extract.on("finish", resolve);
    extract.on("error", reject);
  });
  const input = createReadStream(file);
  input.on("error", (e) => extract.destroy(e));
  input.pipe(extract);
  await done;
  return files;
}

/** Copies a tar archive without the entries `drop` names, every other entry as it was. */
export async function copyTarWithout(from: string, to: string, drop: (name: string) => boolean): Promise<void> {
  const extract = tar.extract();
  const pack = tar.pack();
  extract.on("entry", (header, body, next) => {
    if (drop(header.name)) {
      body.on("end", () => next());
      body.resume();
      return;
    }
    body.pipe(pack.entry(header, next));
  });
  extract.on("finish", () => pack.finalize());
  extract.on("error", (e) => pack.destroy(e));
  await Promise.all([pipeline(createReadStream(from), extract), pipeline(pack, createWriteStream(to))]);
}
