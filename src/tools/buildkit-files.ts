/**
 * fsutil's side of a BuildKit session: the context's entries as the engine asks for them (its
 * include and exclude patterns, every folder above, in fsutil's walk order), their stats (times
 * from content, never from the checkout), and DiffCopy's sender.
 */
import { once } from "node:events";
import { listedFile, patternMatcher, type ContextEntry } from "../graph/context-files.js";

/** One entry of the context listing the engine may ask for, and how to read it. */
export interface ServedEntry extends ContextEntry {
  linkname?: string;
  /** Where the bytes are (a file on disk) or the bytes themselves (a generated Dockerfile). */
  source?: { file: string } | { text: string };
}

/** fsutil's Stat, with Go's os.FileMode bits for folders and links. */
export interface FsStat {
  path: string;
  mode: number;
  uid: number;
  gid: number;
  size: number;
  /** Nanoseconds, as a decimal string (past 2^53). */
  modTime: string;
  linkname: string;
}

const MODE_DIR = 0x80000000;
const MODE_SYMLINK = 0x08000000;
const EPOCH_2000_NS = BigInt(Date.parse("2000-01-01T00:00:00Z")) * 1_000_000n;

/**
 * A file's modification time, from its content: 2000-01-01 plus the first 48 bits of its
 * sha256 in nanoseconds (under four days). The engine keeps each node's files between builds
 * (one shared key per node) and sends for a file again only when its size, mode or time
 * changed, so the time must change with the content; and images must not depend on checkout
 * times. Folders keep 2000-01-01.
 */
export function contentTime(digest: string | undefined): string {
  return (EPOCH_2000_NS + (digest ? BigInt(`0x${digest.slice(0, 12)}`) : 0n)).toString();
}

/** Compares paths folder by folder, the order fsutil's receiver checks ("changes out of order"). */
export function comparePaths(a: string, b: string): number {
  const pa = a.split("/");
  const pb = b.split("/");
  for (let i = 0; i < Math.min(pa.length, pb.length); i++) {
    if (pa[i] !== pb[i]) return pa[i] < pb[i] ? -1 : 1;
  }
  return pa.length - pb.length;
}

/**
 * The entries the engine asked for (`include`: fsutil's include patterns and follow paths; all
 * when empty; none that `exclude` names), every folder above them, in fsutil's walk order.
 */
export function servedEntries(entries: ServedEntry[], include: string[], exclude: string[] = []): ServedEntry[] {
  const byPath = new Map(entries.map((e) => [e.path, e]));
  const chosen = new Map<string, ServedEntry>();
  // fsutil's patterns use Docker's pattern syntax, as .dockerignore does. The excludes are the
  // context's .dockerignore, which bake's listing already applied, except to .dockerignore itself.
  const included = patternMatcher(include);
  const excluded = patternMatcher(exclude);
  const wanted = (p: string) => {
    if (exclude.length && excluded(p)) return false;
    if (!include.length) return true;
    const parts = p.split("/");
    for (let i = 1; i <= parts.length; i++) if (included(parts.slice(0, i).join("/"))) return true;
    return false;
  };
  for (const e of entries) {
    if (!wanted(e.path)) continue;
    chosen.set(e.path, e);
    const parts = e.path.split("/");
    for (let i = 1; i < parts.length; i++) {
      const dir = parts.slice(0, i).join("/");
      if (!chosen.has(dir)) chosen.set(dir, byPath.get(dir) ?? { path: dir, type: "dir", executable: false, size: 0 });
    }
  }
  return [...chosen.values()].sort((a, b) => comparePaths(a.path, b.path));
}

/**
 * The stat the engine compares with its copy. Every field comes from the listing (content,
 * executable bit), never from the checkout; a file whose digest is not known is never served,
 * since the engine would keep a copy of another content of the same size.
 */
export function fsStat(e: ServedEntry): FsStat {
  if (e.type !== "dir" && !e.digest) throw new Error(`${e.path}: served before its digest was taken`);
  const mode =
    e.type === "dir"
      ? (MODE_DIR | 0o755) >>> 0
      : e.type === "symlink"
        ? (MODE_SYMLINK | 0o777) >>> 0
        : e.executable
          ? 0o755
          : 0o644;
  return {
    path: e.path,
    mode,
    uid: 0,
    gid: 0,
    size: e.type === "file" ? e.size : 0,
    modTime: contentTime(e.type === "dir" ? undefined : e.digest),
    linkname: e.linkname ?? "",
  };
}

const PACKET = { STAT: 0, REQ: 1, DATA: 2, FIN: 3, ERR: 4 } as const;
/** Bytes per DATA packet: well under gRPC's 4 MiB message limit. */
const CHUNK = 256 * 1024;

/** What the engine may read in a session: the build context and the folder of the Dockerfile. */
export interface SessionDirs {
  context: ServedEntry[];
  dockerfile: ServedEntry[];
}

/**
 * fsutil's sender: every Stat in walk order, an empty Stat to end them, then the bytes of each
 * file the receiver asks for (DATA packets, an empty one ends a file), until it says FIN.
 */
export async function diffCopy(call: any, dirs: SessionDirs): Promise<void> {
  const meta = (k: string) =>
    call.metadata
      .get(k)
      .flatMap((v: unknown) => String(v).split(/,\s*/))
      .filter(Boolean) as string[];
  const dir = meta("dir-name")[0] === "dockerfile" ? dirs.dockerfile : dirs.context;
  const entries = servedEntries(dir, [...meta("include-patterns"), ...meta("followpaths")], meta("exclude-patterns"));
  let sending = Promise.resolve();
  const send = (p: object) => {
    if (!call.write(p)) return once(call, "drain").then(() => undefined);
    return Promise.resolve();
  };
  call.on("error", () => undefined);
  call.on("data", (p: { type: number; ID: number }) => {
    if (p.type === PACKET.REQ) {
      const e = entries[p.ID];
      sending = sending.then(async () => {
        if (e?.source && "text" in e.source) {
          const bytes = Buffer.from(e.source.text);
          for (let i = 0; i < bytes.length; i += CHUNK)
            await send({ type: PACKET.DATA, ID: p.ID, data: bytes.subarray(i, i + CHUNK) });
        } else if (e?.source && "file" in e.source) {
          for await (const chunk of listedFile(e.source.file, e, CHUNK))
            await send({ type: PACKET.DATA, ID: p.ID, data: chunk });
        }
        await send({ type: PACKET.DATA, ID: p.ID });
      });
      // A file that cannot be read fails the build with its error (the session may be gone: an interrupt).
      sending.catch((err: Error) => {
        try {
          call.write({ type: PACKET.ERR, data: Buffer.from(err.message) });
        } catch {
          /* the call is over */
        }
      });
    } else if (p.type === PACKET.FIN) {
      sending
        .then(
          () => {
            call.write({ type: PACKET.FIN });
            call.end();
          },
          () => call.end(),
        )
        .catch(() => undefined);
    }
  });
  for (const e of entries) await send({ type: PACKET.STAT, stat: fsStat(e) });
  await send({ type: PACKET.STAT });
}
