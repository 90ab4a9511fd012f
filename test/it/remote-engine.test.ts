/**
 * The engine reached over TCP with TLS, as GitLab's docker:dind service and a remote engine are
 * (DOCKER_HOST=tcp://…:2376, DOCKER_TLS_VERIFY, DOCKER_CERT_PATH): a TLS listener on 127.0.0.1 in
 * front of the engine's socket, requiring a client certificate its CA signed, with certificates
 * made here. Builds keep BuildKit with a session there (a build secret, a cache mount), whether
 * the engine is named by DOCKER_HOST or by a `docker context` the docker CLI made; a wrong CA or
 * no client certificate stops bake (exit 1) with one line naming the transport and the fix. Over
 * plain TCP (an engine's unencrypted port) builds keep their session too.
 */
import { test } from "uvu";
import * as assert from "uvu/assert";
import { readFileSync, readdirSync, writeFileSync } from "node:fs";
import { connect, createServer } from "node:net";
import path from "node:path";
import { execa } from "execa";
import { bake, tempDir, tempTree } from "../helpers/bake.js";
import { busyboxRootfs, docker, removeProject, uniqueProject } from "../helpers/engine.js";
import { tlsEngine, type TlsEngine } from "../helpers/tls-engine.js";

const project = uniqueProject("tls");
const TOKEN = `tls-secret-${process.pid}`;
let dir = "";
let certs = "";
let engine: TlsEngine;
let port = 0;

const overTls = (folder: string) => ({ ...engine.env(folder), BUILD_TOKEN: TOKEN });
const certPath = (name: string, files: { ca: string; cert?: string }) => engine.certPath(name, files);

test.before(async () => {
  engine = await tlsEngine(["other-ca"]);
  certs = engine.certs;
  port = engine.port;
  dir = tempTree({
    "bake.yml": `project: ${project}
images:
  base: { rootfs: { tar: ${await busyboxRootfs()} } }
  svc:
    parent: base
    dockerfile: svc/Dockerfile
    secrets: { token: { env: BUILD_TOKEN } }
`,
    // A build secret and a cache mount: what the classic builder cannot do. A secret's value is not
    // part of the engine's cache key, so the step names the project: an earlier run's layer (another
    // token's length) is never reused. The cache mount is the project's own, for the same reason.
    "svc/Dockerfile": `ARG BAKE_PARENT\nFROM \${BAKE_PARENT}\nRUN --mount=type=secret,id=token echo ${project} && wc -c < /run/secrets/token > /token.len\nRUN --mount=type=cache,id=${project},target=/cache echo kept > /cache/run && ls /cache > /cache.seen\nCOPY tls.txt /\n`,
    "svc/tls.txt": "one\n",
  });
});

test.after(async () => {
  engine?.close();
  await removeProject(project);
});

test("over TCP with TLS and a client certificate: bake doctor names the transport; builds keep BuildKit with a session (a secret, a cache mount)", async () => {
  const env = overTls(certPath("good", { ca: "ca", cert: "client" }));
  const doctor = await bake(["doctor"], { cwd: dir, env });
  assert.match(
    doctor.stdout,
    new RegExp(
      `docker engine +[^\\n]* at tcp://127\\.0\\.0\\.1:${port} \\(tcp\\+tls\\); builds through BuildKit with a session`,
    ),
    doctor.stdout,
  );
  const r = await bake(["build", "--json"], { cwd: dir, env });
  assert.is(r.code, 0, r.stderr);
  const images = JSON.parse(r.stdout).images;
  assert.equal([images.base.action, images.svc.action], ["built", "built"]);
  const logs = path.join(dir, ".bake", "logs");
  const run = readdirSync(logs).sort().pop()!;
  assert.match(
    readFileSync(path.join(logs, run, "svc.log"), "utf8"),
    `building through BuildKit with a session (tcp://127.0.0.1:${port}, tcp+tls)`,
  );
  // The same engine, seen through its socket: the image, its key, the secret's length, no cache in the image.
  const inspect = await docker.getImage(images.svc.id).inspect();
  assert.is(inspect.Config.Labels["bake.key"], images.svc.key);
  const { stdout } = await execa("docker", [
    "run",
    "--rm",
    images.svc.id,
    "sh",
    "-c",
    "cat /token.len /cache.seen /tls.txt; ls /cache | wc -l",
  ]);
  assert.equal(
    stdout.split("\n").map((l) => l.trim()),
    [String(TOKEN.length), "run", "one", "0"],
  );
  assert.not.match(r.stdout + r.stderr, TOKEN);
  // Through the local socket the same graph is cached: the same keys, the same images.
  const local = await bake(["build", "--json"], { cwd: dir, env: { BUILD_TOKEN: TOKEN } });
  assert.is(local.code, 0, local.stderr);
  assert.is(JSON.parse(local.stdout).images.svc.id, images.svc.id);
  assert.is(JSON.parse(local.stdout).images.svc.action, "cached");
});

test("over plain TCP (an engine's port 2375, no TLS): builds keep BuildKit with a session (a secret, a cache mount)", async () => {
  const plain = createServer((client) => {
    const socket = connect("/var/run/docker.sock");
    client.pipe(socket).pipe(client);
    for (const s of [client, socket]) s.on("error", () => client.destroy());
  });
  await new Promise<void>((resolve) => plain.listen(0, "127.0.0.1", resolve));
  const host = `tcp://127.0.0.1:${(plain.address() as { port: number }).port}`;
  try {
    writeFileSync(path.join(dir, "svc/tls.txt"), "plain\n");
    const r = await bake(["build", "--json"], { cwd: dir, env: { DOCKER_HOST: host, BUILD_TOKEN: TOKEN } });
    assert.is(r.code, 0, r.stderr);
    const svc = JSON.parse(r.stdout).images.svc;
    assert.is(svc.action, "built");
    const logs = path.join(dir, ".bake", "logs");
    assert.match(
      readFileSync(path.join(logs, readdirSync(logs).sort().pop()!, "svc.log"), "utf8"),
      `building through BuildKit with a session (${host}, tcp)`,
    );
    const { stdout } = await execa("docker", ["run", "--rm", svc.id, "cat", "/token.len", "/tls.txt"]);
    assert.equal(
      stdout.split("\n").map((l) => l.trim()),
      [String(TOKEN.length), "plain"],
    );
    assert.not.match(r.stdout + r.stderr, TOKEN);
  } finally {
    plain.close();
    writeFileSync(path.join(dir, "svc/tls.txt"), "one\n");
  }
});

test("a docker context the docker CLI made names the same engine: --context, DOCKER_CONTEXT and the current context each reach it over TLS with a session", async () => {
  const config = tempDir("bake-docker-config-");
  const good = certPath("context", { ca: "ca", cert: "client" });
  const cli = (args: string[]) => execa("docker", args, { env: { DOCKER_CONFIG: config, DOCKER_HOST: "" } });
  await cli([
    "context",
    "create",
    "tls-engine",
    "--docker",
    `host=tcp://127.0.0.1:${port},ca=${good}/ca.pem,cert=${good}/cert.pem,key=${good}/key.pem`,
  ]);
  // The reference tool reaches the engine through it.
  assert.match(
    (await cli(["--context", "tls-engine", "version", "--format", "{{.Server.APIVersion}}"])).stdout,
    /^1\.\d+$/,
  );
  const env = { DOCKER_CONFIG: config, DOCKER_HOST: "", BUILD_TOKEN: TOKEN };
  const doctor = await bake(["--context", "tls-engine", "doctor"], { cwd: dir, env });
  assert.match(
    doctor.stdout,
    new RegExp(
      `docker engine +[^\\n]* at tcp://127\\.0\\.0\\.1:${port} \\(tcp\\+tls, docker context tls-engine\\); builds through BuildKit with a session`,
    ),
    doctor.stdout,
  );
  writeFileSync(path.join(dir, "svc/tls.txt"), "context\n");
  const r = await bake(["build", "--json"], { cwd: dir, env: { ...env, DOCKER_CONTEXT: "tls-engine" } });
  assert.is(r.code, 0, r.stderr);
  assert.is(JSON.parse(r.stdout).images.svc.action, "built");
  const logs = path.join(dir, ".bake", "logs");
  const run = readdirSync(logs).sort().pop()!;
  assert.match(
    readFileSync(path.join(logs, run, "svc.log"), "utf8"),
    `building through BuildKit with a session (tcp://127.0.0.1:${port}, tcp+tls)`,
  );
  // `docker context use`: bake follows the current context with nothing else set.
  await cli(["context", "use", "tls-engine"]);
  const current = await bake(["doctor"], { cwd: dir, env });
  assert.match(current.stdout, /\(tcp\+tls, docker context tls-engine\); builds through BuildKit with a session/);
  // DOCKER_HOST, set, wins over the current context, as in the CLI.
  const overridden = await bake(["doctor"], { cwd: dir, env: { ...env, DOCKER_HOST: "unix:///var/run/docker.sock" } });
  assert.match(overridden.stdout, /at unix:\/\/\/var\/run\/docker\.sock \(unix\); builds through BuildKit/);
  const unknown = await bake(["--context", "nowhere", "build"], { cwd: dir, env });
  assert.is(unknown.code, 2, unknown.stderr);
  assert.match(
    unknown.stderr,
    /^error: docker context "nowhere" \(from --context\) does not exist: no [^\n]*meta\.json; `docker context ls`/,
  );
});

test("a CA that did not sign the engine's certificate, or no client certificate: exit 1, one line naming TLS and what to fix; nothing built or tagged", async () => {
  writeFileSync(path.join(dir, "svc/tls.txt"), "two\n");
  const tagsBefore = (await docker.listImages({ filters: JSON.stringify({ reference: [`${project}/svc`] }) }))
    .flatMap((i) => i.RepoTags ?? [])
    .sort();
  const wrongCa = await bake(["build"], {
    cwd: dir,
    env: overTls(certPath("wrong-ca", { ca: "other-ca", cert: "client" })),
  });
  assert.is(wrongCa.code, 1, wrongCa.stderr);
  assert.match(
    wrongCa.stderr,
    new RegExp(
      `^error: docker engine at tcp://127\\.0\\.0\\.1:${port} over TLS \\([^)]*wrong-ca\\): the engine's certificate is not signed by ca\\.pem: put the engine's CA certificate in DOCKER_CERT_PATH`,
    ),
  );
  assert.not.match(wrongCa.stderr, /\n\s+at /, "no stack trace");
  const noCert = await bake(["build"], { cwd: dir, env: overTls(certPath("no-cert", { ca: "ca" })) });
  assert.is(noCert.code, 1, noCert.stderr);
  assert.match(
    noCert.stderr,
    /over TLS \([^)]*no-cert\): the engine refused bake's client certificate: put a certificate the engine's CA signed in DOCKER_CERT_PATH/,
  );
  // A TLS setting that names no CA file is bad configuration, not a failed engine: exit 2.
  const noCa = await bake(["build"], { cwd: dir, env: { ...overTls(path.join(certs, "missing")) } });
  assert.is(noCa.code, 2, noCa.stderr);
  assert.match(noCa.stderr, /DOCKER_TLS_VERIFY is set but [^\n]*missing\/ca\.pem does not exist/);
  const tagsAfter = (await docker.listImages({ filters: JSON.stringify({ reference: [`${project}/svc`] }) }))
    .flatMap((i) => i.RepoTags ?? [])
    .sort();
  assert.equal(tagsAfter, tagsBefore, "nothing tagged");
});

test.run();
