/**
 * One sentinel secret through every path bake reads secrets from — a pass_env value (bake up,
 * through the API and through Ansible), a build secret, AWS credentials (moto), a mirror
 * password — must appear in no file under the project, no log, no image layer, label or history
 * entry, no manifest, and no process argument list seen while bake runs. (Registry credentials:
 * the same checks in registry-auth.test.ts, against a registry that asks for them.)
 */
import { test } from "uvu";
import * as assert from "uvu/assert";
import { readdirSync, readFileSync, writeFileSync } from "node:fs";
import { createServer } from "node:http";
import path from "node:path";
import { execa } from "execa";
import { argvWatch, bake, tempTree } from "../helpers/bake.js";
import { busyboxRootfs, docker, imagesOfProject, removeProject, uniqueProject } from "../helpers/engine.js";
import { motoEnv } from "../helpers/moto.js";

const project = uniqueProject("sentinel-it");
const SENTINEL = `sntl${process.pid}Kq9Zw`;

function filesHolding(dir: string): string[] {
  return readdirSync(dir, { recursive: true, withFileTypes: true })
    .filter((e) => e.isFile())
    .map((e) => path.join(e.parentPath ?? (e as any).path, e.name))
    .filter((f) => !f.endsWith("/.env") && readFileSync(f).includes(SENTINEL));
}

test("the sentinel in every secret path reaches no file, log, image, manifest or argument list", async () => {
  let auth = 0;
  const mirror = createServer((req, res) => {
    if (req.headers.authorization !== `Basic ${Buffer.from(`u:${SENTINEL}`).toString("base64")}`) return void res.writeHead(401, { "WWW-Authenticate": 'Basic realm="m"' }).end();
    auth++;
    res.writeHead(404).end();
  });
  await new Promise<void>((resolve) => mirror.listen(0, "127.0.0.1", resolve));
  const port = (mirror.address() as { port: number }).port;
  const dir = tempTree({
    "bake.yml": `project: ${project}
images:
  base: { rootfs: { tar: ${await busyboxRootfs()} } }
  svc:
    parent: base
    dockerfile: svc/Dockerfile
    secrets: { token: { env: BUILD_TOKEN } }
  web:
    parent: svc
    dockerfile: web/Dockerfile
    run:
      pass_env: [WEB_TOKEN]
      command: [sh, -c, "exec httpd -f -p 8080 -h /"]
  deb:
    rootfs:
      debootstrap: { suite: bookworm, variant: minbase, mirror: "http://u:\${MIRROR_PASSWORD}@127.0.0.1:${port}/debian" }
amis:
  host:
    builder: ebs
    region: us-east-1
    source: { owners: [self], name: "sentinel-src-*" }
    instance_type: t3.small
    playbook: ansible/host.yml
    preload: [base]
`,
    "ansible/host.yml": "- hosts: all\n  tasks: []\n",
    "svc/Dockerfile": `ARG BAKE_PARENT\nFROM \${BAKE_PARENT}\nRUN --mount=type=secret,id=token echo ${project} && wc -c /run/secrets/token > /token.len\n`,
    "web/Dockerfile": "ARG BAKE_PARENT\nFROM ${BAKE_PARENT}\n",
  });
  // pass_env values live in bake's .env, the one file that may hold them (never in a context).
  writeFileSync(path.join(dir, ".env"), `WEB_TOKEN=${SENTINEL}\n`);
  // Every secret comes from the environment, as CI gives them; bake.yml names them by ${VAR}.
  const env = { BUILD_TOKEN: SENTINEL, MIRROR_PASSWORD: SENTINEL, ...motoEnv, AWS_SECRET_ACCESS_KEY: SENTINEL };
  try {
    const { result: runs, seen } = await argvWatch(SENTINEL, async () => [
      await bake(["build", "svc", "web"], { cwd: dir, env }),
      await bake(["up", "web"], { cwd: dir, env }),
      await bake(["down"], { cwd: dir, env }),
      await bake(["up", "web", "--via", "ansible"], { cwd: dir, env }),
      await bake(["plan", "--target", "aws"], { cwd: dir, env }),
      await bake(["nightly", "--target", "local", "--json"], { cwd: dir, env }),
    ]);
    const [build, up, , viaAnsible, plan] = runs;
    for (const [name, r] of [["build", build], ["up", up], ["up --via ansible", viaAnsible], ["plan", plan]] as const) assert.is(r.code, 0, `${name}: ${r.stderr}`);
    assert.ok(auth > 0, "the mirror got the password (as a header or through .netrc)");
    assert.equal(seen, [], "no process argument list");
    for (const r of runs) assert.not.ok(`${r.stdout}${r.stderr}`.includes(SENTINEL), "output");
    assert.equal(filesHolding(dir), [], "files under the project (logs, manifest, bake.lock)");
    // The running service has it (that is its job); no image does.
    const web = await docker.getContainer(`${project}-web`).inspect();
    assert.ok(web.Config.Env.includes(`WEB_TOKEN=${SENTINEL}`));
    for (const img of await imagesOfProject(project)) {
      assert.not.ok(JSON.stringify(await docker.getImage(img.Id).inspect()).includes(SENTINEL), "labels and configuration");
      assert.not.ok(JSON.stringify(await docker.getImage(img.Id).history()).includes(SENTINEL), "history");
      assert.is((await execa("sh", ["-c", `docker save ${img.Id} | grep -c -a -F '${SENTINEL}' || true`])).stdout.trim(), "0", "layers");
    }
  } finally {
    mirror.close();
    // With the same environment: bake.yml names the secrets by ${VAR}, and without them it does not load.
    const down = await bake(["down"], { cwd: dir, env });
    assert.is(down.code, 0, down.stderr);
    await removeProject(project);
  }
});

test.run();
