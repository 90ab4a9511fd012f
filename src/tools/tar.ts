/** Reading tar streams (tar-stream): every entry with its content, in order. */
import type { Readable } from "node:stream";
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
        entries.push({ name: header.name, type: header.type ?? "file", ...(header.linkname ? { linkname: header.linkname } : {}), content: Buffer.concat(chunks) });
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
