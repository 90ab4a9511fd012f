/**
 * Hostile input through the real CLI and engine: bake.yml cannot reach outside the project, and
 * bake's own .env of pass_env values never lands in an image unless a rule asks for it by name.
 */
import { test } from "uvu";
import * as assert from "uvu/assert";
import { readdirSync, readFileSync, statSync, writeFileSync } from "node:fs";
import path from "node:path";
import { execa } from "execa";
import { bake, tempTree } from "../helpers/bake.js";
import { busyboxRootfs, imagesOfProject, removeProject, uniqueProject } from "../helpers/engine.js";

const project = uniqueProject("hostile-it");

test.after(async () => {
  await removeProject(project);
});

test("a context outside the project: exit 2 naming bake.yml's line, nothing built", async () => {
  const dir = tempTree({
    "bake.yml": `project: ${project}\nimages:\n  base: { rootfs: { tar: ${await busyboxRootfs()} } }\n  loot:\n    parent: base\n    dockerfile: loot/Dockerfile\n    context: /etc\n`,
    "loot/Dockerfile": "ARG BAKE_PARENT\nFROM ${BAKE_PARENT}\nCOPY . /loot\n",
  });
  const r = await bake(["build"], { cwd: dir });
  assert.is(r.code, 2, r.stderr);
  assert.match(r.stderr, /^error: bake\.yml:7:\d+: build context \/etc is outside the project/m);
  assert.match(r.stderr, /--allow-path \/ or set BAKE_ALLOW_PATHS/);
  assert.equal(await imagesOfProject(project), [], "nothing built");
});

test("bake's .env stays out of an image whose context holds it, until .dockerignore names it", async () => {
  const secret = `env-secret-${process.pid}`;
  const dir = tempTree({
    "bake.yml": `project: ${project}\nimages:\n  base: { rootfs: { tar: ${await busyboxRootfs()} } }\n  app: { parent: base, dockerfile: Dockerfile }\n`,
    Dockerfile: "ARG BAKE_PARENT\nFROM ${BAKE_PARENT}\nCOPY . /src\n",
    ".env": `APP_TOKEN=${secret}\n`,
    "app.txt": "app\n",
  });
  const files = async () => {
    const r = await bake(["build", "app"], { cwd: dir });
    assert.is(r.code, 0, r.stderr);
    const id = JSON.parse(readFileSync(path.join(dir, "bake-manifest.json"), "utf8")).images.app.id;
    return (await execa("docker", ["run", "--rm", "--network", "none", id, "sh", "-c", "cd /src && ls -A && cat .env 2>/dev/null || true"])).stdout;
  };
  const withheld = await files();
  assert.not.match(withheld, /(^|\n)\.env\n/);
  assert.not.ok(withheld.includes(secret), "the secret is not in the image");
  assert.match(withheld, /app\.txt/);
  writeFileSync(path.join(dir, ".dockerignore"), "!.env\n");
  const asked = await files();
  assert.match(asked, /(^|\n)\.env\n/);
  assert.ok(asked.includes(secret), "asked for by name, it is sent as docker would");
  // The run's tool logs are the owner's only.
  const logs = readdirSync(path.join(dir, ".bake/logs"), { recursive: true, withFileTypes: true }).filter((e) => e.isFile());
  assert.ok(logs.length > 0);
  for (const e of logs) assert.is(statSync(path.join(e.parentPath ?? (e as any).path, e.name)).mode & 0o777, 0o600, e.name);
});

test.run();
