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
import { createHash } from "node:crypto";
import {
  busyboxRootfs,
  docker,
  imagesOfProject,
  removeProject,
  sessionRefusingProxy,
  uniqueProject,
} from "../helpers/engine.js";

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
    return (
      await execa("docker", [
        "run",
        "--rm",
        "--network",
        "none",
        id,
        "sh",
        "-c",
        "cd /src && ls -A && cat .env 2>/dev/null || true",
      ])
    ).stdout;
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
  const logs = readdirSync(path.join(dir, ".bake/logs"), { recursive: true, withFileTypes: true }).filter((e) =>
    e.isFile(),
  );
  assert.ok(logs.length > 0);
  for (const e of logs)
    assert.is(statSync(path.join(e.parentPath ?? (e as any).path, e.name)).mode & 0o777, 0o600, e.name);
});

test("a build secret is mounted for the RUN that asks and lands in no layer, label, history, output or log; the classic builder refuses it", async () => {
  const secret = `build-secret-${process.pid}-Vq7`;
  const dir = tempTree({
    "bake.yml": `project: ${project}-sec\nimages:\n  base: { rootfs: { tar: ${await busyboxRootfs()} } }\n  app:\n    parent: base\n    dockerfile: app/Dockerfile\n    secrets: { token: { env: BUILD_TOKEN } }\n`,
    // The RUN names this run (the engine's layer cache, like bake's key, never holds a secret's value).
    "app/Dockerfile": `ARG BAKE_PARENT\nFROM \${BAKE_PARENT}\nRUN --mount=type=secret,id=token echo ${project} && sha256sum /run/secrets/token | cut -c1-64 > /token.sha && cat /run/secrets/token\n`,
  });
  try {
    const missing = await bake(["build"], { cwd: dir });
    assert.is(missing.code, 2, missing.stderr);
    assert.match(missing.stderr, /build secrets not set: BUILD_TOKEN \(secret token of app\)/);
    assert.equal(await imagesOfProject(`${project}-sec`), [], "nothing built");

    const r = await bake(["build", "--json"], { cwd: dir, env: { BUILD_TOKEN: secret } });
    assert.is(r.code, 0, r.stderr);
    const id = JSON.parse(r.stdout).images.app.id;
    const mounted = (
      await execa("docker", ["run", "--rm", "--network", "none", id, "cat", "/token.sha"])
    ).stdout.trim();
    assert.is(mounted, createHash("sha256").update(secret).digest("hex"), "the RUN read the secret");
    assert.not.ok(`${r.stdout}${r.stderr}`.includes(secret), "output");
    const image =
      JSON.stringify(await docker.getImage(id).inspect()) + JSON.stringify(await docker.getImage(id).history());
    assert.not.ok(image.includes(secret), "labels, configuration and history");
    const layers = (await execa("sh", ["-c", `docker save ${id} | grep -c -a -F '${secret}' || true`])).stdout.trim();
    assert.is(layers, "0", "no layer holds it");
    const logs = readdirSync(path.join(dir, ".bake/logs"), { recursive: true, withFileTypes: true })
      .filter((e) => e.isFile())
      .map((e) => readFileSync(path.join(e.parentPath ?? (e as any).path, e.name), "utf8"));
    assert.ok(
      logs.some((l) => l.includes("***")),
      "the step that printed it shows *** in the log",
    );
    assert.not.ok(
      logs.some((l) => l.includes(secret)),
      "logs",
    );

    const proxy = await sessionRefusingProxy();
    try {
      writeFileSync(
        path.join(dir, "app/Dockerfile"),
        `${readFileSync(path.join(dir, "app/Dockerfile"), "utf8")}RUN true\n`,
      );
      const classic = await bake(["build"], { cwd: dir, env: { BUILD_TOKEN: secret, DOCKER_HOST: proxy.host } });
      assert.is.not(classic.code, 0);
      assert.match(classic.stderr, /app mounts build secrets \(secrets:\), which only BuildKit builds can serve/);
      assert.not.ok(classic.stderr.includes(secret));
    } finally {
      proxy.close();
    }
  } finally {
    await removeProject(`${project}-sec`);
  }
});

test.run();
