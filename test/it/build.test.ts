/** `bake build` against the real engine and registry, on a busybox-rootfs pipeline. */
import { test } from "uvu";
import * as assert from "uvu/assert";
import { appendFileSync, existsSync, readFileSync, readdirSync, writeFileSync } from "node:fs";
import path from "node:path";
import { execa } from "execa";
import { bake, CLI, tempTree, testEnv } from "../helpers/bake.js";
import {
  busyboxRootfs,
  containerCount,
  containerCountSettling,
  docker,
  forgetBuildSteps,
  parentTagsOf,
  removeProject,
  uniqueProject,
} from "../helpers/engine.js";

const project = uniqueProject("build-it");
let dir = "";

const pipeline = (rootfs: string, registry = "") => `project: ${project}
registry: "${registry}"
images:
  base: { rootfs: { tar: ${rootfs} } }
  svc:
    parent: base
    dockerfile: svc/Dockerfile
    args: { GREETING: hello }
  web:
    parent: svc
    dockerfile: web/Dockerfile
    run: { ports: ["8080"], command: [httpd, -f, -h, /web] }
  tools:
    parent: base
    dockerfile: tools/Dockerfile
`;

const manifest = () => JSON.parse(readFileSync(path.join(dir, "bake-manifest.json"), "utf8"));
const actions = (stdout: string) =>
  Object.fromEntries(
    stdout
      .trim()
      .split("\n")
      .map((l) => l.trim().split(/\s+/).slice(0, 2)),
  );
const inspect = (ref: string) =>
  docker
    .getImage(ref)
    .inspect()
    .catch(() => undefined);

test.before(async () => {
  const rootfs = await busyboxRootfs();
  dir = tempTree({
    "bake.yml": pipeline(rootfs),
    "svc/Dockerfile":
      'ARG BAKE_PARENT\nFROM ${BAKE_PARENT}\nARG GREETING\nRUN mkdir /svc && echo "$GREETING" > /svc/greeting\n',
    "web/Dockerfile": "ARG BAKE_PARENT\nFROM ${BAKE_PARENT}\nCOPY . /web\n",
    "web/.dockerignore": "*.log\n",
    "web/index.html": "<h1>hi</h1>\n",
    "web/debug.log": "noise\n",
    "tools/Dockerfile": "ARG BAKE_PARENT\nFROM ${BAKE_PARENT}\nRUN echo tools > /tools\n",
  });
});

test.after(async () => {
  await removeProject(project);
});

test("cold build: every image exists with its key tag, labels and parent pinned by id", async () => {
  const r = await bake(["build"], { cwd: dir });
  assert.is(r.code, 0, r.stderr);
  assert.equal(actions(r.stdout), { base: "built", svc: "built", tools: "built", web: "built" });
  const m = manifest();
  for (const name of ["base", "svc", "web", "tools"]) {
    const entry = m.images[name];
    const img = await inspect(`${project}/${name}:${entry.key.slice(0, 12)}`);
    assert.ok(img, `${name} is tagged with its key`);
    assert.is(img!.Id, entry.id);
    assert.is(img!.Config.Labels["bake.key"], entry.key);
    assert.is(img!.Config.Labels["bake.node"], name);
    assert.match(img!.Config.Labels["org.opencontainers.image.created"], /^\d{4}-\d\d-\d\dT/);
    assert.is((await inspect(`${project}/${name}:latest`))!.Id, entry.id);
  }
  // The release's parent is the service image, by id: its layers are the service's plus its own.
  const web = (await inspect(`${project}/web:latest`))!;
  const svc = (await inspect(`${project}/svc:latest`))!;
  assert.equal(web.RootFS.Layers!.slice(0, svc.RootFS.Layers!.length), svc.RootFS.Layers);
  assert.is(web.Config.Labels["bake.parent"], m.images.svc.key);
  const { stdout } = await execa("docker", [
    "run",
    "--rm",
    `${project}/web:latest`,
    "sh",
    "-c",
    "cat /svc/greeting; ls -A /web; cat /web/Dockerfile",
  ]);
  // The user's Dockerfile arrives as it is (bake's labelled copy does not), debug.log is ignored.
  assert.is(stdout, "hello\n.dockerignore\nDockerfile\nindex.html\nARG BAKE_PARENT\nFROM ${BAKE_PARENT}\nCOPY . /web");
  assert.ok(existsSync(path.join(dir, ".bake/logs")) && readdirSync(path.join(dir, ".bake/logs")).length === 1);
});

test("a second build builds nothing and keeps the same ids", async () => {
  const before = manifest();
  const r = await bake(["build", "--json"], { cwd: dir });
  assert.is(r.code, 0, r.stderr);
  const images = JSON.parse(r.stdout).images;
  for (const name of ["base", "svc", "web", "tools"]) {
    assert.is(images[name].action, "cached");
    assert.is(images[name].id, before.images[name].id);
  }
});

test("registry: set, so every repository changes: the images are found by label and tagged, nothing builds", async () => {
  // Images are looked up by key tag first; under a name never built before, by label.
  const before = manifest();
  const rootfs = await busyboxRootfs();
  writeFileSync(path.join(dir, "bake.yml"), pipeline(rootfs, "127.0.0.1:5000"));
  try {
    const r = await bake(["build", "--json"], { cwd: dir });
    assert.is(r.code, 0, r.stderr);
    const images = JSON.parse(r.stdout).images;
    for (const name of ["base", "svc", "web", "tools"]) {
      assert.is(images[name].action, "cached", name);
      assert.is(images[name].id, before.images[name].id, name);
      assert.is(
        (await inspect(`127.0.0.1:5000/${project}/${name}:${before.images[name].key.slice(0, 12)}`))?.Id,
        before.images[name].id,
        name,
      );
    }
  } finally {
    writeFileSync(path.join(dir, "bake.yml"), pipeline(rootfs));
  }
});

test("--tag moves an extra tag with latest, after the whole run", async () => {
  const r = await bake(["build", "--tag", "release-1.2"], { cwd: dir });
  assert.is(r.code, 0, r.stderr);
  for (const name of ["base", "svc", "web", "tools"]) {
    assert.is((await inspect(`${project}/${name}:release-1.2`))!.Id, manifest().images[name].id);
  }
  const bad = await bake(["build", "--tag", "no spaces"], { cwd: dir });
  assert.is(bad.code, 2);
  assert.match(bad.stderr, /--tag no spaces is not a valid Docker tag/);
});

test("--no-cache rebuilds every image, to the same keys", async () => {
  const before = manifest();
  const r = await bake(["build", "--no-cache", "svc"], { cwd: dir });
  assert.is(r.code, 0, r.stderr);
  assert.equal(actions(r.stdout), { base: "built", svc: "built" });
  assert.is(manifest().images.svc.key, before.images.svc.key);
  assert.is.not(manifest().images.svc.id, before.images.svc.id);
});

test("a changed file rebuilds its node and those above it only", async () => {
  const before = manifest();
  appendFileSync(path.join(dir, "svc/Dockerfile"), "RUN echo changed > /svc/changed\n");
  const r = await bake(["build"], { cwd: dir });
  assert.is(r.code, 0, r.stderr);
  assert.equal(actions(r.stdout), { base: "cached", svc: "built", tools: "cached", web: "built" });
  assert.is.not(manifest().images.web.id, before.images.web.id);
  assert.is(manifest().images.tools.id, before.images.tools.id);
});

test("a change to an ignored file rebuilds nothing", async () => {
  appendFileSync(path.join(dir, "web/debug.log"), "more noise\n");
  const r = await bake(["build"], { cwd: dir });
  assert.is(r.code, 0, r.stderr);
  assert.equal(actions(r.stdout), { base: "cached", svc: "cached", tools: "cached", web: "cached" });
});

test("a broken Dockerfile exits 1 naming the node and the instruction; no tag moves", async () => {
  const before = manifest();
  const webLatest = (await inspect(`${project}/web:latest`))!.Id;
  appendFileSync(path.join(dir, "tools/Dockerfile"), "RUN echo about to fail && exit 3\n");
  appendFileSync(path.join(dir, "web/index.html"), "<p>new</p>\n");
  const r = await bake(["build"], { cwd: dir });
  assert.is(r.code, 1, r.stdout + r.stderr);
  assert.match(
    r.stderr,
    /error: tools: build failed at step 3\/3: RUN echo about to fail && exit 3: executor failed running \[\/bin\/sh -c echo about to fail && exit 3\]: exit code: 3/,
  );
  assert.match(r.stderr, /about to fail/);
  assert.match(r.stderr, /full log: .*\/tools\.log/);
  assert.not.match(r.stderr, /\n\s+at /);
  // web built (independent of tools) but `latest` did not move, and the manifest is unchanged.
  assert.is((await inspect(`${project}/web:latest`))!.Id, webLatest);
  assert.equal(manifest(), before);
  writeFileSync(path.join(dir, "tools/Dockerfile"), "ARG BAKE_PARENT\nFROM ${BAKE_PARENT}\nRUN echo tools > /tools\n");
});

test("--push records digests; removed locally, the next build pulls instead of building", async () => {
  writeFileSync(path.join(dir, "bake.yml"), pipeline(await busyboxRootfs(), "127.0.0.1:5000"));
  const pushed = await bake(["build", "--push"], { cwd: dir });
  assert.is(pushed.code, 0, pushed.stderr);
  const m = manifest();
  for (const name of ["base", "svc", "web", "tools"]) {
    const tag = m.images[name].key.slice(0, 12);
    const res = await fetch(`http://127.0.0.1:5000/v2/${project}/${name}/manifests/${tag}`, {
      method: "HEAD",
      headers: { Accept: "application/vnd.docker.distribution.manifest.v2+json" },
    });
    assert.is(res.status, 200, `${name}:${tag} is in the registry`);
    assert.is(m.images[name].digest, res.headers.get("docker-content-digest"));
  }
  // Remove both images from the engine entirely (the child first), whatever names they carry.
  for (const name of ["web", "svc"]) {
    const all = await docker.listImages({
      filters: JSON.stringify({ label: [`bake.project=${project}`, `bake.node=${name}`] }),
    });
    for (const img of all) await docker.getImage(img.Id).remove({ force: true });
  }
  const again = await bake(["build"], { cwd: dir });
  assert.is(again.code, 0, again.stderr);
  assert.equal(actions(again.stdout), { base: "cached", svc: "pulled", tools: "cached", web: "pulled" });
  assert.is((await inspect(`127.0.0.1:5000/${project}/web:latest`))!.Id, m.images.web.id);
});

test("a clean runner with the registry's cache: a node whose key moved reuses the steps its pushed image ran", async () => {
  // Runner one builds and pushes; runner two is this engine without the project's images or its
  // build steps' cache, as a fresh CI runner is. Only a file copied after the costly step changes.
  const cached = `${project}-rc`;
  const marker = `step-${cached}`;
  const ci = tempTree({
    "bake.yml": `project: ${cached}\nregistry: 127.0.0.1:5000\nimages:\n  base: { rootfs: { tar: ${await busyboxRootfs()} } }\n  app: { parent: base, dockerfile: app/Dockerfile }\n`,
    "app/Dockerfile": `ARG BAKE_PARENT\nFROM \${BAKE_PARENT}\nRUN echo ${marker}-$(date +%s%N) > /stamp\nCOPY late.txt /late.txt\n`,
    "app/late.txt": "one\n",
  });
  const image = `127.0.0.1:5000/${cached}/app:latest`;
  const inImage = async (file: string) =>
    (await execa("docker", ["run", "--rm", "--network", "none", image, "cat", file])).stdout;
  try {
    const first = await bake(["build", "--push"], { cwd: ci });
    assert.is(first.code, 0, first.stderr);
    const stamp = await inImage("/stamp");
    assert.match(stamp, marker);
    await removeProject(cached);
    assert.ok((await forgetBuildSteps(marker)) >= 2, "the RUN step's record and the COPY's on it");
    writeFileSync(path.join(ci, "app/late.txt"), "two\n");
    const second = await bake(["build"], { cwd: ci });
    assert.is(second.code, 0, second.stderr);
    assert.match(second.stdout, /^base\s+pulled/m);
    assert.match(second.stdout, /^app\s+built/m);
    const logs = path.join(ci, ".bake/logs");
    const log = readFileSync(path.join(logs, readdirSync(logs).sort().at(-1)!, "app.log"), "utf8");
    assert.match(log, `cache from the registry: ${image}`);
    assert.match(log, /RUN echo step-[^\n]*\(cached\)/);
    assert.is(await inImage("/stamp"), stamp, "the step's layer came from the registry, not a new run");
    assert.is(await inImage("/late.txt"), "two");
  } finally {
    await removeProject(cached);
  }
});

test("no engine: exit 1 naming where bake looked and how to start one, nothing written", async () => {
  const before = readFileSync(path.join(dir, "bake-manifest.json"), "utf8");
  const r = await bake(["build"], { cwd: dir, env: { DOCKER_HOST: "unix:///tmp/no-engine-for-build.sock" } });
  assert.is(r.code, 1);
  assert.match(
    r.stderr,
    /docker engine unreachable at unix:\/\/\/tmp\/no-engine-for-build\.sock .*start it with make services/,
  );
  assert.not.match(r.stderr, /\n\s+at /);
  assert.is(readFileSync(path.join(dir, "bake-manifest.json"), "utf8"), before);
});

test("--push without a registry is a usage error", async () => {
  const local = tempTree({
    "bake.yml": `project: ${project}-np\nimages:\n  base: { rootfs: { tar: ${await busyboxRootfs()} } }\n`,
  });
  const r = await bake(["build", "--push"], { cwd: local });
  assert.is(r.code, 2);
  assert.match(r.stderr, /--push needs a registry/);
});

test("Ctrl-C during a build: exit 130, no container or temp file left, no tag", async () => {
  const slow = tempTree({
    "bake.yml": `project: ${project}-int\nimages:\n  base: { rootfs: { tar: ${await busyboxRootfs()} } }\n  slow: { parent: base, dockerfile: slow/Dockerfile }\n`,
    // The project name keeps a builder's cache of an earlier run from answering for the step.
    "slow/Dockerfile": `ARG BAKE_PARENT\nFROM \${BAKE_PARENT}\nRUN echo sleeping ${project} && sleep 300\n`,
  });
  const containersBefore = await containerCount(`${project}-int`);
  const child = execa(process.execPath, [CLI, "build"], { cwd: slow, env: testEnv(), reject: false });
  let seen = "";
  child.stderr!.on("data", (d) => (seen += d));
  const started = Date.now();
  while (!/(Step 3\/\d+ : |#\d+ \[2\/2\] )RUN echo sleeping/.test(seen) && Date.now() - started < 60_000)
    await new Promise((r) => setTimeout(r, 100));
  assert.match(seen, /RUN echo sleeping/);
  await new Promise((r) => setTimeout(r, 1500)); // the RUN step is running
  const interrupted = Date.now();
  child.kill("SIGINT");
  const result = await child;
  assert.is(result.exitCode, 130, String(result.stderr));
  assert.ok(Date.now() - interrupted < 60_000, "stopped well before the sleep (300 s) ended");
  // The engine removes the build's container once the request is gone: give it a moment.
  const containers = await containerCountSettling(containersBefore, `${project}-int`);
  assert.is(containers, containersBefore);
  const tags = (await docker.listImages({ filters: JSON.stringify({ reference: [`${project}-int/slow`] }) })).length;
  assert.is(tags, 0);
  assert.not.ok(existsSync(path.join(slow, "bake-manifest.json")));
  assert.equal(await parentTagsOf(child.pid!), [], "no parent tag left");
  await removeProject(`${project}-int`);
});

test.run();
