/**
 * `bake build --push` and the registry cache against a registry that asks for credentials (a
 * second real registry, htpasswd auth), with the credentials coming from a credential helper
 * named in the Docker config file, as ECR or a desktop keychain provide them.
 */
import { test } from "uvu";
import * as assert from "uvu/assert";
import { chmodSync, readFileSync, readdirSync, statSync, writeFileSync } from "node:fs";
import path from "node:path";
import { execa, type ResultPromise } from "execa";
import { argvWatch, bake, tempTree } from "../helpers/bake.js";
import { busyboxRootfs, docker, removeProject, uniqueProject } from "../helpers/engine.js";
import { freePort } from "../../src/tools/ports.js";

const project = uniqueProject("auth-it");
const USER = "ci";
const SECRET = "pw-never-logged-7f3a";
let registry = "";
let server: ResultPromise | undefined;
let dir = "";
let helperDir = "";

/** A Docker config folder naming `docker-credential-baketest` for the registry (or nothing). */
function dockerConfig(withHelper: boolean): Record<string, string> {
  const config = tempTree(
    { "config.json": JSON.stringify(withHelper ? { credHelpers: { [registry]: "baketest" } } : {}) },
    "bake-auth-config-",
  );
  return { DOCKER_CONFIG: config, PATH: `${helperDir}:${process.env.PATH}` };
}

const basic = `Basic ${Buffer.from(`${USER}:${SECRET}`).toString("base64")}`;
const manifestStatus = async (name: string, tag: string, auth = true) =>
  (
    await fetch(`http://${registry}/v2/${project}/${name}/manifests/${tag}`, {
      method: "HEAD",
      headers: {
        Accept: "application/vnd.docker.distribution.manifest.v2+json",
        ...(auth ? { Authorization: basic } : {}),
      },
    })
  ).status;

/** Every file under a folder, read, for a secret's absence. */
const everyFile = (root: string): string[] =>
  readdirSync(root).flatMap((n) => {
    const p = path.join(root, n);
    return statSync(p).isDirectory() ? everyFile(p) : [readFileSync(p, "utf8")];
  });

test.before(async () => {
  const port = await freePort();
  registry = `127.0.0.1:${port}`;
  const home = tempTree({}, "bake-auth-registry-");
  // The registry's htpasswd takes bcrypt only.
  const { stdout: hash } = await execa("python3", [
    "-W",
    "ignore",
    "-c",
    "import crypt,sys; print(crypt.crypt(sys.argv[1], crypt.mksalt(crypt.METHOD_BLOWFISH)))",
    SECRET,
  ]);
  writeFileSync(path.join(home, "htpasswd"), `${USER}:${hash.trim()}\n`);
  writeFileSync(
    path.join(home, "config.yml"),
    `version: 0.1\nlog: { level: warn }\nstorage:\n  filesystem: { rootdirectory: ${home}/data }\nauth:\n  htpasswd: { realm: bake-test, path: ${home}/htpasswd }\nhttp:\n  addr: ${registry}\n`,
  );
  server = execa("docker-registry", ["serve", path.join(home, "config.yml")], { reject: false });
  for (let i = 0; i < 100; i++) {
    const status = await fetch(`http://${registry}/v2/`).then(
      (r) => r.status,
      () => 0,
    );
    if (status === 401) break;
    await new Promise((r) => setTimeout(r, 100));
  }
  assert.is((await fetch(`http://${registry}/v2/`)).status, 401, "the registry asks for credentials");
  // A credential helper: answers `get` for this registry only, and records every call.
  helperDir = tempTree({}, "bake-auth-helper-");
  const helper = path.join(helperDir, "docker-credential-baketest");
  writeFileSync(
    helper,
    `#!/bin/sh\nread -r server\necho "$1 $server" >> '${helperDir}/calls'\n[ "$1" = get ] && [ "$server" = '${registry}' ] || { echo "unexpected: $1 $server" >&2; exit 3; }\nprintf '{"ServerURL":"%s","Username":"${USER}","Secret":"${SECRET}"}' "$server"\n`,
  );
  chmodSync(helper, 0o755);
  dir = tempTree({
    "bake.yml": `project: ${project}\nregistry: ${registry}\nimages:\n  base: { rootfs: { tar: ${await busyboxRootfs()} } }\n  svc: { parent: base, dockerfile: svc/Dockerfile }\n`,
    "svc/Dockerfile": "ARG BAKE_PARENT\nFROM ${BAKE_PARENT}\nRUN echo svc > /svc\n",
  });
});

test.after(async () => {
  server?.kill();
  await removeProject(project);
});

test("--push without credentials: exit 1 before anything builds, naming the registry and where bake looked", async () => {
  const env = dockerConfig(false);
  const r = await bake(["build", "--push"], { cwd: dir, env });
  assert.is(r.code, 1, r.stdout + r.stderr);
  const ref = `${registry}/${project}/base:`.replace(/\./g, "\\.");
  assert.match(
    r.stderr,
    new RegExp(
      `error: base: pulling ${ref}\\w+ failed: the registry refused it \\(.*no basic auth credentials\\); ${env.DOCKER_CONFIG}/config\\.json holds no credentials for it: docker login ${registry.replace(/\./g, "\\.")}, or name a credential helper for it \\(credHelpers\\)`,
    ),
  );
  assert.match(r.stderr, /not built: svc/);
  assert.is(
    (await docker.listImages({ filters: JSON.stringify({ label: [`bake.project=${project}`] }) })).length,
    0,
    "nothing built or tagged",
  );
  assert.is(await manifestStatus("base", "latest"), 404);
});

test("wrong credentials in an auths entry: exit 1 saying the registry refused the ones bake found, not repeating them", async () => {
  const config = tempTree(
    {
      "config.json": JSON.stringify({
        auths: { [registry]: { auth: Buffer.from(`${USER}:wrong-pw-1234`).toString("base64") } },
      }),
    },
    "bake-auth-config-",
  );
  const r = await bake(["build", "--push"], { cwd: dir, env: { DOCKER_CONFIG: config } });
  assert.is(r.code, 1, r.stdout + r.stderr);
  assert.match(
    r.stderr,
    new RegExp(
      `failed: the registry refused it \\(.*\\); it refused the credentials bake found for it in ${config}/config\\.json`,
    ),
  );
  assert.not.match(r.stdout + r.stderr, /wrong-pw-1234/);
});

test("--push with a credential helper: every image pushed with its digest; the secret is in no output or file", async () => {
  const { result: r, seen } = await argvWatch(SECRET, () =>
    bake(["build", "--push"], { cwd: dir, env: dockerConfig(true) }),
  );
  assert.is(r.code, 0, r.stderr);
  assert.equal(seen, [], "no process argument list holds the secret");
  const m = JSON.parse(readFileSync(path.join(dir, "bake-manifest.json"), "utf8"));
  for (const name of ["base", "svc"]) {
    assert.is(
      await manifestStatus(name, m.images[name].key.slice(0, 12), false),
      401,
      "the registry refuses anonymous reads",
    );
    const res = await fetch(`http://${registry}/v2/${project}/${name}/manifests/${m.images[name].key.slice(0, 12)}`, {
      method: "HEAD",
      headers: { Accept: "application/vnd.docker.distribution.manifest.v2+json", Authorization: basic },
    });
    assert.is(res.status, 200, `${name} is in the registry`);
    assert.is(m.images[name].digest, res.headers.get("docker-content-digest"));
  }
  // One question per registry and run, whatever the number of images.
  assert.equal(readFileSync(path.join(helperDir, "calls"), "utf8").trim().split("\n"), [`get ${registry}`]);
  for (const text of [
    r.stdout,
    r.stderr,
    ...everyFile(path.join(dir, ".bake")),
    readFileSync(path.join(dir, "bake-manifest.json"), "utf8"),
  ])
    assert.not.ok(text.includes(SECRET));
});

test("removed locally, the next build pulls the image through the helper's credentials instead of building", async () => {
  const m = JSON.parse(readFileSync(path.join(dir, "bake-manifest.json"), "utf8"));
  for (const img of await docker.listImages({
    filters: JSON.stringify({ label: [`bake.project=${project}`, "bake.node=svc"] }),
  }))
    await docker.getImage(img.Id).remove({ force: true });
  const r = await bake(["build"], { cwd: dir, env: dockerConfig(true) });
  assert.is(r.code, 0, r.stderr);
  assert.match(r.stdout, /^svc\s+pulled/m);
  assert.is((await docker.getImage(`${registry}/${project}/svc:latest`).inspect()).Id, m.images.svc.id);
});

test("bake doctor: the registry asks for credentials; it says whether the Docker config file has them", async () => {
  const without = await bake(["doctor"], { cwd: dir, env: dockerConfig(false) });
  assert.match(
    without.stdout,
    new RegExp(
      `^FAIL\\s+registry\\s+${registry.replace(/\./g, "\\.")} asks for credentials and .*config\\.json holds none for it\\n\\s+fix: docker login ${registry.replace(/\./g, "\\.")}$`,
      "m",
    ),
  );
  assert.is(without.code, 1);
  const withHelper = await bake(["doctor"], { cwd: dir, env: dockerConfig(true) });
  assert.match(withHelper.stdout, /^ok\s+registry\s+.* asks for credentials; .*config\.json has them$/m);
  assert.not.ok((withHelper.stdout + withHelper.stderr).includes(SECRET));
});

test.run();
