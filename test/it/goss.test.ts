/**
 * Tests of what was baked (goss), on the real engine: a release tested while it runs its
 * contract, an image without one tested as goss's only process, a failing spec that tags nothing
 * and is tested again, the spec as an input of the key, `bake test`, and the AWS template's
 * test provisioner validated by Packer.
 */
import { test } from "uvu";
import * as assert from "uvu/assert";
import { readFileSync, writeFileSync } from "node:fs";
import path from "node:path";
import { execa } from "execa";
import { bake, tempTree } from "../helpers/bake.js";
import { busyboxRootfs, docker, removeProject, uniqueProject } from "../helpers/engine.js";
import { motoEnv } from "../helpers/moto.js";

const project = uniqueProject("goss");
let dir = "";
const PASSING =
  'file:\n  /www/index.html:\n    exists: true\n    contents: ["hello"]\nhttp:\n  http://127.0.0.1:8080/index.html:\n    status: 200\n    body: ["{{ .Vars.greeting }}"]\n';

test.before(async () => {
  dir = tempTree({
    "bake.yml": `project: ${project}
images:
  base: { rootfs: { tar: ${await busyboxRootfs()} } }
  svc:
    parent: base
    dockerfile: web/Dockerfile
    test: svc.goss.yaml
  web:
    parent: svc
    dockerfile: web/Dockerfile
    run: { ports: ["8080"], command: [httpd, -f, -p, "8080", -h, /www] }
    test: { spec: tests/web.goss.yaml, vars: tests/vars.yaml, retry_timeout: 3s, sleep: 500ms }
amis:
  host:
    builder: ebs
    region: us-east-1
    source: { owners: ["136693071363"], name: "debian-12-amd64-*" }
    instance_type: t3.small
    playbook: host.yml
    preload: [base]
    services: [web]
    test: { spec: host.goss.yaml, vars: tests/vars.yaml }
`,
    "web/Dockerfile": "ARG BAKE_PARENT\nFROM ${BAKE_PARENT}\nRUN mkdir -p /www && echo hello > /www/index.html\n",
    "tests/web.goss.yaml": PASSING,
    "tests/vars.yaml": "greeting: hello\n",
    "svc.goss.yaml":
      'file:\n  /bin/busybox:\n    exists: true\n    mode: "0755"\ncommand:\n  cat /www/index.html:\n    exit-status: 0\n    stdout: [hello]\n',
    "host.yml": "- hosts: all\n  tasks: []\n",
    "host.goss.yaml": "service:\n  docker:\n    enabled: true\n",
  });
});

test.after(async () => {
  await removeProject(project);
});

const keyTags = async (node: string) =>
  (await docker.listImages({ filters: JSON.stringify({ reference: [`${project}/${node}`] }) }))
    .flatMap((i) => i.RepoTags ?? [])
    .map((t) => t.split(":")[1])
    .sort();

test("a passing spec: the release is tested running its contract, the service as goss's only process; then tagged", async () => {
  const r = await bake(["build", "--json"], { cwd: dir });
  assert.is(r.code, 0, r.stderr);
  const images = JSON.parse(r.stdout).images;
  assert.match(r.stderr, /testing \S+\/web:[0-9a-f]{12} with tests\/web\.goss\.yaml/);
  const logs = /logs in (\S+)/.exec(r.stderr)![1];
  const web = readFileSync(path.join(logs, "web.log"), "utf8");
  assert.match(
    web,
    /HTTP: http:\/\/127\.0\.0\.1:8080\/index\.html: Body: matches expectation: \["hello"\]/,
    "the vars file templated the spec and the service answered",
  );
  assert.match(web, /Count: 4, Failed: 0/);
  assert.match(
    readFileSync(path.join(logs, "svc.log"), "utf8"),
    /Count: 4, Failed: 0/,
    "the service image, goss as its only process",
  );
  assert.equal(await keyTags("web"), [images.web.key.slice(0, 12), "latest"].sort());
  const left = await docker.listContainers({
    all: true,
    filters: JSON.stringify({ label: [`bake.project=${project}`] }),
  });
  assert.is(left.length, 0, "no test container is left");
});

test("a failing spec: exit 1 with goss's failure, no key tag, latest stays; the plan and a rerun test it again", async () => {
  const good = JSON.parse((await bake(["build", "--json"], { cwd: dir })).stdout).images.web;
  writeFileSync(path.join(dir, "tests/web.goss.yaml"), PASSING.replace("{{ .Vars.greeting }}", "goodbye"));
  const r = await bake(["build"], { cwd: dir });
  assert.is(r.code, 1, r.stderr);
  assert.match(r.stderr, /error: web: test tests\/web\.goss\.yaml: 1 of 4 checks failed/);
  assert.match(
    r.stderr,
    /HTTP: http:\/\/127\.0\.0\.1:8080\/index\.html: Body:\n(.*\n)*?to have patterns\n\s+\["goodbye"\]/,
    "the failure as goss prints it",
  );
  assert.match(r.stderr, new RegExp(`the image is kept as ${project}/web:failed-[0-9a-f]{12}; a rerun tests it again`));
  assert.not.match(r.stderr, /\n\s+at /);
  const plan = JSON.parse((await bake(["plan", "--json"], { cwd: dir })).stdout).nodes.find(
    (n: any) => n.name === "web",
  );
  assert.equal([plan.status, plan.reason.startsWith("its test has not passed")], ["build", true]);
  const tags = await keyTags("web");
  assert.ok(tags.includes(`failed-${plan.key.slice(0, 12)}`) && !tags.includes(plan.key.slice(0, 12)), tags.join(" "));
  assert.is((await docker.getImage(`${project}/web:latest`).inspect()).Id, good.id, "latest did not move");
  const again = await bake(["build"], { cwd: dir });
  assert.is(again.code, 1);
  assert.match(again.stderr, /web: test tests\/web\.goss\.yaml: 1 of 4 checks failed/, "tested again, not skipped");
  const left = await docker.listContainers({
    all: true,
    filters: JSON.stringify({ label: [`bake.project=${project}`] }),
  });
  assert.is(left.length, 0, "no test container is left");
});

test("the spec is an input of the key: plan names it; bake test runs the specs of what exists, --json per node", async () => {
  writeFileSync(path.join(dir, "tests/web.goss.yaml"), PASSING);
  const before = JSON.parse((await bake(["plan", "--json"], { cwd: dir })).stdout).nodes.find(
    (n: any) => n.name === "web",
  );
  writeFileSync(path.join(dir, "tests/web.goss.yaml"), `${PASSING}# a comment changes the spec\n`);
  const after = JSON.parse((await bake(["plan", "--json"], { cwd: dir })).stdout).nodes.find(
    (n: any) => n.name === "web",
  );
  assert.is.not(after.key, before.key);
  assert.match(after.reason, /test spec changed/, after.reason);
  const missing = await bake(["test", "web", "--json"], { cwd: dir });
  assert.is(missing.code, 1);
  assert.match(
    JSON.parse(missing.stdout).tests[0].failures[0],
    /no image with web's current key: run bake build web first/,
  );
  assert.is((await bake(["build"], { cwd: dir })).code, 0);
  const r = await bake(["test", "svc", "web", "--json"], { cwd: dir });
  assert.is(r.code, 0, r.stderr);
  const tests = JSON.parse(r.stdout).tests;
  assert.equal(
    tests.map((t: any) => [t.node, t.kind, t.spec, t.ok, t.checks]),
    [
      ["svc", "image", "svc.goss.yaml", true, { count: 4, failed: 0, skipped: 0 }],
      ["web", "image", "tests/web.goss.yaml", true, { count: 4, failed: 0, skipped: 0 }],
    ],
  );
  const none = await bake(["test", "base"], { cwd: dir });
  assert.is(none.code, 2);
  assert.match(none.stderr, /base has no test: in/);
  const noGoss = await bake(["test", "web"], { cwd: dir, env: { BAKE_GOSS: "/nonexistent/goss" } });
  assert.is(noGoss.code, 1);
  assert.match(noGoss.stderr, /BAKE_GOSS=\/nonexistent\/goss is not an executable goss/);
});

test("aws: the rendered template uploads goss and the spec and runs it last; packer validate and fmt accept it", async () => {
  const out = path.join(dir, "rendered");
  const r = await bake(["render", "host", "--out", out], { cwd: dir, env: motoEnv });
  assert.is(r.code, 0, r.stderr);
  const hcl = readFileSync(path.join(out, "ami.pkr.hcl"), "utf8");
  const provisioners = [...hcl.matchAll(/provisioner "(\w+)"/g)].map((m) => m[1]);
  assert.equal(provisioners.slice(-4), ["shell", "file", "file", "shell"], "the test provisioners come last");
  assert.ok(
    hcl.includes(
      String.raw`"sudo /tmp/bake-goss/goss --gossfile /tmp/bake-goss/goss.yaml --vars /tmp/bake-goss/vars.yaml --vars-inline '{\"bake\":{\"project\":\"` +
        project +
        String.raw`\",\"node\":\"host\",\"booted\":false} }' validate --format documentation --no-color --retry-timeout 30s --sleep 1s"`,
    ),
    hcl,
  );
  assert.match(hcl, /default\s+= env\("BAKE_GOSS"\)/);
  assert.is(
    readFileSync(path.join(out, "goss/goss.yaml"), "utf8"),
    readFileSync(path.join(dir, "host.goss.yaml"), "utf8"),
  );
  const validate = await execa("packer", ["validate", out], {
    env: { ...motoEnv, BAKE_GOSS: "/usr/local/bin/goss" },
    reject: false,
  });
  assert.is(validate.exitCode, 0, validate.stdout + validate.stderr);
  await execa("packer", ["fmt", "-check", out]);
});

test.run();
