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
import { Duplex } from "node:stream";
import { diffCopy, type SessionDirs } from "./buildkit-files.js";

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
interface Wire {
  grpc: any;
  types: Record<string, any>;
}
let wire: Wire | undefined;
/** grpc-js and protobufjs are loaded on the first BuildKit build only. */
export function loadWire(): Wire {
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

/** The engine (or a proxy before it) would not open a session: builds take the classic builder. */
export class SessionRefusedError extends Error {}

/**
 * Opens a session on the engine and serves `dirs` in it until closed. `target` is where bake's
 * HTTP reaches the engine (a unix socket, tcp, or tcp over TLS); `sharedKey` names the files it keeps.
 */
export async function openSession(
  target: http.RequestOptions,
  dirs: SessionDirs,
  sharedKey: string,
  secrets: Map<string, Buffer> = new Map(),
): Promise<{ id: string; close: () => void }> {
  const { grpc } = loadWire();
  const id = randomUUID();
  const server = sessionServer(dirs, secrets);
  const injector = server.createConnectionInjector(grpc.ServerCredentials.createInsecure());
  const upgraded = await upgradeToSession(target, id, sharedKey);
  // Over TLS, HTTP/2 would read the TLS socket's native handle and lose what Node already read
  // from it; as a plain stream, it reads everything in order.
  const socket = (upgraded as { encrypted?: boolean }).encrypted
    ? Duplex.from({ readable: upgraded, writable: upgraded })
    : upgraded;
  if (socket !== upgraded) socket.on("close", () => upgraded.destroy());
  injector.injectConnection(socket as any);
  return {
    id,
    close: () => {
      server.forceShutdown();
      socket.destroy();
    },
  };
}

/** The gRPC services a session offers the engine: FileSync's DiffCopy, the health check, and build secrets. */
function sessionServer(dirs: SessionDirs, secrets: Map<string, Buffer>): any {
  const { grpc, types } = loadWire();
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
  return server;
}

/** POST /session upgraded to h2c: the engine's end of the session, on which bake serves gRPC. */
function upgradeToSession(target: http.RequestOptions, id: string, sharedKey: string): Promise<Duplex> {
  return new Promise<Duplex>((resolve, reject) => {
    const request = http.request({
      ...target,
      method: "POST",
      path: "/session",
      headers: {
        ...(target.headers as Record<string, string> | undefined),
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
}
