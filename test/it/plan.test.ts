/** `bake plan` against the real engine and moto: order, keys, statuses and reasons. */
import { test } from "uvu";
import * as assert from "uvu/assert";
import { bake, tempTree } from "../helpers/bake.js";
import { busyboxRootfs } from "../helpers/engine.js";
import { motoEnv, registerAmi, resetMoto } from "../helpers/moto.js";

const suffix = `${process.pid}`;
let dir = "";

test.before(async () => {
  await resetMoto();
  const rootfs = await busyboxRootfs();
  dir = tempTree({
    "bake.yml": `project: plan-it-${suffix}
images:
  base: { rootfs: { tar: ${rootfs} } }
  svc: { parent: base, dockerfile: svc/Dockerfile }
  web:
    parent: svc
    dockerfile: web/Dockerfile
    run: { ports: ["8080"], command: [httpd, -f] }
amis:
  host:
    builder: ebs
    region: us-east-1
    source: { owners: [self], name: "plan-src-${suffix}-*" }
    instance_type: t3.small
    playbook: host.yml
    preload: [base]
    services: [web]
    local: { image: base }   # its own host: bake's default host is tested in ami-aws
`,
    "svc/Dockerfile": "ARG BAKE_PARENT\nFROM ${BAKE_PARENT}\nRUN mkdir /svc\n",
    "web/Dockerfile": "ARG BAKE_PARENT\nFROM ${BAKE_PARENT}\nCOPY . /web\n",
    "web/index.html": "hello\n",
    "host.yml": "- hosts: all\n  tasks: []\n",
  });
});

const json = (stdout: string) =>
  JSON.parse(stdout).nodes as {
    name: string;
    kind: string;
    layer: string;
    key: string | null;
    status: string;
    reason: string;
  }[];

test("local target, nothing built: the graph in order, keys, all build", async () => {
  const r = await bake(["plan", "--json", "--target", "local"], { cwd: dir });
  assert.is(r.code, 0, r.stderr);
  const nodes = json(r.stdout);
  assert.equal(
    nodes.map((n) => [n.name, n.kind, n.layer, n.status]),
    [
      ["base", "image", "base", "build"],
      ["svc", "image", "service", "build"],
      ["web", "image", "release", "build"],
      ["host", "ami", "ami", "build"],
    ],
  );
  assert.ok(nodes.every((n) => /^[0-9a-f]{64}$/.test(n.key!)));
  assert.is(nodes[0].reason, "never built");
});

test("the human table names every node with its short key", async () => {
  const r = await bake(["plan", "--target", "local"], { cwd: dir });
  assert.is(r.code, 0, r.stderr);
  const keys = json((await bake(["plan", "--json", "--target", "local"], { cwd: dir })).stdout);
  for (const n of keys) assert.match(r.stdout, new RegExp(`${n.name}\\s+${n.kind}.*${n.key!.slice(0, 12)}\\s+build`));
  assert.match(r.stdout, /target local: 4 build, 0 cached, 0 unknown/);
});

test("the graph as a picture: Mermaid text, Graphviz DOT, and an SVG drawn offline with an element per node and edge", async () => {
  const keys = json((await bake(["plan", "--json", "--target", "local"], { cwd: dir })).stdout);
  const mermaid = await bake(["plan", "--format", "mermaid", "--target", "local"], { cwd: dir });
  assert.is(mermaid.code, 0, mermaid.stderr);
  assert.match(mermaid.stdout, /^flowchart LR\n/);
  for (const n of keys) assert.match(mermaid.stdout, `["${n.name}<br/>${n.key!.slice(0, 12)} · build<br/>`);
  // base → svc → web, and into the AMI: base shipped and its host, web shipped.
  assert.equal(mermaid.stdout.match(/^ {2}n\d+ (-->|-\. \w+ \.->) n\d+$/gm)?.length, 4);
  const dot = await bake(["plan", "--format", "dot", "--target", "local"], { cwd: dir });
  assert.match(
    dot.stdout,
    /^digraph bake \{[\s\S]*"svc" -> "web";[\s\S]*"web" -> "host" \[style=dashed, label="ships"\];\n\}$/,
  );
  const svg = await bake(["plan", "--format", "svg", "--target", "local"], { cwd: dir });
  assert.is(svg.code, 0, svg.stderr);
  assert.is((svg.stdout.match(/<g id="node\d+" class="node">/g) ?? []).length, keys.length);
  assert.is((svg.stdout.match(/<g id="edge\d+" class="edge">/g) ?? []).length, 4);
  const bad = await bake(["plan", "--format", "png"], { cwd: dir });
  assert.is(bad.code, 2);
  assert.match(bad.stderr, /format/);
});

test("selected nodes come with their dependencies only", async () => {
  const r = await bake(["plan", "svc", "--json", "--target", "local"], { cwd: dir });
  assert.equal(
    json(r.stdout).map((n) => n.name),
    ["base", "svc"],
  );
  const bad = await bake(["plan", "nope", "--target", "local"], { cwd: dir });
  assert.is(bad.code, 2);
  assert.match(bad.stderr, /unknown node nope: bake\.yml defines base, svc, web, host/);
});

test("engine unreachable: the plan still prints, statuses unknown and why", async () => {
  const r = await bake(["plan", "--json", "--target", "local"], {
    cwd: dir,
    env: { DOCKER_HOST: "unix:///tmp/no-engine-here.sock" },
  });
  assert.is(r.code, 0, r.stderr);
  const nodes = json(r.stdout);
  assert.ok(
    nodes.every(
      (n) =>
        n.status === "unknown" &&
        n.key &&
        /docker engine unreachable at unix:\/\/\/tmp\/no-engine-here\.sock/.test(n.reason),
    ),
    r.stdout,
  );
});

test("aws target without credentials: images known, the AMI key unknown, pointing to --target local", async () => {
  const r = await bake(["plan", "--json"], { cwd: dir });
  assert.is(r.code, 0, r.stderr);
  const host = json(r.stdout).find((n) => n.name === "host")!;
  assert.equal([host.key, host.status], [null, "unknown"]);
  assert.match(host.reason, /no AWS credentials.*--target local/);
});

test("aws target on moto: source resolved, key known; an AMI tagged with it makes the node cached; a newer source changes the key", async () => {
  const none = json((await bake(["plan", "--json"], { cwd: dir, env: motoEnv })).stdout).find(
    (n) => n.name === "host",
  )!;
  assert.is(none.status, "unknown");
  assert.match(none.reason, new RegExp(`no source AMI in us-east-1 matches name plan-src-${suffix}-\\*`));

  await registerAmi(`plan-src-${suffix}-1`);
  const first = json((await bake(["plan", "--json"], { cwd: dir, env: motoEnv })).stdout).find(
    (n) => n.name === "host",
  )!;
  assert.is(first.status, "build", first.reason);
  assert.match(first.key!, /^[0-9a-f]{64}$/);

  const baked = await registerAmi(`plan-host-${suffix}`, { "bake:key": first.key! });
  const cached = json((await bake(["plan", "--json"], { cwd: dir, env: motoEnv })).stdout).find(
    (n) => n.name === "host",
  )!;
  assert.equal([cached.status, cached.key], ["cached", first.key]);
  assert.match(cached.reason, new RegExp(`${baked} in us-east-1`));

  await new Promise((r) => setTimeout(r, 1100)); // moto's CreationDate has one-second resolution
  await registerAmi(`plan-src-${suffix}-2`);
  const moved = json((await bake(["plan", "--json"], { cwd: dir, env: motoEnv })).stdout).find(
    (n) => n.name === "host",
  )!;
  assert.is.not(moved.key, first.key);
  assert.is(moved.status, "build");
});

test.run();
