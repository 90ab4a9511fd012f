/** Pure parts of the build: stream parsers, the context tar, labels, tool argument lists. */
import { test } from "uvu";
import * as assert from "uvu/assert";
import path from "node:path";
import { statSync } from "node:fs";
import tar from "tar-stream";
import { BuildProgress, JsonLines, pushDigest, streamError } from "../../src/tools/docker-stream.js";
import { contextTar, SENT_DOCKERFILE, withLabels } from "../../src/images/context-tar.js";
import { listContext, listedFile } from "../../src/graph/context-files.js";
import { debootstrapArgs, packRootfsArgs } from "../../src/tools/debootstrap.js";
import { stripCredentials } from "../../src/tools/git.js";
import { basicAuth, netrcEntry, splitCredentials } from "../../src/config/url-credentials.js";
import { parseConfig } from "../../src/config/load.js";
import { buildQuery, engineTarget, engineTls, engineTransport, repositoryOf } from "../../src/tools/docker.js";
import { UsageError } from "../../src/errors.js";
import { tempTree } from "../helpers/bake.js";

test("JsonLines joins messages split across chunks", () => {
  const p = new JsonLines();
  assert.equal(p.push('{"stream":"Step 1/2 : FROM x\\n"}\n{"str'), [{ stream: "Step 1/2 : FROM x\n" }]);
  assert.equal(p.push('eam":"ok"}\r\n'), [{ stream: "ok" }]);
  assert.equal(p.push('{"aux":{"ID":"sha256:abc"}}'), []);
  assert.equal(p.end(), [{ aux: { ID: "sha256:abc" } }]);
});

test("a failed build inside a 200 response: the error and the step it failed at", () => {
  const b = new BuildProgress();
  for (const m of [
    { stream: "Step 1/3 : FROM sha256:1\n" },
    { stream: " ---> 1\n" },
    { stream: "Step 2/3 : RUN make\n" },
    { stream: "make: *** no rule\n" },
    {
      errorDetail: { code: 2, message: "The command '/bin/sh -c make' returned a non-zero code: 2" },
      error: "The command '/bin/sh -c make' returned a non-zero code: 2",
    },
  ])
    b.accept(m);
  assert.is(b.error, "The command '/bin/sh -c make' returned a non-zero code: 2");
  assert.is(b.step, "Step 2/3 : RUN make");
  assert.is(b.imageId, undefined);
  assert.equal(b.tail.slice(-2), ["make: *** no rule", "Step 2/3 : RUN make"].reverse());
});

test("a good build ends with aux.ID", () => {
  const b = new BuildProgress();
  b.accept({ stream: "Successfully built 0123456789ab\n" });
  b.accept({ aux: { ID: "sha256:" + "f".repeat(64) } });
  assert.is(b.imageId, "sha256:" + "f".repeat(64));
  assert.is(b.error, undefined);
});

test("push digest from aux or the status line; stream errors", () => {
  const d = "sha256:" + "a".repeat(64);
  assert.is(pushDigest([{ status: "Pushed" }, { aux: { Tag: "x", Digest: d, Size: 1 } }]), d);
  assert.is(pushDigest([{ status: `latest: digest: ${d} size: 528` }]), d);
  assert.is(streamError([{ status: "x" }, { error: "denied", errorDetail: { message: "denied: no" } }]), "denied: no");
});

test("withLabels appends one LABEL instruction, values quoted", () => {
  assert.is(withLabels("FROM x", { b: 'say "hi"', a: "1" }), 'FROM x\nLABEL "a"="1" \\\n      "b"="say \\"hi\\""\n');
  assert.is(withLabels("FROM x\n", {}), "FROM x\n");
  assert.is(withLabels("FROM x", { src: "https://h/$HOME/r" }), 'FROM x\nLABEL "src"="https://h/\\$HOME/r"\n');
});

async function tarEntries(
  stream: NodeJS.ReadableStream,
): Promise<{ name: string; mode: number; type: string; content: string }[]> {
  const extract = tar.extract();
  const out: { name: string; mode: number; type: string; content: string }[] = [];
  extract.on("entry", (header: any, body: any, next: () => void) => {
    let content = "";
    body.on("data", (c: Buffer) => (content += c));
    body.on("end", () => {
      out.push({ name: header.name, mode: header.mode, type: header.type, content });
      next();
    });
  });
  const done = new Promise((resolve, reject) => {
    extract.on("finish", () => resolve(undefined));
    extract.on("error", reject);
  });
  (stream as any).pipe(extract);
  await done;
  return out;
}

test("the context tar: the listed files with normalised modes, the user's Dockerfile untouched, bake's labelled copy hidden by .dockerignore", async () => {
  const dir = tempTree({
    Dockerfile: "FROM x\n",
    ".dockerignore": "*.log\n.dockerignore\n",
    "app.sh": "echo\n",
    "a.log": "x",
    "sub/b.txt": "b",
  });
  const { chmodSync } = await import("node:fs");
  chmodSync(path.join(dir, "app.sh"), 0o775);
  chmodSync(path.join(dir, "sub/b.txt"), 0o600);
  const listing = await listContext(dir, { dockerfile: path.join(dir, "Dockerfile") });
  const { stream, dockerfilePath } = contextTar(listing, path.join(dir, "Dockerfile"), { "bake.key": "k" });
  assert.is(dockerfilePath, SENT_DOCKERFILE);
  const entries = await tarEntries(stream as any);
  assert.equal(
    entries.map((e) => [e.name, e.type, e.mode.toString(8)]),
    [
      ["Dockerfile", "file", "644"],
      ["app.sh", "file", "755"],
      ["sub", "directory", "755"],
      ["sub/b.txt", "file", "644"],
      [".dockerignore", "file", "644"],
      [SENT_DOCKERFILE, "file", "644"],
    ],
  );
  assert.is(entries[0].content, "FROM x\n");
  assert.is(entries[4].content, `*.log\n.dockerignore\n${SENT_DOCKERFILE}\n`);
  assert.is(entries[5].content, 'FROM x\nLABEL "bake.key"="k"\n');
});

test("a .dockerignore that reaches the image is sent as it is: the user's Dockerfile is named, the labels go with the request", async () => {
  const dir = tempTree({ Dockerfile: "FROM x\n", ".dockerignore": "*.log\nDockerfile\n", "a.log": "x", f: "f" });
  const listing = await listContext(dir, { dockerfile: path.join(dir, "Dockerfile") });
  const tar = contextTar(listing, path.join(dir, "Dockerfile"), { "bake.key": "k" });
  assert.equal([tar.dockerfilePath, tar.labelsInRequest], ["Dockerfile", true]);
  const entries = await tarEntries(tar.stream as any);
  // The Dockerfile is sent though .dockerignore names it: the engine reads it, then drops it.
  assert.equal(
    entries.map((e) => [e.name, e.content]),
    [
      [".dockerignore", "*.log\nDockerfile\n"],
      ["f", "f"],
      ["Dockerfile", "FROM x\n"],
    ],
  );
});

test("the context tar without a .dockerignore hides both bake files", async () => {
  const dir = tempTree({ "d/Dockerfile": "FROM x\n", "ctx/f": "f" });
  const listing = await listContext(path.join(dir, "ctx"));
  const entries = await tarEntries(contextTar(listing, path.join(dir, "d/Dockerfile")).stream as any);
  assert.equal(
    entries.map((e) => e.name),
    ["f", ".dockerignore", SENT_DOCKERFILE],
  );
  assert.is(entries[1].content, `${SENT_DOCKERFILE}\n.dockerignore\n`);
});

test("debootstrap and tar argument lists", () => {
  assert.equal(
    debootstrapArgs({ suite: "bookworm", variant: "minbase", include: ["ca-certificates", "python3"] }, "/r"),
    ["--variant=minbase", "--include=ca-certificates,python3", "bookworm", "/r"],
  );
  assert.equal(debootstrapArgs({ suite: "bookworm", include: [], mirror: "http://mirror.example/debian" }, "/r"), [
    "bookworm",
    "/r",
    "http://mirror.example/debian",
  ]);
  assert.equal(packRootfsArgs("/r", "/o.tar"), [
    "--numeric-owner",
    "--xattrs",
    "--sort=name",
    "-C",
    "/r",
    "-cf",
    "/o.tar",
    ".",
  ]);
});

test("a listed file is served exactly as listed: a link swapped in, or other content, is refused", async () => {
  const { symlinkSync, rmSync, writeFileSync } = await import("node:fs");
  const { createHash } = await import("node:crypto");
  const dir = tempTree({ "a.txt": "listed content\n", secret: "outside\n" });
  const listed = { path: "a.txt", size: 15, digest: createHash("sha256").update("listed content\n").digest("hex") };
  const read = async (file: string, l: Parameters<typeof listedFile>[1] = listed) => {
    const chunks: Buffer[] = [];
    for await (const c of listedFile(file, l, 4)) chunks.push(c);
    return Buffer.concat(chunks).toString();
  };
  assert.is(await read(path.join(dir, "a.txt")), "listed content\n");
  writeFileSync(path.join(dir, "a.txt"), "LISTED CONTENT\n");
  assert.match(
    await read(path.join(dir, "a.txt")).then(
      () => "served",
      (e: Error) => e.message,
    ),
    /a\.txt changed after it was listed/,
  );
  // Still the file the listing saw (inode, times, size): served without hashing it again.
  const { statSync } = await import("node:fs");
  const st = statSync(path.join(dir, "a.txt"));
  const seen = { ...listed, digest: "0".repeat(64), seen: { ino: st.ino, mtimeMs: st.mtimeMs, ctimeMs: st.ctimeMs } };
  assert.is(await read(path.join(dir, "a.txt"), seen), "LISTED CONTENT\n");
  writeFileSync(path.join(dir, "a.txt"), "listed CONTENT\n");
  assert.match(
    await read(path.join(dir, "a.txt"), seen).then(
      () => "served",
      (e: Error) => e.message,
    ),
    /changed after it was listed/,
    "rewritten: its times moved, so it is hashed",
  );
  rmSync(path.join(dir, "a.txt"));
  symlinkSync(path.join(dir, "secret"), path.join(dir, "a.txt"));
  assert.match(
    await read(path.join(dir, "a.txt")).then(
      () => "served",
      (e: Error) => e.message,
    ),
    /a\.txt became a symbolic link after it was listed/,
  );
});

test("a mirror's credentials: kept apart from its URL (keys, arguments), handed to wget's .netrc and as a Basic header", () => {
  const { url, credentials } = splitCredentials("https://deploy:p%40ss%3Aw0rd,x@mirror.example:8443/debian");
  assert.is(url, "https://mirror.example:8443/debian");
  assert.equal(credentials, { host: "mirror.example", user: "deploy", password: "p@ss:w0rd,x" });
  assert.is(netrcEntry(credentials!), "machine mirror.example login deploy password p@ss:w0rd,x\n");
  assert.is(netrcEntry({ host: "h", user: "a b", password: 'q"t' }), 'machine h login "a b" password "q\\"t"\n');
  assert.is(basicAuth(credentials!), `Basic ${Buffer.from("deploy:p@ss:w0rd,x").toString("base64")}`);
  assert.equal(splitCredentials("http://mirror.example/debian"), { url: "http://mirror.example/debian" });
  const dir = tempTree({});
  const config = parseConfig(
    'project: p\nimages:\n  base: { rootfs: { debootstrap: { suite: bookworm, mirror: "https://deploy:s3cr3t@mirror.example/debian" } } }\n',
    "bake.yml",
    dir,
    {},
  );
  const rootfs = config.images[0].rootfs!;
  assert.is(rootfs.debootstrap!.mirror, "https://mirror.example/debian");
  assert.equal(rootfs.mirrorCredentials, { host: "mirror.example", user: "deploy", password: "s3cr3t" });
  assert.not.ok(debootstrapArgs(rootfs.debootstrap!, "/r").join(" ").includes("s3cr3t"));
});

test("git remotes lose their credentials before they reach a label", () => {
  assert.is(stripCredentials("https://user:s3cret@git.example/team/repo.git"), "https://git.example/team/repo.git");
  assert.is(stripCredentials("git@git.example:team/repo.git"), "git@git.example:team/repo.git");
});

test("the build query: every tag, the hidden Dockerfile, args as JSON; labels and nocache only when asked", () => {
  const q = buildQuery({
    tags: ["p/web:0123456789ab", "p/web:x"],
    dockerfile: ".bake.Dockerfile",
    buildArgs: { BAKE_PARENT: "sha256:1", A: "b c" },
    labels: {},
    noCache: false,
  });
  assert.is(
    q,
    "t=p%2Fweb%3A0123456789ab&t=p%2Fweb%3Ax&dockerfile=.bake.Dockerfile&buildargs=%7B%22BAKE_PARENT%22%3A%22sha256%3A1%22%2C%22A%22%3A%22b+c%22%7D&rm=1&forcerm=1",
  );
  const params = new URLSearchParams(
    buildQuery({ tags: [], dockerfile: "Dockerfile", buildArgs: {}, labels: { a: "1" }, noCache: true }),
  );
  assert.equal([...params.keys()], ["dockerfile", "buildargs", "labels", "nocache", "rm", "forcerm"]);
  assert.equal(JSON.parse(params.get("labels")!), { a: "1" });
});

test("bake's own HTTP reaches the engine over a unix socket, tcp, tcp with TLS (the CLI's certificates), and ssh (a private socket standing for it)", () => {
  assert.equal(engineTarget({}), { socketPath: "/var/run/docker.sock", headers: { Host: "api.moby.localhost" } });
  assert.equal(engineTarget({ DOCKER_HOST: "tcp://127.0.0.1:2375" }), { host: "127.0.0.1", port: 2375 });
  assert.equal(
    [
      engineTransport({}),
      engineTransport({ DOCKER_HOST: "tcp://h:2375" }),
      engineTransport({ DOCKER_HOST: "ssh://u@h" }),
    ],
    ["unix", "tcp", "ssh"],
  );
  const certs = tempTree({ "ca.pem": "ca\n", "cert.pem": "cert\n", "key.pem": "key\n" });
  const tlsEnv = { DOCKER_HOST: "tcp://127.0.0.1:2376", DOCKER_TLS_VERIFY: "1", DOCKER_CERT_PATH: certs };
  assert.is(engineTransport(tlsEnv), "tcp+tls");
  const target = engineTarget(tlsEnv)!;
  assert.equal([target.host, target.port, typeof target.createConnection], ["127.0.0.1", 2376, "function"]);
  assert.equal(
    [engineTls(tlsEnv)!.verify, String(engineTls(tlsEnv)!.ca), String(engineTls(tlsEnv)!.cert)],
    [true, "ca\n", "cert\n"],
  );
  // DOCKER_CERT_PATH alone: TLS without verifying the engine (the CLI's --tls).
  assert.is(engineTls({ DOCKER_HOST: "tcp://h:2376", DOCKER_CERT_PATH: certs })!.verify, false);
  // Verifying needs ca.pem; a client certificate needs its key.
  const empty = tempTree({ "cert.pem": "cert\n" });
  assert.throws(
    () => engineTarget({ ...tlsEnv, DOCKER_CERT_PATH: empty }),
    (e: Error) => e instanceof UsageError && /DOCKER_TLS_VERIFY is set but .*ca\.pem does not exist/.test(e.message),
  );
  assert.throws(
    () => engineTls({ DOCKER_TLS: "1", DOCKER_CERT_PATH: empty }),
    (e: Error) => e instanceof UsageError && /holds cert\.pem without key\.pem/.test(e.message),
  );
  const ssh = engineTarget({ DOCKER_HOST: "ssh://builder@host" })!;
  assert.match(ssh.socketPath!, /\/bake-ssh-[^/]+\/engine\.sock$/);
  assert.is((statSync(path.dirname(ssh.socketPath!)).mode & 0o777).toString(8), "700", "a folder only this user opens");
  assert.ok(statSync(ssh.socketPath!).isSocket(), "bound before engineTarget returns");
  assert.is(engineTarget({ DOCKER_HOST: "npipe:////./pipe/docker_engine" }), undefined);
});

test("repositoryOf strips tags and digests, not registry ports", () => {
  assert.is(repositoryOf("127.0.0.1:5000/up/debian:12"), "127.0.0.1:5000/up/debian");
  assert.is(repositoryOf("127.0.0.1:5000/up/debian"), "127.0.0.1:5000/up/debian");
  assert.is(repositoryOf("debian@sha256:abc"), "debian");
});

test.run();
