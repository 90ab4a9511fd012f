/** `bake init`: a starter project that bake plan accepts as written; nothing overwritten. */
import { test } from "uvu";
import * as assert from "uvu/assert";
import { existsSync, readFileSync } from "node:fs";
import path from "node:path";
import { bake, tempTree } from "../helpers/bake.js";

const offline = { DOCKER_HOST: "unix:///nonexistent.sock" };

test("bake init writes bake.yml, a playbook of the user's own, a goss spec and a .gitignore; bake plan accepts them as written", async () => {
  const dir = path.join(tempTree({}), "my-platform");
  const r = await bake(["init", dir], { cwd: path.dirname(dir) });
  assert.is(r.code, 0, r.stderr);
  for (const f of [
    "bake.yml",
    "ansible/site.yml",
    "ansible/host.goss.yaml",
    ".gitignore",
    "containers/app/Dockerfile",
    "containers/host/Dockerfile",
  ])
    assert.ok(existsSync(path.join(dir, f)), f);
  assert.match(readFileSync(path.join(dir, "bake.yml"), "utf8"), /^project: my-platform$/m);
  assert.equal(
    readFileSync(path.join(dir, ".gitignore"), "utf8")
      .split("\n")
      .filter((l) => l && !l.startsWith("#")),
    [".bake/", "bake-manifest.json", "bake-provenance.intoto.jsonl", ".env"],
  );
  // Its playbook names none of bake's roles: bake provisions the engine, the images and the services.
  assert.not.match(
    readFileSync(path.join(dir, "ansible/site.yml"), "utf8"),
    /docker_host|preload|bake_agent|role: service/,
  );
  const plan = await bake(["plan", "--target", "local", "--json"], { cwd: dir, env: offline });
  assert.is(plan.code, 0, plan.stderr);
  const nodes = JSON.parse(plan.stdout).nodes;
  assert.equal(nodes.map((n: any) => `${n.kind}:${n.name}:${n.layer}`).sort(), [
    "ami:app-host:ami",
    "image:app:release",
    "image:base:base",
    "image:host:service",
  ]);
});

test("bake init overwrites nothing: exit 2 naming what is there; a bad project name is exit 2", async () => {
  const dir = tempTree({ "bake.yml": "project: mine\n" });
  const r = await bake(["init"], { cwd: dir });
  assert.is(r.code, 2, r.stderr);
  assert.match(r.stderr, /already has bake\.yml: bake init writes a new project and overwrites nothing/);
  assert.is(readFileSync(path.join(dir, "bake.yml"), "utf8"), "project: mine\n");
  assert.not.ok(existsSync(path.join(dir, "ansible")), "nothing written");
  const bad = await bake(["init", "x", "--project", "Bad_Name"], { cwd: dir });
  assert.is(bad.code, 2);
  assert.match(bad.stderr, /--project: "Bad_Name" is not a valid Docker repository name/);
});

test.run();
