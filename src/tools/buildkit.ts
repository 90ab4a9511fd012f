/**
 * Builds through the engine's BuildKit with a session, as `docker buildx build` does: bake opens
 * `/session` (an HTTP upgrade to h2c) and serves gRPC on it; the engine asks for the build's
 * files through FileSync.DiffCopy (fsutil's packets) and reads only what the Dockerfile uses, so a
 * large context costs only its COPY'd files. Labels are image metadata there: no builder step.
 * Measured in bench/buildkit.js and bench/RESULTS.md.
 *
 * BuildKit cannot FROM an image id (github.com/moby/buildkit/issues/2204), so the parent goes
 * by a tag named after its id (`bake-parent/<host>/<pid>:<hex>`), made for the build and removed after it,
 * and the FROM lines that name `${BAKE_PARENT}` say that tag in the Dockerfile bake serves;
 * the build argument BAKE_PARENT stays the parent's image id.
 */
import { randomUUID } from "node:crypto";
import http from "node:http";
import { createRequire } from "node:module";
import { once } from "node:events";
import type { Duplex } from "node:stream";
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

/**
 * The Dockerfile with each FROM that names the parent by `$BAKE_PARENT` or `${BAKE_PARENT}`
 * naming `tag` instead; undefined when a FROM uses BAKE_PARENT some other way (a default, a
 * suffix), which the classic builder then takes.
 */
export function pinParent(dockerfile: string, tag: string): string | undefined {
  let unpinnable = false;
  const out = dockerfile.replace(/^(\s*FROM\s+(?:--\S+\s+)*)(\S+)/gim, (whole, head: string, image: string) => {
    if (image === "$BAKE_PARENT" || image === "${BAKE_PARENT}") return `${head}${tag}`;
    if (/BAKE_PARENT/.test(image)) unpinnable = true;
    return whole;
  });
  return unpinnable ? undefined : out;
}

const PROTO = `
syntax = "proto3";
package bake;
message Stat { string path = 1; uint32 mode = 2; uint32 uid = 3; uint32 gid = 4; int64 size = 5; int64 modTime = 6; string linkname = 7; int64 devmajor = 8; int64 devminor = 9; map<string, bytes> xattrs = 10; }
message Packet { int32 type = 1; Stat stat = 2; uint32 ID = 3; bytes data = 4; }
message HealthCheckRequest { string service = 1; }
message HealthCheckResponse { int32 status = 1; }
message GetSecretRequest { string ID = 1; map<string, string> annotations = 2; }
message GetSecretResponse { bytes data = 1; }
message Timestamp { int64 seconds = 1; int32 nanos = 2; }
message Vertex { string digest = 1; repeated string inputs = 2; string name = 3; bool cached = 4; Timestamp started = 5; Timestamp completed = 6; string error = 7; }
message VertexLog { string vertex = 1; Timestamp timestamp = 2; int64 stream = 3; bytes msg = 4; }
message StatusResponse { repeated Vertex vertexes = 1; repeated VertexLog logs = 3; }
`;
const PACKET = { STAT: 0, REQ: 1, DATA: 2, FIN: 3, ERR: 4 } as const;
/** Bytes per DATA packet: well under gRPC's 4 MiB message limit. */
const CHUNK = 256 * 1024;

interface Wire {
  grpc: any;
  types: Record<string, any>;
}
let wire: Wire | undefined;
/** grpc-js and protobufjs are loaded on the first BuildKit build only. */
function loadWire(): Wire {
  if (wire) return wire;
  const require = createRequire(import.meta.url);
  const protobuf = require("protobufjs");
  const root = protobuf.parse(PROTO, { keepCase: true }).root;
  const types = Object.fromEntries(
    [
      "Packet",
      "HealthCheckRequest",
      "HealthCheckResponse",
      "StatusResponse",
      "GetSecretRequest",
      "GetSecretResponse",
    ].map((n) => [n, root.lookupType(`bake.${n}`)]),
  );
  wire = { grpc: require("@grpc/grpc-js"), types };
  return wire;
}

const codec = (type: any) => ({
  serialize: (m: object) => Buffer.from(type.encode(type.fromObject(m)).finish()),
  deserialize: (b: Buffer) => type.toObject(type.decode(b), { longs: Number, defaults: true }),
});

/** A trace message's payload (base64 of BuildKit's StatusResponse), decoded; empty when it cannot be. */
export function decodeTrace(base64: string): { vertexes: TraceVertex[]; logs: TraceLog[] } {
  const { types } = loadWire();
  let m: any;
  try {
    m = types.StatusResponse.toObject(types.StatusResponse.decode(Buffer.from(base64, "base64")), {
      longs: Number,
      defaults: true,
    });
  } catch {
    return { vertexes: [], logs: [] }; // progress only: the build's result comes in other messages
  }
  return {
    vertexes: m.vertexes.map((v: any) => ({
      digest: v.digest,
      name: v.name,
      cached: v.cached,
      started: Boolean(v.started),
      completed: Boolean(v.completed),
      error: v.error || undefined,
    })),
    logs: m.logs.map((l: any) => ({ vertex: l.vertex, text: Buffer.from(l.msg).toString("utf8") })),
  };
}

export interface TraceVertex {
  digest: string;
  name: string;
  cached: boolean;
  started: boolean;
  completed: boolean;
  error?: string;
}
export interface TraceLog {
  vertex: string;
  text: string;
}

/** The engine (or a proxy before it) would not open a session: builds take the classic builder. */
export class SessionRefusedError extends Error {}

/** What the engine may read in a session: the build context and the folder of the Dockerfile. */
export interface SessionDirs {
  context: ServedEntry[];
  dockerfile: ServedEntry[];
}

/**
 * Opens a session on the engine and serves `dirs` in it until closed. `target` is where plain
 * HTTP reaches the engine (a unix socket, or tcp); `sharedKey` names the files it keeps.
 */
export async function openSession(
  target: http.RequestOptions,
  dirs: SessionDirs,
  sharedKey: string,
  secrets: Map<string, Buffer> = new Map(),
): Promise<{ id: string; close: () => void }> {
  const { grpc, types } = loadWire();
  const id = randomUUID();
  const server = new grpc.Server();
  const packet = codec(types.Packet);
  const bidi = (path: string) => ({
    path,
    requestStream: true,
    responseStream: true,
    requestSerialize: packet.serialize,
    requestDeserialize: packet.deserialize,
    responseSerialize: packet.serialize,
    responseDeserialize: packet.deserialize,
  });
  server.addService(
    { DiffCopy: bidi("/moby.filesync.v1.FileSync/DiffCopy") },
    { DiffCopy: (call: any) => void diffCopy(call, dirs).catch(() => call.destroy?.()) },
  );
  const req = codec(types.HealthCheckRequest);
  const res = codec(types.HealthCheckResponse);
  server.addService(
    {
      Check: {
        path: "/grpc.health.v1.Health/Check",
        requestStream: false,
        responseStream: false,
        requestSerialize: req.serialize,
        requestDeserialize: req.deserialize,
        responseSerialize: res.serialize,
        responseDeserialize: res.deserialize,
      },
    },
    { Check: (_call: unknown, done: (e: null, r: object) => void) => done(null, { status: 1 }) },
  );
  // Build secrets (RUN --mount=type=secret): handed over the session on request, never in the build's request.
  const getReq = codec(types.GetSecretRequest);
  const getRes = codec(types.GetSecretResponse);
  server.addService(
    {
      GetSecret: {
        path: "/moby.buildkit.secrets.v1.Secrets/GetSecret",
        requestStream: false,
        responseStream: false,
        requestSerialize: getReq.serialize,
        requestDeserialize: getReq.deserialize,
        responseSerialize: getRes.serialize,
        responseDeserialize: getRes.deserialize,
      },
    },
    {
      GetSecret: (call: { request: { ID: string } }, done: (e: object | null, r?: object) => void) => {
        const value = secrets.get(call.request.ID);
        if (value) done(null, { data: value });
        else
          done({ code: grpc.status.NOT_FOUND, details: `secret ${call.request.ID} is not among the image's secrets:` });
      },
    },
  );
  const injector = server.createConnectionInjector(grpc.ServerCredentials.createInsecure());
  const socket = await new Promise<Duplex>((resolve, reject) => {
    const request = http.request({
      ...target,
      method: "POST",
      path: "/session",
      headers: {
        Connection: "Upgrade",
        Upgrade: "h2c",
        "X-Docker-Expose-Session-Uuid": id,
        "X-Docker-Expose-Session-Name": "bake",
        // The engine keeps the files it was sent under this key and asks next time only for
        // those whose stat changed (see contentTime); one key per node bounds what it keeps.
        "X-Docker-Expose-Session-Sharedkey": sharedKey,
        "X-Docker-Expose-Session-Grpc-Method": [
          "/moby.filesync.v1.FileSync/DiffCopy",
          "/grpc.health.v1.Health/Check",
          "/moby.buildkit.secrets.v1.Secrets/GetSecret",
        ],
      },
    });
    request.on("upgrade", (_res, s, head) => {
      if (head.length) s.unshift(head);
      resolve(s);
    });
    request.on("response", (r) => {
      r.resume();
      reject(new SessionRefusedError(`the engine answered /session with HTTP ${r.statusCode}`));
    });
    request.on("error", reject);
    request.end();
  });
  injector.injectConnection(socket);
  return {
    id,
    close: () => {
      server.forceShutdown();
      socket.destroy();
    },
  };
}

/**
 * fsutil's sender: every Stat in walk order, an empty Stat to end them, then the bytes of each
 * file the receiver asks for (DATA packets, an empty one ends a file), until it says FIN.
 */
async function diffCopy(call: any, dirs: SessionDirs): Promise<void> {
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

/** A BuildKit build's stream: trace messages, the image id, or the error and the step it failed at. */
export class BuildKitProgress {
  imageId?: string;
  error?: string;
  /** "[2/3] RUN make": the instruction running, then the one that failed. */
  step?: string;
  readonly tail: string[] = [];
  private readonly names = new Map<string, string>();
  private readonly announced = new Set<string>();

  constructor(private readonly tailSize = 20) {}

  /** Takes one stream message (its trace already decoded); returns lines for logs and progress. */
  accept(
    m: { id?: string; aux?: any; error?: string; errorDetail?: { message?: string } },
    trace?: { vertexes: TraceVertex[]; logs: TraceLog[] },
  ): string[] {
    const lines: string[] = [];
    if (m.id === "moby.image.id" && m.aux?.ID) this.imageId = m.aux.ID;
    if (trace) {
      for (const v of trace.vertexes) {
        this.names.set(v.digest, v.name);
        if (v.started && !this.announced.has(v.digest)) {
          this.announced.add(v.digest);
          if (/^\[.*\d+\/\d+\]/.test(v.name) && !this.error) this.step = v.name;
          lines.push(`#${this.announced.size} ${v.name}${v.cached ? " (cached)" : ""}`);
        }
        // Steps running beside a failed one end "context canceled": the first real error names the failure.
        if (v.error && (!this.error || (/context canceled/.test(this.error) && !/context canceled/.test(v.error)))) {
          this.step = v.name;
          this.error = v.error;
        }
      }
      for (const l of trace.logs) {
        for (const line of l.text.split("\n").filter((x, i, all) => x !== "" || i < all.length - 1)) {
          lines.push(line.replace(/\r/g, ""));
          if (line.trim()) {
            this.tail.push(line.replace(/\r/g, ""));
            if (this.tail.length > this.tailSize) this.tail.shift();
          }
        }
      }
    }
    if (m.error || m.errorDetail) {
      const message = (m.errorDetail?.message ?? m.error ?? "build failed").trim();
      this.error ??= message;
      lines.push(`ERROR: ${message}`);
    }
    return lines;
  }
}
