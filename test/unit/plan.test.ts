/** Graph order and levels, and the pure plan: statuses and reasons from a given state. */
import { test } from "uvu";
import * as assert from "uvu/assert";
import { parseConfig } from "../../src/config/load.js";
import { buildGraph, selectWithDependencies } from "../../src/graph/graph.js";
import { findCycle } from "../../src/config/semantic.js";
import { computeKeys, keyOf } from "../../src/graph/keys.js";
import { assemblePlan, changedInputs, previousImage, type WorldState } from "../../src/plan/plan.js";
import { planJson, planMatrix, planTable } from "../../src/commands/plan.js";
import { amiStages, stageNode, stagesOn, stageTag } from "../../src/graph/stages.js";
import { planStageRetention } from "../../src/prune/plan.js";
import type { BakeImageRecord } from "../../src/tools/docker.js";
import { tempTree } from "../helpers/bake.js";

const dir = tempTree({ "r.tar": "x", "d/Dockerfile": "FROM x\n", "p.yml": "- hosts: all\n" });
const config = parseConfig(
  `project: p
images:
  zeta: { rootfs: { tar: r.tar } }
  alpha: { rootfs: { tar: r.tar } }
  svc: { parent: zeta, dockerfile: d/Dockerfile }
  rel: { parent: svc, dockerfile: d/Dockerfile, run: { command: [x] } }
  rel2: { parent: svc, dockerfile: d/Dockerfile, run: { command: [x] } }
  side: { parent: alpha, dockerfile: d/Dockerfile }
amis:
  host:
    builder: ebs
    region: us-east-1
    source: { owners: [self], name: x }
    instance_type: t3.small
    playbook: p.yml
    preload: [zeta]
    services: [rel]
`,
  "bake.yml",
  dir,
  {},
);
const graph = buildGraph(config);
const own = new Map(graph.order.map((n) => [n.name, { kind: n.kind, self: n.name }]));
const localKeys = computeKeys(graph, own, "local", { sourceAmi: new Map(), unresolved: new Map() });
const key = (n: string) => localKeys.get(n)!.key!;
const record = (node: string, k: string, created = 1, inputs?: Record<string, string>): BakeImageRecord => ({
  id: `sha256:${node}${created}`,
  tags: [`p/${node}:${k.slice(0, 12)}`],
  node,
  key: k,
  created,
  inputs,
});
const state = (images: BakeImageRecord[]): WorldState => ({ images: { ok: true, value: images }, amis: new Map() });

test("build order: dependencies first, by level, then kind, then name", () => {
  assert.equal(
    graph.order.map((n) => n.name),
    ["alpha", "zeta", "side", "svc", "rel", "rel2", "host"],
  );
  assert.equal(
    graph.levels.map((l) => l.map((n) => n.name)),
    [["alpha", "zeta"], ["side", "svc"], ["rel", "rel2"], ["host"]],
  );
});

test("selecting nodes brings their dependencies, in build order", () => {
  assert.equal(
    selectWithDependencies(graph, ["rel"]).nodes.map((n) => n.name),
    ["zeta", "svc", "rel"],
  );
  assert.equal(
    selectWithDependencies(graph, ["host", "side"]).nodes.map((n) => n.name),
    ["alpha", "zeta", "side", "svc", "rel", "host"],
  );
  assert.equal(selectWithDependencies(graph, ["nope"]).unknown, ["nope"]);
});

test("findCycle names the cycle", () => {
  assert.equal(
    findCycle([
      { name: "a", deps: ["b"] },
      { name: "b", deps: ["c"] },
      { name: "c", deps: ["a"] },
    ]),
    ["a", "b", "c"],
  );
  assert.is(
    findCycle([
      { name: "a", deps: ["b"] },
      { name: "b", deps: [] },
    ]),
    undefined,
  );
});

test("nothing built: everything builds, with its reason", () => {
  const plan = assemblePlan(graph.order, localKeys, state([]), "local");
  assert.equal(
    plan.map((e) => [e.name, e.status, e.reason]),
    [
      ["alpha", "build", "never built"],
      ["zeta", "build", "never built"],
      ["side", "build", "never built; alpha will build first"],
      ["svc", "build", "never built; zeta will build first"],
      ["rel", "build", "never built; svc will build first"],
      ["rel2", "build", "never built; svc will build first"],
      ["host", "build", "never built; zeta, rel will build first"],
    ],
  );
});

test("everything present: everything cached, naming the image", () => {
  const plan = assemblePlan(
    graph.order,
    localKeys,
    state(graph.order.map((n) => record(n.name, key(n.name)))),
    "local",
  );
  assert.ok(
    plan.every((e) => e.status === "cached"),
    planJson(plan),
  );
  assert.is(plan.find((e) => e.name === "svc")!.reason, `image p/svc:${key("svc").slice(0, 12)} has this key`);
  assert.is(plan.find((e) => e.name === "svc")!.existing, "sha256:svc1");
});

test("a changed input is named against the newest earlier build", () => {
  const old = { kind: "image", self: "svc", dockerfile: "d1", context: "c1", parent: key("zeta") };
  const now = { ...old, context: "c2" };
  const keys = new Map(localKeys);
  keys.set("svc", { key: keyOf(now), inputs: now });
  const images = [
    ...graph.order.filter((n) => n.name !== "svc").map((n) => record(n.name, key(n.name))),
    record("svc", "0".repeat(64), 1, { ...old, dockerfile: "d0" }),
    record("svc", "a".repeat(64), 2, old),
  ];
  const plan = assemblePlan(graph.order, keys, state(images), "local");
  assert.equal(plan.find((e) => e.name === "svc")!.reason, "build context changed since aaaaaaaaaaaa");
  assert.is(plan.find((e) => e.name === "svc")!.status, "build");
});

test("the image a rebuild is compared with: the one `latest` names, else the newest, ties broken by id in any order", () => {
  const r = (id: string, created: number, tags: string[] = []): BakeImageRecord => ({
    id,
    tags,
    node: "svc",
    key: id.repeat(64).slice(0, 64),
    created,
  });
  const tied = [r("a", 5), r("c", 5), r("b", 5)];
  assert.is(previousImage(tied)!.id, "c");
  assert.is(previousImage([...tied].reverse())!.id, "c");
  assert.is(previousImage([r("a", 9), r("b", 1, ["p/svc:latest"]), r("c", 5)])!.id, "b");
  assert.is(previousImage([]), undefined);
});

test("engine unreachable: the graph and keys are still shown, every status unknown with why", () => {
  const plan = assemblePlan(
    graph.order,
    localKeys,
    { images: { ok: false, reason: "docker engine unreachable at unix:///x.sock (ENOENT)" }, amis: new Map() },
    "local",
  );
  assert.ok(plan.every((e) => e.status === "unknown" && e.key && /unreachable/.test(e.reason)));
});

test("aws target: an AMI without a known source has an unknown key and says why", () => {
  const keys = computeKeys(graph, own, "aws", {
    sourceAmi: new Map(),
    unresolved: new Map([["host", "no AWS credentials"]]),
  });
  const plan = assemblePlan(graph.order, keys, state([]), "aws");
  const host = plan.find((e) => e.name === "host")!;
  assert.equal([host.key, host.status, host.reason], [null, "unknown", "key unknown: no AWS credentials"]);
});

test("aws target: an AMI carrying the key is cached", () => {
  const keys = computeKeys(graph, own, "aws", { sourceAmi: new Map([["host", "ami-1"]]), unresolved: new Map() });
  const amis = new Map([
    ["host", { ok: true as const, value: { imageId: "ami-0abc", name: "p-host", created: "", tags: {} } }],
  ]);
  const plan = assemblePlan(graph.order, keys, { images: { ok: true, value: [] }, amis }, "aws");
  assert.equal(plan.find((e) => e.name === "host")!.status, "cached");
  assert.match(plan.find((e) => e.name === "host")!.reason, /ami-0abc in us-east-1/);
});

test("aws target: a rebuild names what changed since the AMI bake-manifest.json records; another target's record says nothing", () => {
  const sources = { sourceAmi: new Map([["host", "ami-1"]]), unresolved: new Map() };
  const keys = computeKeys(graph, own, "aws", sources);
  const images = graph.order.filter((n) => n.kind === "image").map((n) => record(n.name, key(n.name)));
  const now = keys.get("host")!.inputs;
  const before = { ...now, "ansible:group_vars/all.yml": "old", "ansible:gone.yml": "x" };
  const plan = (target: string) =>
    assemblePlan(
      graph.order,
      keys,
      {
        images: { ok: true, value: images },
        amis: new Map([["host", { ok: true as const, value: undefined }]]),
        lastBaked: new Map([["host", { key: "f".repeat(64), target, inputs: before }]]),
      },
      "aws",
    ).find((e) => e.name === "host")!;
  assert.equal(
    [plan("aws").status, plan("aws").reason],
    ["build", "playbook inputs gone.yml, group_vars/all.yml changed since ffffffffffff"],
  );
  assert.is(plan("local").reason, "no AMI in us-east-1 is tagged with this key");
});

test("plan --json has exactly the contract's fields", () => {
  const parsed = JSON.parse(planJson(assemblePlan(graph.order, localKeys, state([]), "local")));
  assert.equal(Object.keys(parsed), ["nodes"]);
  assert.equal(Object.keys(parsed.nodes[0]), ["name", "kind", "layer", "key", "status", "reason"]);
  assert.equal(parsed.nodes.at(-1).kind, "ami");
});

test("plan --matrix: only what builds, grouped by level so each level's jobs can need the one before", () => {
  const images = [record("alpha", key("alpha")), record("side", key("side"))];
  const plan = assemblePlan(graph.order, localKeys, state(images), "local");
  const matrix = planMatrix(
    plan,
    graph.levels.map((l) => l.map((n) => n.name)),
  );
  assert.equal(
    matrix.include.map((m) => [m.node, m.level]),
    [
      ["zeta", 0],
      ["svc", 1],
      ["rel", 2],
      ["rel2", 2],
      ["host", 3],
    ],
  );
  assert.equal(
    matrix.levels.map((l) => l.include.map((m) => m.node)),
    [["zeta"], ["svc"], ["rel", "rel2"], ["host"]],
  );
  assert.is(matrix.include[0].key, key("zeta"));
});

test("changedInputs", () => {
  assert.equal(changedInputs({ a: "1", b: "2" }, { a: "1", b: "3", c: "4" }), ["b", "c"]);
  assert.is(changedInputs(undefined, { a: "1" }), undefined);
});

test("stages: the host stage's key leaves out the services and the test; the release stage's key is the AMI's", () => {
  const ami = config.amis[0];
  const keysWith = (changed: Record<string, Record<string, string>>) =>
    computeKeys(graph, new Map([...own].map(([n, o]) => [n, changed[n] ?? o])), "local", {
      sourceAmi: new Map(),
      unresolved: new Map(),
    });
  const [host, release] = stagesOn(ami, "local", localKeys.get("host"))!;
  assert.equal([host.name, host.node, host.images, host.services], ["host", "host@host", ["zeta"], []]);
  assert.equal(
    [release.name, release.key, release.images, release.services],
    ["release", key("host"), ["rel"], ["rel"]],
  );
  assert.is(stageTag(host), `host-${host.key.slice(0, 12)}`);
  // A release changes: the AMI's key moves, its host stage's does not.
  const released = keysWith({ rel: { kind: "image", self: "rel", dockerfile: "changed" } });
  const [host2, release2] = stagesOn(ami, "local", released.get("host"))!;
  assert.is.not(release2.key, release.key);
  assert.is(host2.key, host.key);
  // A base image it preloads changes: both move.
  const based = keysWith({ zeta: { kind: "image", self: "zeta", rootfs: "changed" } });
  const [host3, release3] = stagesOn(ami, "local", based.get("host"))!;
  assert.is.not(host3.key, host.key);
  assert.is.not(release3.key, release.key);
  // Every target chains the stages; an AMI that runs no service bakes in one run.
  assert.equal(
    stagesOn(ami, "aws", localKeys.get("host"))!.map((s) => [s.name, s.node, s.key]),
    [
      ["host", "host@host", host.key],
      ["release", "host", release.key],
    ],
  );
  assert.is(stagesOn({ ...ami, services: [] }, "local", localKeys.get("host")), undefined);
});

test("plan of a staged VM AMI: the host stage's disk reused, or the input that moved it since the last bake named", () => {
  const vmKeys = computeKeys(graph, own, "vm", { sourceAmi: new Map(), unresolved: new Map() });
  const [host] = stagesOn(config.amis[0], "vm", vmKeys.get("host"))!;
  const images = graph.order.filter((n) => n.kind === "image").map((n) => record(n.name, key(n.name)));
  const vmState = (disks: [string, string][], lastBaked?: WorldState["lastBaked"]): WorldState => ({
    ...state(images),
    vmDisks: new Map(disks),
    lastBaked,
  });
  const stageDisk = `.bake/vm/host@host-${host.key.slice(0, 12)}/disk.qcow2`;
  const reused = assemblePlan(graph.order, vmKeys, vmState([[host.node, stageDisk]]), "vm").find(
    (e) => e.name === "host",
  )!;
  assert.equal(
    reused.stages!.map((s) => [s.name, s.key, s.status, s.reason]),
    [
      ["host", host.key, "cached", `${stageDisk} has this key: reused`],
      ["release", vmKeys.get("host")!.key, "build", "no VM disk under .bake/vm has this key"],
    ],
  );
  // The last bake stood on another host stage: the input that moved it is named.
  const before = computeKeys(
    graph,
    new Map<string, Record<string, string>>([...own, ["host", { ...own.get("host")!, "ansible:p.yml": "before" }]]),
    "vm",
    { sourceAmi: new Map(), unresolved: new Map() },
  ).get("host")!;
  const moved = assemblePlan(
    graph.order,
    vmKeys,
    vmState([], new Map([["host", { key: before.key!, target: "vm", inputs: before.inputs }]])),
    "vm",
  ).find((e) => e.name === "host")!;
  assert.equal(moved.stages![0].status, "build");
  const beforeHost = amiStages(config.amis[0], { key: before.key!, inputs: before.inputs })[0];
  assert.match(moved.stages![0].reason, new RegExp(`changed since ${beforeHost.key.slice(0, 12)}$`));
  assert.match(moved.stages![0].reason, /p\.yml/);
  // The AMI's disk is there: its stages are too.
  const done = assemblePlan(graph.order, vmKeys, vmState([["host", ".bake/vm/host-x/disk.qcow2"]]), "vm");
  assert.ok(done.find((e) => e.name === "host")!.stages!.every((s) => s.status === "cached"));
});

test("plan of a staged AMI: each stage with its status and reason, the host stage reused when only a release moved", () => {
  const [host] = stagesOn(config.amis[0], "local", localKeys.get("host"))!;
  const images = graph.order.filter((n) => n.kind === "image").map((n) => record(n.name, key(n.name)));
  const plan = assemblePlan(graph.order, localKeys, state([...images, record("host@host", host.key)]), "local");
  const ami = plan.find((e) => e.name === "host")!;
  assert.equal(
    ami.stages!.map((s) => [s.name, s.status, s.reason]),
    [
      ["host", "cached", `image p/host@host:${host.key.slice(0, 12)} has this key: reused`],
      ["release", "build", ami.reason],
    ],
  );
  assert.is(ami.status, "build");
  const table = planTable(plan, "local").split("\n");
  const at = table.findIndex((l) => /\bhost\s+ami\s/.test(l));
  assert.match(table[at + 1], new RegExp(`├ host\\s+stage\\s+ami\\s+${host.key.slice(0, 12)}\\s+cached`));
  assert.match(table[at + 2], new RegExp(`└ release\\s+stage\\s+ami\\s+${key("host").slice(0, 12)}\\s+build`));
  assert.equal(JSON.parse(planJson(plan)).nodes.find((n: { name: string }) => n.name === "host").stages, ami.stages);
  // Nothing of the host stage on the engine: it bakes, and says why.
  const fresh = assemblePlan(graph.order, localKeys, state(images), "local").find((e) => e.name === "host")!;
  assert.equal(fresh.stages![0].status, "build");
  assert.is(fresh.stages![0].reason, "never built");
  // The AMI itself is there: its stages are too.
  const done = assemblePlan(graph.order, localKeys, state([...images, record("host", key("host"))]), "local");
  assert.ok(done.find((e) => e.name === "host")!.stages!.every((s) => s.status === "cached"));
});

test("prune keeps a stage that the current bake or a kept AMI image was built on, and only those", () => {
  const ami = config.amis[0];
  const amiKey = localKeys.get("host")! as { key: string; inputs: Record<string, string> };
  const [host] = amiStages(ami, amiKey);
  const stage = (k: string, created: number) => ({ ...record("host@host", k, created), id: `sha256:stage-${k}` });
  const keptOn = new Map([[host.key, "aaaaaaaaaaaa"]]);
  const decisions = planStageRetention(
    "host@host",
    [stage(host.key, 3), stage("b".repeat(64), 2), stage("c".repeat(64), 1)],
    keptOn,
    "c".repeat(64),
  );
  assert.equal(
    decisions.map((d) => [d.key.slice(0, 1), d.action, d.reason]),
    [
      [host.key.slice(0, 1), "keep", "the kept AMI image aaaaaaaaaaaa was built on it"],
      ["b", "remove", "no AMI image kept was built on it"],
      ["c", "keep", "carries the current key"],
    ],
  );
  assert.is(stageNode("host", "host"), "host@host");
});

test.run();
