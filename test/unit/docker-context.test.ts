/** `docker context` read as the docker CLI reads it: which context, and the engine and TLS files it names. */
import { test } from "uvu";
import * as assert from "uvu/assert";
import { createHash } from "node:crypto";
import path from "node:path";
import { applyDockerContext, chosenContext, readContext } from "../../src/tools/docker-context.js";
import { engineTarget, engineTransport } from "../../src/tools/docker-engine.js";
import { UsageError } from "../../src/errors.js";
import { tempTree } from "../helpers/bake.js";

const id = (name: string) => createHash("sha256").update(name).digest("hex");
const meta = (name: string, endpoint: object) =>
  JSON.stringify({ Name: name, Metadata: {}, Endpoints: { docker: endpoint } });

/** A config folder as `docker context create` leaves it: one tls context, one plain tcp, one ssh. */
function store(current?: string): string {
  return tempTree({
    "config.json": JSON.stringify(current ? { auths: {}, currentContext: current } : { auths: {} }),
    [`contexts/meta/${id("tls")}/meta.json`]: meta("tls", { Host: "tcp://127.0.0.1:2376", SkipTLSVerify: false }),
    [`contexts/tls/${id("tls")}/docker/ca.pem`]: "ca",
    [`contexts/tls/${id("tls")}/docker/cert.pem`]: "cert",
    [`contexts/tls/${id("tls")}/docker/key.pem`]: "key",
    [`contexts/meta/${id("plain")}/meta.json`]: meta("plain", { Host: "tcp://127.0.0.1:2375", SkipTLSVerify: false }),
    [`contexts/meta/${id("insecure")}/meta.json`]: meta("insecure", {
      Host: "tcp://127.0.0.1:2376",
      SkipTLSVerify: true,
    }),
    [`contexts/meta/${id("remote")}/meta.json`]: meta("remote", { Host: "ssh://builder@127.0.0.1:2222" }),
    [`contexts/meta/${id("empty")}/meta.json`]: meta("empty", {}),
  });
}

test("which context, in the CLI's order: --context, then DOCKER_HOST (the default), then DOCKER_CONTEXT, then config.json", () => {
  const dir = store("tls");
  const env = { DOCKER_CONFIG: dir };
  assert.equal(chosenContext(undefined, env), { name: "tls", from: path.join(dir, "config.json") });
  assert.equal(chosenContext(undefined, { ...env, DOCKER_CONTEXT: "plain" }), {
    name: "plain",
    from: "DOCKER_CONTEXT",
  });
  assert.is(chosenContext(undefined, { ...env, DOCKER_CONTEXT: "plain", DOCKER_HOST: "tcp://x:1" }), undefined);
  assert.equal(chosenContext("remote", { ...env, DOCKER_HOST: "tcp://x:1" }), { name: "remote", from: "--context" });
  assert.is(chosenContext("default", env), undefined);
  assert.is(chosenContext(undefined, { ...env, DOCKER_CONTEXT: "default" }), undefined);
  assert.is(chosenContext(undefined, { DOCKER_CONFIG: store() }), undefined);
  assert.is(chosenContext(undefined, { DOCKER_CONFIG: tempTree({}) }), undefined);
});

test("a context's engine: its host, and TLS from the files beside it (verified unless SkipTLSVerify)", () => {
  const dir = store();
  const env = { DOCKER_CONFIG: dir };
  const tlsDir = path.join(dir, "contexts", "tls", id("tls"), "docker");
  assert.equal(readContext({ name: "tls", from: "--context" }, env).env, {
    DOCKER_HOST: "tcp://127.0.0.1:2376",
    DOCKER_CERT_PATH: tlsDir,
    DOCKER_TLS_VERIFY: "1",
  });
  assert.equal(readContext({ name: "plain", from: "--context" }, env).env, { DOCKER_HOST: "tcp://127.0.0.1:2375" });
  assert.equal(readContext({ name: "insecure", from: "--context" }, env).env, {
    DOCKER_HOST: "tcp://127.0.0.1:2376",
    DOCKER_CERT_PATH: path.join(dir, "contexts", "tls", id("insecure"), "docker"),
    DOCKER_TLS: "1",
  });
  assert.equal(readContext({ name: "remote", from: "--context" }, env).env, {
    DOCKER_HOST: "ssh://builder@127.0.0.1:2222",
  });
});

test("applied: the context replaces DOCKER_HOST and the TLS variables the environment held, and the transport follows", () => {
  const dir = store();
  const env: NodeJS.ProcessEnv = {
    DOCKER_CONFIG: dir,
    DOCKER_HOST: "unix:///elsewhere.sock",
    DOCKER_CERT_PATH: "/stale",
    DOCKER_TLS: "1",
    DOCKER_CONTEXT: "plain",
  };
  assert.is(applyDockerContext("tls", env)?.name, "tls");
  assert.is(env.DOCKER_HOST, "tcp://127.0.0.1:2376");
  assert.is(env.DOCKER_TLS_VERIFY, "1");
  assert.is(env.DOCKER_TLS, undefined);
  assert.is(env.DOCKER_CONTEXT, undefined);
  assert.is(engineTransport(env), "tcp+tls");
  const plain: NodeJS.ProcessEnv = { DOCKER_CONFIG: dir, DOCKER_CONTEXT: "plain" };
  applyDockerContext(undefined, plain);
  assert.is(engineTransport(plain), "tcp");
  assert.equal(engineTarget(plain), { host: "127.0.0.1", port: 2375 });
  // No context named anywhere: the environment is left as it is.
  const untouched: NodeJS.ProcessEnv = { DOCKER_CONFIG: dir, DOCKER_HOST: "unix:///x.sock" };
  assert.is(applyDockerContext(undefined, untouched), undefined);
  assert.equal(untouched, { DOCKER_CONFIG: dir, DOCKER_HOST: "unix:///x.sock" });
});

test("a context that does not exist, or has no docker endpoint, or a config.json that is not JSON: one line naming the file", () => {
  const dir = store();
  const env = { DOCKER_CONFIG: dir };
  const refused = (f: () => unknown, pattern: RegExp) => {
    try {
      f();
      assert.unreachable("refused");
    } catch (e) {
      assert.instance(e, UsageError);
      assert.match((e as Error).message, pattern);
    }
  };
  refused(
    () => applyDockerContext("nope", env),
    new RegExp(
      `^docker context "nope" \\(from --context\\) does not exist: no ${dir}/contexts/meta/${id("nope")}/meta\\.json; \`docker context ls\``,
    ),
  );
  refused(
    () => applyDockerContext(undefined, { ...env, DOCKER_CONTEXT: "nope" }),
    /\(from DOCKER_CONTEXT\) does not exist/,
  );
  refused(
    () => applyDockerContext("empty", env),
    /^docker context "empty" has no docker endpoint \(Endpoints\.docker\.Host in /,
  );
  const broken = tempTree({ "config.json": "{ not json" });
  refused(
    () => applyDockerContext(undefined, { DOCKER_CONFIG: broken }),
    new RegExp(`^${broken}/config\\.json is not valid JSON`),
  );
});

test.run();
