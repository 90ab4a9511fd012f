/** `bake up` and friends on the real engine, and parity with the production Ansible role. */
import { test } from "uvu";
import * as assert from "uvu/assert";
import { existsSync, writeFileSync, rmSync } from "node:fs";
import path from "node:path";
import { bake, tempTree } from "../helpers/bake.js";
import { busyboxImage, busyboxRootfs, docker, removeProject, uniqueProject } from "../helpers/engine.js";

const project = uniqueProject("up-it");
const TOKEN = `tok-${process.pid}`;
/** A file that an env value would create if Ansible templated it (it must never exist). */
const PWNED = `/tmp/bake-pwned-up-${process.pid}`;
let dir = "";

test.before(async () => {
  dir = tempTree({
    "bake.yml": `project: ${project}
images:
  base: { rootfs: { tar: ${await busyboxRootfs()} } }
  svc: { parent: base, dockerfile: svc/Dockerfile }
  web:
    parent: svc
    dockerfile: web/Dockerfile
    run:
      ports: ["127.0.0.1::8080"]
      env: { GREETING: hello, MODE: test, LOG_FMT: "{{.Time}}", PROBE: "{{ lookup('pipe', 'touch ${PWNED}') }}" }
      pass_env: [WEB_TOKEN]
      command: [sh, -c, "echo web starting; exec httpd -f -v -p 8080 -h /www"]
      health: { http: /index.html, port: 8080, interval: 1, retries: 5 }
  sick:
    parent: svc
    dockerfile: web/Dockerfile
    run:
      command: [sh, -c, "echo sick-service-says-goodbye; sleep 600"]
      health: { cmd: ["false"], interval: 1, timeout: 1, retries: 2 }
`,
    "svc/Dockerfile": "ARG BAKE_PARENT\nFROM ${BAKE_PARENT}\nRUN mkdir -p /www\n",
    "web/Dockerfile": "ARG BAKE_PARENT\nFROM ${BAKE_PARENT}\nCOPY index.html /www/index.html\n",
    "web/index.html": "<h1>web</h1>\n",
  });
});

test.after(async () => {
  await bake(["down"], { cwd: dir });
  await removeProject(project);
});

const containers = () =>
  docker.listContainers({ all: true, filters: JSON.stringify({ label: [`bake.project=${project}`] }) });
const networks = async () => (await docker.listNetworks()).filter((n) => n.Name.startsWith(`${project}-`));

test("a missing pass_env value: exit 2 naming it, nothing started", async () => {
  const r = await bake(["up", "web"], { cwd: dir });
  assert.is(r.code, 2, r.stderr);
  assert.match(r.stderr, /pass_env not set: WEB_TOKEN \(for web\)/);
  assert.is((await containers()).length, 0);
});

let url = "";
let firstId = "";

test("up: healthy, reachable on 127.0.0.1, pass_env from .env present in the container", async () => {
  writeFileSync(path.join(dir, ".env"), `# local secrets\nWEB_TOKEN="${TOKEN}"\n`);
  const r = await bake(["up", "web", "--json"], { cwd: dir });
  assert.is(r.code, 0, r.stderr);
  const [web] = JSON.parse(r.stdout).services;
  assert.equal([web.service, web.healthy], ["web", true]);
  url = web.urls[0];
  assert.match(url, /^http:\/\/127\.0\.0\.1:\d+$/);
  assert.is(await (await fetch(`${url}/index.html`)).text(), "<h1>web</h1>\n");
  const exec = await bake(["exec", "web", "--", "sh", "-c", "echo $WEB_TOKEN $GREETING"], { cwd: dir });
  assert.is(exec.code, 0, exec.stderr);
  assert.is(exec.stdout.trim(), `${TOKEN} hello`);
  const ps = await bake(["ps"], { cwd: dir });
  assert.match(ps.stdout, new RegExp(`web\\s+${project}-web\\s+Up .*\\(healthy\\)`));
  const logs = await bake(["logs", "web"], { cwd: dir });
  assert.match(logs.stdout, /web starting/);
  firstId = (await containers())[0].Id;
});

test("up twice is idempotent: the same container keeps running", async () => {
  const r = await bake(["up", "web"], { cwd: dir });
  assert.is(r.code, 0, r.stderr);
  assert.match(r.stderr, /already up to date/);
  const list = await containers();
  assert.equal(
    list.map((c) => c.Id),
    [firstId],
  );
});

test("a rotated pass_env secret recreates the container; the label that tells holds a salted digest, never the value", async () => {
  const rotated = `${TOKEN}-rotated`;
  writeFileSync(path.join(dir, ".env"), `WEB_TOKEN=${rotated}\n`);
  try {
    const r = await bake(["up", "web"], { cwd: dir });
    assert.is(r.code, 0, r.stderr);
    const [web] = await containers();
    assert.is.not(web.Id, firstId, "recreated");
    const info = await docker.getContainer(web.Id).inspect();
    assert.ok(info.Config.Env.includes(`WEB_TOKEN=${rotated}`));
    assert.match(info.Config.Labels["bake.pass-env"], /^[0-9a-f]{16}:[0-9a-f]{64}$/);
    assert.not.ok(JSON.stringify(info.Config.Labels).includes(rotated), "no label holds the value");
  } finally {
    writeFileSync(path.join(dir, ".env"), `WEB_TOKEN="${TOKEN}"\n`);
  }
  const back = await bake(["up", "web", "--json"], { cwd: dir });
  assert.is(back.code, 0, back.stderr);
  firstId = (await containers())[0].Id;
  url = JSON.parse(back.stdout).services[0].urls[0];
  const again = await bake(["up", "web"], { cwd: dir });
  assert.match(again.stderr, /already up to date/);
  assert.equal(
    (await containers()).map((c) => c.Id),
    [firstId],
    "the same secret keeps the container",
  );
});

test("logs -f follows until interrupted", async () => {
  const { execa } = await import("execa");
  const { CLI, testEnv } = await import("../helpers/bake.js");
  const child = execa(process.execPath, [CLI, "logs", "-f", "web"], { cwd: dir, env: testEnv(), reject: false });
  let seen = "";
  child.stdout!.on("data", (d) => (seen += d));
  child.stderr!.on("data", (d) => (seen += d));
  const started = Date.now();
  while (!/web starting/.test(seen) && Date.now() - started < 30_000) await new Promise((r) => setTimeout(r, 100));
  // httpd logs each request (the health check's every second): new lines keep arriving.
  const count = () => (seen.match(/response:200/g) ?? []).length;
  const before = count();
  await fetch(`${url}/index.html`);
  while (count() <= before && Date.now() - started < 45_000) await new Promise((r) => setTimeout(r, 100));
  child.kill("SIGINT");
  const r = await child;
  assert.match(seen, /web starting/);
  assert.ok(count() > before, "lines written after the start arrive while following");
  assert.ok(r.exitCode === 0 || r.exitCode === 130, `exit ${r.exitCode}`);
});

test("exec passes the command's exit code through", async () => {
  const r = await bake(["exec", "web", "--", "sh", "-c", "exit 7"], { cwd: dir });
  assert.is(r.code, 7);
});

test("a service that never becomes healthy: exit 1 with its last log lines", async () => {
  const r = await bake(["up", "sick"], { cwd: dir });
  assert.is(r.code, 1, r.stderr);
  assert.match(r.stderr, /sick did not become healthy \(unhealthy\); its last log lines:\nsick-service-says-goodbye/);
});

test("down removes exactly what bake started: no container, no network", async () => {
  const bystander = await docker.createContainer({
    Image: await busyboxImage(),
    Cmd: ["true"],
    Labels: { "bake.project": project },
  });
  const r = await bake(["down"], { cwd: dir });
  assert.is(r.code, 0, r.stderr);
  assert.match(r.stdout, new RegExp(`removed .*${project}-web`));
  assert.equal(
    (await containers()).map((c) => c.Id),
    [bystander.id],
    "only the container bake did not start is left",
  );
  await bystander.remove({ force: true });
  assert.equal(await networks(), []);
});

/** The fields a host and a laptop must agree on. */
async function contractOf(name: string) {
  const c = await docker.getContainer(name).inspect();
  return {
    image: c.Image,
    env: [...c.Config.Env].sort(),
    ports: c.HostConfig.PortBindings,
    command: c.Config.Cmd,
    healthcheck: c.Config.Healthcheck,
    restart: c.HostConfig.RestartPolicy,
    // bake up's own bookkeeping of pass_env values (docker_container compares the env itself).
    labels: Object.fromEntries(Object.entries(c.Config.Labels).filter(([k]) => k !== "bake.pass-env")),
  };
}

test("parity: --via ansible (the production service role) runs the same container as bake up", async () => {
  const api = await bake(["up", "web"], { cwd: dir });
  assert.is(api.code, 0, api.stderr);
  const viaApi = await contractOf(`${project}-web`);
  assert.is((await bake(["down"], { cwd: dir })).code, 0);
  const ansible = await bake(["up", "web", "--via", "ansible"], { cwd: dir });
  assert.is(ansible.code, 0, ansible.stderr);
  const viaAnsible = await contractOf(`${project}-web`);
  assert.equal(viaAnsible, viaApi);
  assert.ok(viaApi.env.includes(`WEB_TOKEN=${TOKEN}`));
  // Values reach Ansible literally: a Go template stays as written, a Jinja lookup runs nothing.
  assert.ok(viaAnsible.env.includes("LOG_FMT={{.Time}}"), JSON.stringify(viaAnsible.env));
  assert.ok(viaAnsible.env.includes(`PROBE={{ lookup('pipe', 'touch ${PWNED}') }}`), JSON.stringify(viaAnsible.env));
  assert.not.ok(existsSync(PWNED), "the lookup ran on the controller");
  assert.is(viaApi.restart?.Name, "unless-stopped");
  assert.not.ok(ansible.stdout.includes(TOKEN) || ansible.stderr.includes(TOKEN), "the secret stays out of the output");
  assert.is((await bake(["down"], { cwd: dir })).code, 0);
  rmSync(path.join(dir, ".env"));
});

test.run();
