/**
 * The files of a build context after `.dockerignore`, as Docker's classic builder sends them,
 * and their digests. The same list feeds the bake key and the build's tar stream.
 */
import { constants, createReadStream, lstatSync, readdirSync, readFileSync, readlinkSync, type Stats } from "node:fs";
import type { DigestCache } from "./digest-cache.js";
import { open, readFile } from "node:fs/promises";
import { createHash } from "node:crypto";
import path from "node:path";
import dockerignore from "@balena/dockerignore";
import pLimit from "p-limit";
import { hashOnWorkers } from "./hash-workers.js";

// The package types declare an ES default export; at run time the CommonJS module.exports is it.
const ignore = ((dockerignore as any).default ?? dockerignore) as unknown as (typeof dockerignore)["default"];

/**
 * A matcher of Docker's patterns (.dockerignore syntax, `!` exceptions included), case-sensitive
 * as the docker CLI and BuildKit match on Linux (the library's default ignores case).
 */
function dockerMatcher(patterns: string[]) {
  return ignore({ ignorecase: false }).add(patterns);
}

/** Whether a path matches Docker's patterns. */
export function patternMatcher(patterns: string[]): (path: string) => boolean {
  const m = dockerMatcher(patterns);
  return (p) => m.ignores(p);
}

export interface ContextEntry {
  /** Posix path relative to the context root; folders end without a slash. */
  path: string;
  type: "file" | "dir" | "symlink";
  executable: boolean;
  size: number;
  /** sha256 of the content (file) or of the link target (symlink). */
  digest?: string;
  /**
   * A file's identity when listed (inode and times, as git's index keeps them): a file that
   * still has it is served without being hashed again (listedFile). Never part of a key.
   */
  seen?: { ino: number; mtimeMs: number; ctimeMs: number };
}

export interface ContextListing {
  root: string;
  entries: ContextEntry[];
  /** Entries that Docker always sends even when .dockerignore names them (Dockerfile, .dockerignore). */
  alwaysSent: string[];
  /**
   * Large files whose digest was not in the cache and is taken while the context is sent
   * (listContext's `deferLarge`): their entries have no digest until completeDigests().
   */
  deferred?: { entry: ContextEntry; abs: string; st: Stats }[];
  cache?: DigestCache;
  /** Build-secret files inside the context, kept out of it whatever .dockerignore says (paths in the context). */
  withheldSecrets?: string[];
}

/** Parses a .dockerignore the way Docker's dockerignore.ReadAll does. */
export function parseDockerignore(text: string): string[] {
  const patterns: string[] = [];
  for (const raw of text.split(/\r?\n/)) {
    let line = raw.trim();
    if (!line || line.startsWith("#")) continue;
    const negate = line.startsWith("!");
    if (negate) line = line.slice(1).trim();
    line = path.posix.normalize(line).replace(/^\/+/, "");
    if (line === "" || line === ".") line = ".";
    patterns.push(negate ? `!${line}` : line);
  }
  return patterns;
}

/** Lists the context: every folder, file and link that `.dockerignore` keeps, sorted by path. */
export async function listContext(
  root: string,
  options: {
    dockerfile?: string;
    cache?: DigestCache;
    deferLarge?: boolean;
    withhold?: string[];
    secretFiles?: string[];
  } = {},
): Promise<ContextListing> {
  let patterns: string[] = [];
  try {
    patterns = parseDockerignore(await readFile(path.join(root, ".dockerignore"), "utf8"));
  } catch (e: any) {
    if (e?.code !== "ENOENT") throw e;
  }
  const matcher = dockerMatcher(patterns);
  // Files bake keeps out unless a rule asks for them by name (`!.env`): its own .env of pass_env values.
  const withheld = new Set(
    (options.withhold ?? [])
      .map((f) => path.relative(root, f).split(path.sep).join("/"))
      .filter((rel) => !rel.startsWith("..") && !patterns.includes(`!${rel}`)),
  );
  // Build-secret files never: not sent, not listed, not digested, not a provenance material, even
  // when a `!` rule names them (their value reaches the build only through its secret mount).
  const secrets = new Set(
    (options.secretFiles ?? [])
      .map((f) => path.relative(root, f).split(path.sep).join("/"))
      .filter((rel) => rel && !rel.startsWith("..") && !path.isAbsolute(rel)),
  );
  const { entries, large, secretsSeen } = walkContext(root, {
    ignores: patterns.length ? (rel) => matcher.ignores(rel) : () => false,
    hasExceptions: patterns.some((p) => p.startsWith("!")),
    withheld,
    secrets,
    cache: options.cache,
  });
  const alwaysSent = [".dockerignore"];
  if (options.dockerfile) {
    const rel = path.relative(root, options.dockerfile).split(path.sep).join("/");
    if (!rel.startsWith("..")) alwaysSent.push(rel);
  }
  const listing: ContextListing = {
    root,
    entries,
    alwaysSent,
    cache: options.cache,
    ...(secretsSeen.length ? { withheldSecrets: secretsSeen.sort() } : {}),
  };
  const deferred = large.map(({ entry, st }) => ({ entry, st, abs: path.join(root, entry.path) }));
  if (options.deferLarge && deferred.length) listing.deferred = deferred;
  else await hashInto(deferred, options.cache);
  return listing;
}

/** What the walk of a context keeps out, and where it finds digests it took before. */
interface WalkRules {
  /** Whether .dockerignore's patterns exclude a path. */
  ignores: (rel: string) => boolean;
  /** A `!` pattern may bring back something inside an excluded folder. */
  hasExceptions: boolean;
  withheld: Set<string>;
  secrets: Set<string>;
  cache?: DigestCache;
}

/** Walks the context: its entries in path order, the large files left to hash, and the secret files it passed over. */
function walkContext(
  root: string,
  rules: WalkRules,
): { entries: ContextEntry[]; large: { entry: ContextEntry; st: Stats }[]; secretsSeen: string[] } {
  const secretsSeen: string[] = [];
  // The walk and small files use synchronous calls: for thousands of small files they are
  // several times faster than the thread pool (bench/keys.ts). Large files stream, in parallel.
  const large: { entry: ContextEntry; st: Stats }[] = [];
  const walk = (dirRel: string): ContextEntry[] => {
    const out: ContextEntry[] = [];
    for (const name of readdirSync(path.join(root, dirRel)).sort(compareBytes)) {
      const rel = dirRel ? `${dirRel}/${name}` : name;
      const abs = path.join(root, rel);
      const st = lstatSync(abs);
      if (rules.secrets.has(rel)) {
        secretsSeen.push(rel);
        continue;
      }
      // Withheld (bake's .env and state) with everything under it, whatever `!` rules follow.
      if (rules.withheld.has(rel)) continue;
      const ignored = rules.ignores(rel);
      if (st.isDirectory()) {
        // An excluded folder is still walked when a `!` pattern might bring something back,
        // and it arrives in the image when something inside it is kept.
        if (ignored && !rules.hasExceptions) continue;
        const inside = walk(rel);
        if (!ignored || inside.length) out.push({ path: rel, type: "dir", executable: false, size: 0 }, ...inside);
      } else if (ignored) {
        continue;
      } else if (st.isSymbolicLink()) {
        out.push({ path: rel, type: "symlink", executable: false, size: 0, digest: sha256(readlinkSync(abs)) });
      } else if (st.isFile()) {
        const entry: ContextEntry = { path: rel, type: "file", executable: (st.mode & 0o111) !== 0, size: st.size };
        // A file changed within the last seconds may change again within one timestamp tick: not trusted by identity.
        if (Date.now() - st.mtimeMs > RACY_MS) entry.seen = { ino: st.ino, mtimeMs: st.mtimeMs, ctimeMs: st.ctimeMs };
        if (st.size <= SMALL_FILE) entry.digest = sha256(readFileSync(abs));
        else {
          entry.digest = rules.cache?.get(abs, st);
          if (!entry.digest) large.push({ entry, st });
        }
        out.push(entry);
      }
    }
    return out;
  };
  return { entries: walk(""), large, secretsSeen };
}

/** Takes the digests a listing deferred (on worker threads) and remembers them in the cache. */
export async function completeDigests(listing: ContextListing): Promise<void> {
  if (!listing.deferred) return;
  // One worker: the main thread is busy streaming the same files meanwhile.
  await hashInto(listing.deferred, listing.cache, 1);
  listing.deferred = undefined;
  listing.cache?.save();
}

// Worker threads pay ~25 ms to start: below this many bytes the main thread hashes sooner.
const WORKERS_FROM_BYTES = 32 << 20;

async function hashInto(
  files: { entry: ContextEntry; abs: string; st: Stats }[],
  cache?: DigestCache,
  threads?: number,
): Promise<void> {
  if (!files.length) return;
  if (files.reduce((n, f) => n + f.st.size, 0) >= WORKERS_FROM_BYTES) {
    const digests = await hashOnWorkers(
      files.map((f) => ({ path: f.abs, size: f.st.size })),
      threads,
    );
    for (const f of files) f.entry.digest = digests.get(f.abs);
  } else {
    const limit = pLimit(4);
    await Promise.all(files.map((f) => limit(async () => void (f.entry.digest = await hashFile(f.abs)))));
  }
  for (const f of files) cache?.set(f.abs, f.st, f.entry.digest!);
}

/**
 * The bytes of a listed file, exactly as listed: opened without following a link (a file swapped
 * for a link since the listing is refused) and checked against the listing's size and sha256 as
 * it streams, so the engine never gets content other than the key's.
 */
export async function* listedFile(
  file: string,
  listed: Pick<ContextEntry, "path" | "size" | "digest" | "seen">,
  chunkBytes = 1 << 20,
): AsyncGenerator<Buffer> {
  const handle = await open(file, constants.O_RDONLY | constants.O_NOFOLLOW).catch((e: NodeJS.ErrnoException) => {
    throw new Error(
      e.code === "ELOOP" ? `${listed.path} became a symbolic link after it was listed` : `${listed.path}: ${e.message}`,
    );
  });
  try {
    // Still the file the listing saw (same inode, times and size): its bytes are the listed ones.
    const st = await handle.stat();
    const same =
      listed.seen &&
      st.isFile() &&
      st.ino === listed.seen.ino &&
      st.size === listed.size &&
      st.mtimeMs === listed.seen.mtimeMs &&
      st.ctimeMs === listed.seen.ctimeMs;
    if (same) {
      yield* handle.createReadStream({ highWaterMark: chunkBytes, autoClose: false }) as AsyncIterable<Buffer>;
      return;
    }
    const h = createHash("sha256");
    let size = 0;
    for await (const chunk of handle.createReadStream({
      highWaterMark: chunkBytes,
      autoClose: false,
    }) as AsyncIterable<Buffer>) {
      size += chunk.length;
      if (size > listed.size) break;
      h.update(chunk);
      yield chunk;
    }
    if (size !== listed.size || (listed.digest && h.digest("hex") !== listed.digest))
      throw new Error(`${listed.path} changed after it was listed: build again`);
  } finally {
    await handle.close();
  }
}

/** One digest for a context: stable across machines (only the executable bit of the mode counts). */
export function contextDigest(entries: readonly ContextEntry[]): string {
  const h = createHash("sha256");
  for (const e of entries) h.update(`${e.type}\0${e.path}\0${e.executable ? "x" : "-"}\0${e.digest ?? ""}\n`);
  return h.digest("hex");
}

const SMALL_FILE = 1 << 20;
/** As the digest cache: a file modified this recently is not trusted by its identity. */
const RACY_MS = 3000;

/** sha256 of a file, streamed so memory stays flat whatever its size. */
export function hashFile(file: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const h = createHash("sha256");
    createReadStream(file, { highWaterMark: 1 << 20 })
      .on("error", reject)
      .on("data", (chunk) => h.update(chunk))
      .on("end", () => resolve(h.digest("hex")));
  });
}

export function sha256(text: string | Buffer): string {
  return createHash("sha256").update(text).digest("hex");
}

function compareBytes(a: string, b: string): number {
  return Buffer.compare(Buffer.from(a), Buffer.from(b));
}
