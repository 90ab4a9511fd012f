/**
 * Contexts with large files: a leaf image hashes its changed large files at build time (while
 * the classic builder's tar streams; before a BuildKit build asks for them), an image others
 * build on hashes them first. Either way the key is the one `bake plan` computes, the image holds
 * the files, and touched-but-equal files reuse it.
 */
import { test } from "uvu";
import * as assert from "uvu/assert";
import { createHash } from "node:crypto";
import { readFileSync, utimesSync, writeFileSync } from "node:fs";
import path from "node:path";
import { execa } from "execa";
import { bake, removeTree, tempTree } from "../helpers/bake.js";
import { busyboxRootfs, imagesOfProject, removeProject, uniqueProject } from "../helpers/engine.js";

const project = uniqueProject("large-ctx");
let dir = "";

// Large means over 1 MiB (smaller files are hashed as they are listed, never deferred).
const blob = (seed: number) => Buffer.alloc(3 << 20, seed);
const sha = (b: Buffer) => createHash("sha256").update(b).digest("hex");
const manifest = () => JSON.parse(readFileSync(path.join(dir, "bake-manifest.json"), "utf8"));
const planKeys = async () => {
  const r = await bake(["plan", "--json", "--target", "local"], { cwd: dir });
  assert.is(r.code, 0, r.stderr);
  return Object.fromEntries(JSON.parse(r.stdout).nodes.map((n: any) => [n.name, { key: n.key, status: n.status }]));
};
const built = async (args: string[] = []) => {
  const r = await bake(["build", "--json", ...args], { cwd: dir });
  assert.is(r.code, 0, r.stderr);
  return JSON.parse(r.stdout).images as Record<string, { key: string; id: string; action: string }>;
};
// Older than the digest cache's 3-second "racy" window, so the next run may trust (or miss) it.
const age = (rel: string, secondsAgo: number) => {
  const t = new Date(Date.now() - secondsAgo * 1000);
  utimesSync(path.join(dir, rel), t, t);
};

test.before(async () => {
  dir = tempTree({
    "bake.yml": `project: ${project}
images:
  base: { rootfs: { tar: ${await busyboxRootfs()} } }
  assets:
    parent: base
    dockerfile: assets/Dockerfile
  app:
    parent: assets
    dockerfile: app/Dockerfile
`,
    "assets/Dockerfile": "ARG BAKE_PARENT\nFROM ${BAKE_PARENT}\nCOPY model.bin /assets/model.bin\n",
    "app/Dockerfile": "ARG BAKE_PARENT\nFROM ${BAKE_PARENT}\nCOPY . /app\n",
    "app/small.txt": "small\n",
  });
  writeFileSync(path.join(dir, "assets/model.bin"), blob(1));
  writeFileSync(path.join(dir, "app/data-a.bin"), blob(2));
  writeFileSync(path.join(dir, "app/data-b.bin"), blob(3));
});

test.after(async () => {
  await removeProject(project);
  removeTree(dir);
});

test("cold build: the leaf's key, taken at build time, is the key bake plan computes; the image holds the files", async () => {
  const images = await built();
  assert.is(images.assets.action, "built");
  assert.is(images.app.action, "built");
  const plan = await planKeys();
  for (const name of ["base", "assets", "app"]) {
    assert.is(plan[name].key, images[name].key, name);
    assert.is(plan[name].status, "cached", name);
  }
  assert.is(manifest().images.app.key, images.app.key);
  const { stdout } = await execa("docker", [
    "run",
    "--rm",
    images.app.id,
    "sha256sum",
    "/app/data-a.bin",
    "/app/data-b.bin",
    "/assets/model.bin",
  ]);
  assert.equal(
    stdout
      .trim()
      .split("\n")
      .map((l) => l.split(/\s+/)[0]),
    [sha(blob(2)), sha(blob(3)), sha(blob(1))],
  );
});

test("touched files with the same content: nothing builds, the same images are reused", async () => {
  const before = manifest();
  const count = (await imagesOfProject(project)).length;
  for (const f of ["app/data-a.bin", "app/data-b.bin", "assets/model.bin"]) age(f, 10);
  const images = await built();
  for (const name of ["base", "assets", "app"]) {
    assert.is(images[name].action, "cached", name);
    assert.is(images[name].id, before.images[name].id, name);
  }
  assert.is((await imagesOfProject(project)).length, count);
});

test("a changed large file in the leaf: only the leaf builds, to the key plan computes", async () => {
  const before = manifest();
  const changed = blob(2);
  changed[changed.length - 1] = 9;
  writeFileSync(path.join(dir, "app/data-a.bin"), changed);
  age("app/data-a.bin", 10);
  const images = await built();
  assert.is(images.assets.action, "cached");
  assert.is(images.app.action, "built");
  assert.is.not(images.app.key, before.images.app.key);
  assert.is((await planKeys()).app.key, images.app.key);
});

test("with a registry: pushed, removed here, files touched: the leaf is pulled by its key, not built", async () => {
  const yml = path.join(dir, "bake.yml");
  writeFileSync(
    yml,
    readFileSync(yml, "utf8").replace(`project: ${project}\n`, `project: ${project}\nregistry: "127.0.0.1:5000"\n`),
  );
  const pushed = await built(["--push"]);
  const app = pushed.app;
  for (const img of await imagesOfProject(project))
    if (img.Labels?.["bake.node"] === "app") await execa("docker", ["rmi", "-f", img.Id]);
  age("app/data-b.bin", 20);
  const images = await built();
  assert.is(images.app.action, "pulled");
  assert.is(images.app.key, app.key);
  assert.is(images.assets.action, "cached");
});

test.run();
