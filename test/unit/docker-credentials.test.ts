/** Registry credentials from the Docker config file: auths entries and credential helpers. */
import { test } from "uvu";
import * as assert from "uvu/assert";
import { chmodSync, existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { DOCKER_HUB, registryAuth, registryOf } from "../../src/tools/docker-credentials.js";

/**
 * A Docker config folder, and a folder holding `docker-credential-baketest`: a helper that
 * answers `get` for the registries in `answers` (stdout, exit code) and fails on any other call.
 * Every call is recorded in `calls`.
 */
/** The config folders made here, removed when the file's tests end. */
const made: string[] = [];
test.after(() => made.forEach((d) => rmSync(d, { recursive: true, force: true })));

function dockerConfig(config: object, answers: Record<string, { out: string; code?: number }> = {}) {
  const dir = mkdtempSync(path.join(tmpdir(), "bake-docker-config-"));
  made.push(dir);
  writeFileSync(path.join(dir, "config.json"), JSON.stringify(config));
  const calls = path.join(dir, "calls");
  const cases = Object.entries(answers)
    .map(([registry, a]) => `  '${registry}') printf '%s' '${a.out}'; exit ${a.code ?? 0} ;;`)
    .join("\n");
  const helper = path.join(dir, "docker-credential-baketest");
  writeFileSync(
    helper,
    `#!/bin/sh\nread -r registry\necho "$1 $registry" >> '${calls}'\n[ "$1" = get ] || { echo "unexpected call: $1" >&2; exit 3; }\ncase "$registry" in\n${cases}\n  *) echo "unexpected registry: $registry" >&2; exit 3 ;;\nesac\n`,
  );
  chmodSync(helper, 0o755);
  const env = { DOCKER_CONFIG: dir, PATH: `${dir}:${process.env.PATH}` };
  return { env, calls: () => (existsSync(calls) ? readFileSync(calls, "utf8").trim().split("\n") : []) };
}

test("an auths entry: user and password from its base64 auth", async () => {
  const { env } = dockerConfig({
    auths: {
      "127.0.0.1:5000": { auth: Buffer.from("ci:pa:ss").toString("base64") },
      "https://ghcr.io/v1/": { identitytoken: "tok1" },
    },
  });
  assert.equal(await registryAuth("127.0.0.1:5000", env), {
    username: "ci",
    password: "pa:ss",
    serveraddress: "127.0.0.1:5000",
  });
  assert.equal(await registryAuth("ghcr.io", env), { identitytoken: "tok1", serveraddress: "ghcr.io" });
  assert.is(await registryAuth("other:5000", env), undefined);
});

test("credHelpers: the registry's helper is asked once with the registry on stdin, before auths", async () => {
  const { env, calls } = dockerConfig(
    {
      auths: { "127.0.0.1:5000": { auth: Buffer.from("stale:old").toString("base64") } },
      credHelpers: { "127.0.0.1:5000": "baketest" },
    },
    { "127.0.0.1:5000": { out: '{"ServerURL":"127.0.0.1:5000","Username":"ci","Secret":"s3cret-pw"}' } },
  );
  assert.equal(await registryAuth("127.0.0.1:5000", env), {
    username: "ci",
    password: "s3cret-pw",
    serveraddress: "127.0.0.1:5000",
  });
  await registryAuth("127.0.0.1:5000", env);
  assert.equal(calls(), ["get 127.0.0.1:5000"]);
});

test("credsStore serves every registry without a helper of its own; <token> is an identity token", async () => {
  const { env, calls } = dockerConfig(
    { credsStore: "baketest" },
    {
      [DOCKER_HUB]: { out: '{"ServerURL":"x","Username":"<token>","Secret":"id-tok"}' },
      "ghcr.io": { out: "credentials not found in native keychain", code: 1 },
    },
  );
  assert.equal(await registryAuth(registryOf("debian:bookworm-slim"), env), {
    identitytoken: "id-tok",
    serveraddress: DOCKER_HUB,
  });
  assert.is(await registryAuth("ghcr.io", env), undefined, "nothing stored: anonymous, as the docker CLI goes on");
  assert.equal(calls(), [`get ${DOCKER_HUB}`, "get ghcr.io"]);
});

test("a failing, missing or garbled helper is a clear error that never repeats what it printed", async () => {
  const failing = dockerConfig(
    { credHelpers: { "127.0.0.1:5000": "baketest" } },
    { "127.0.0.1:5000": { out: "keychain locked", code: 1 } },
  );
  const e1 = await registryAuth("127.0.0.1:5000", failing.env).catch((e) => e);
  assert.match(
    e1.message,
    /^docker-credential-baketest \(named by credHelpers in .*config\.json\) failed for 127\.0\.0\.1:5000 \(exit 1\): keychain locked$/,
  );
  const missing = dockerConfig({ credHelpers: { "127.0.0.1:5000": "nope" } });
  const e2 = await registryAuth("127.0.0.1:5000", missing.env).catch((e) => e);
  assert.match(e2.message, /^docker-credential-nope \(named by credHelpers in .*config\.json\) is not installed$/);
  const garbled = dockerConfig({ credsStore: "baketest" }, { "127.0.0.1:5000": { out: "user=ci secret=hunter22" } });
  const e3 = await registryAuth("127.0.0.1:5000", garbled.env).catch((e) => e);
  assert.match(
    e3.message,
    /docker-credential-baketest \(named by credsStore in .*\) for 127\.0\.0\.1:5000: its answer to `get` is not JSON/,
  );
  assert.not.match(e3.message, /hunter22/);
});

test("the registry of a reference, as config.json keys it", () => {
  assert.is(registryOf("debian:bookworm-slim"), DOCKER_HUB);
  assert.is(registryOf("library/debian"), DOCKER_HUB);
  assert.is(registryOf("docker.io/library/debian@sha256:0"), DOCKER_HUB);
  assert.is(registryOf("127.0.0.1:5000/arcade/base:0123"), "127.0.0.1:5000");
  assert.is(registryOf("localhost/arcade/base"), "localhost");
  assert.is(
    registryOf("123456789012.dkr.ecr.us-east-1.amazonaws.com/arcade/base"),
    "123456789012.dkr.ecr.us-east-1.amazonaws.com",
  );
});

test.run();
