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
import { createHash } from "node:crypto";
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
    if (req.headers.authorization !== `Basic ${Buffer.from(`u:${SENTINEL}`).toString("base64")}`)
      return void res.writeHead(401, { "WWW-Authenticate": 'Basic realm="m"' }).end();
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
    const [build, up, , viaAnsible, plan, night] = runs;
    for (const [name, r] of [
      ["build", build],
      ["up", up],
      ["up --via ansible", viaAnsible],
      ["plan", plan],
    ] as const)
      assert.is(r.code, 0, `${name}: ${r.stderr}`);
    assert.ok(auth > 0, "the mirror got the password (as a header or through .netrc)");
    // Nightly baked the local AMI, which runs no service, and its boot test passed; only the base
    // whose mirror answers 404 failed.
    const nightly = JSON.parse(night.stdout);
    assert.equal(
      nightly.failed.map((f: { node: string }) => f.node),
      ["deb"],
      night.stderr.slice(-2000),
    );
    assert.match(nightly.amis.host?.local ?? "", /^sha256:/);
    // Its report shows the AMI with every check of its boot test, passed.
    const page = /^report: (.+\/report\.html)$/m.exec(night.stderr.split("nightly: prune").at(-1)!)?.[1];
    const host = JSON.parse(readFileSync(path.join(path.dirname(page!), "run.json"), "utf8")).nodes.find(
      (n: { name: string }) => n.name === "host",
    );
    assert.equal([host.outcome, host.regions], ["built", nightly.amis.host]);
    assert.ok(host.checks.length >= 3 && host.checks.every((c: { ok: boolean }) => c.ok), JSON.stringify(host.checks));
    assert.equal(seen, [], "no process argument list");
    for (const r of runs) assert.not.ok(`${r.stdout}${r.stderr}`.includes(SENTINEL), "output");
    assert.equal(filesHolding(dir), [], "files under the project (logs, manifest, bake.lock)");
    // The running service has it (that is its job); no image does.
    const web = await docker.getContainer(`${project}-web`).inspect();
    assert.ok(web.Config.Env.includes(`WEB_TOKEN=${SENTINEL}`));
    for (const img of await imagesOfProject(project)) {
      assert.not.ok(
        JSON.stringify(await docker.getImage(img.Id).inspect()).includes(SENTINEL),
        "labels and configuration",
      );
      assert.not.ok(JSON.stringify(await docker.getImage(img.Id).history()).includes(SENTINEL), "history");
      assert.is(
        (await execa("sh", ["-c", `docker save ${img.Id} | grep -c -a -F '${SENTINEL}' || true`])).stdout.trim(),
        "0",
        "layers",
      );
    }
  } finally {
    mirror.close();
    // With the same environment: bake.yml names the secrets by ${VAR}, and without them it does not load.
    const down = await bake(["down"], { cwd: dir, env });
    assert.is(down.code, 0, down.stderr);
    await removeProject(project);
  }
});

test("a build secret given as a file inside the context: mounted for the build, and in no context, layer, key, listing or provenance material", async () => {
  const name = `${project}-file`;
  const secret = `${SENTINEL}-file`;
  const dir = tempTree({
    "bake.yml": `project: ${name}\nimages:\n  base: { rootfs: { tar: ${await busyboxRootfs()} } }\n  app:\n    parent: base\n    context: .\n    dockerfile: app/Dockerfile\n    secrets: { npm: { file: secrets/npm } }\n`,
    // COPY . puts the whole context in a layer: the secret must not be in it.
    "app/Dockerfile":
      "ARG BAKE_PARENT\nFROM ${BAKE_PARENT}\nCOPY . /ctx\nRUN --mount=type=secret,id=npm wc -c < /run/secrets/npm > /npm.len\n",
    // Even a rule that asks for it by name does not bring it in.
    ".dockerignore": "!secrets/npm\n",
    "secrets/npm": secret,
  });
  try {
    const build = await bake(["build", "--json"], { cwd: dir });
    assert.is(build.code, 0, build.stderr);
    const app = JSON.parse(build.stdout).images.app;
    const run = async (cmd: string) =>
      (await execa("docker", ["run", "--rm", "--entrypoint", "sh", app.id, "-c", cmd])).stdout.trim();
    assert.is(await run("cat /npm.len"), String(secret.length), "the build's secret mount had the value");
    assert.is(
      await run("ls -A /ctx/secrets 2>/dev/null; test -e /ctx/bake.yml && echo context-copied"),
      "context-copied",
      "the context arrived without the secret",
    );
    assert.is(
      (await execa("sh", ["-c", `docker save ${app.id} | grep -c -a -F '${secret}' || true`])).stdout.trim(),
      "0",
      "layers",
    );
    const provenance = readFileSync(path.join(dir, "bake-provenance.intoto.jsonl"), "utf8");
    assert.ok(provenance.includes("file:bake.yml"), "the statement lists the context's files");
    assert.not.ok(
      provenance.includes("secrets/npm") || provenance.includes(createHash("sha256").update(secret).digest("hex")),
      "no material names the secret file or its digest",
    );
    const holding = readdirSync(dir, { recursive: true, withFileTypes: true })
      .filter((e) => e.isFile())
      .map((e) => path.relative(dir, path.join(e.parentPath ?? (e as any).path, e.name)))
      .filter((f) => f !== "secrets/npm" && readFileSync(path.join(dir, f)).includes(secret));
    assert.equal(holding, [], "files under the project (logs, manifest, provenance)");
    // A new value is not a new key (the key holds secret ids, never values), and the plan says why.
    writeFileSync(path.join(dir, "secrets/npm"), `${secret}-rotated`);
    const plan = await bake(["plan", "--json"], { cwd: dir });
    assert.is(plan.code, 0, plan.stderr);
    const node = JSON.parse(plan.stdout).nodes.find((n: any) => n.name === "app");
    assert.equal([node.status, node.key, node.withheld], ["cached", app.key, ["secrets/npm"]]);
    const table = await bake(["plan"], { cwd: dir });
    assert.match(
      table.stdout,
      /note: app: build secret file secrets\/npm withheld from the context, the key and the provenance/,
    );
  } finally {
    await removeProject(name);
  }
});

test("a multi-line pass_env secret is refused before anything starts, naming the variable and never its value", async () => {
  const name = `${project}-pem`;
  const pem = `-----BEGIN KEY-----\n${SENTINEL}\nBAKE_PUBLISH=host\n-----END KEY-----`;
  const dir = tempTree({
    "bake.yml": `project: ${name}\nimages:\n  base: { rootfs: { tar: ${await busyboxRootfs()} } }\n  web:\n    parent: base\n    dockerfile: web/Dockerfile\n    run:\n      pass_env: [TLS_KEY]\n      command: [sh, -c, "exec httpd -f -p 8080 -h /"]\n`,
    "web/Dockerfile": "ARG BAKE_PARENT\nFROM ${BAKE_PARENT}\n",
  });
  try {
    const r = await bake(["up", "web"], { cwd: dir, env: { TLS_KEY: pem } });
    assert.is(r.code, 2, r.stderr);
    assert.match(r.stderr, /pass_env TLS_KEY: a value holds a line break or NUL/);
    assert.not.ok(`${r.stdout}${r.stderr}`.includes(SENTINEL), "output");
    assert.equal(filesHolding(dir), [], "files under the project");
    assert.equal(await imagesOfProject(name), [], "nothing built");
    assert.equal(
      (await docker.listContainers({ all: true, filters: JSON.stringify({ label: [`bake.project=${name}`] }) })).length,
      0,
      "nothing started",
    );
  } finally {
    await removeProject(name);
  }
});

test.run();
