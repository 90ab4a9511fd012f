/** `bake nightly`: quiet when upstream is unchanged, cascades when it moves, keeps going past failures. */
import { test } from "uvu";
import * as assert from "uvu/assert";
import { createServer, type Server } from "node:http";
import { existsSync, readdirSync, readFileSync } from "node:fs";
import path from "node:path";
import { execa } from "execa";
import { bake, tempTree } from "../helpers/bake.js";
import { busyboxImage, busyboxRootfs, docker, removeProject, uniqueProject } from "../helpers/engine.js";
import { motoEnv, registerAmi } from "../helpers/moto.js";

const project = uniqueProject("nightly-it");
const upstreamRepo = "127.0.0.1:5000/bake-test-upstream/nightly";
const upstream = `${upstreamRepo}:${process.pid}`;

test.after(async () => {
  for (const p of [project, `${project}-fail`, `${project}-deb`, `${project}-pkg`]) await removeProject(p);
});

const run = async (cwd: string, extra: string[] = []) => {
  const r = await bake(["nightly", "--target", "local", "--json", ...extra], { cwd });
  return { ...r, report: r.stdout ? JSON.parse(r.stdout) : undefined };
};

test("registry-backed from: base — quiet while the upstream tag stands, base and everything above rebuild when it moves", async () => {
  const busybox = await busyboxImage();
  await docker.getImage(busybox).tag({ repo: upstreamRepo, tag: String(process.pid) });
  await execa("docker", ["push", upstream]);
  const dir = tempTree({
    "bake.yml": `project: ${project}\nimages:\n  base: { from: "${upstream}" }\n  svc: { parent: base, dockerfile: svc/Dockerfile }\n  rel: { parent: svc, dockerfile: svc/Dockerfile, run: { command: [sleep, "1"] } }\n`,
    "svc/Dockerfile": "ARG BAKE_PARENT\nFROM ${BAKE_PARENT}\nRUN echo layer >> /layers\n",
  });
  const first = await run(dir);
  assert.is(first.code, 0, first.stderr);
  assert.equal(
    first.report.rebuilt.map((r: any) => [r.node, r.action]),
    [
      ["base", "built"],
      ["svc", "built"],
      ["rel", "built"],
    ],
  );

  const quiet = await run(dir);
  assert.is(quiet.code, 0, quiet.stderr);
  assert.equal(
    quiet.report.upstream.map((u: any) => [u.node, u.kind, u.changed]),
    [["base", "from", false]],
  );
  assert.equal(quiet.report.rebuilt, []);
  assert.match(quiet.stderr, /rebuilt: nothing/);

  // The tag moves upstream; this engine still holds the old image under it.
  const old = (await docker.getImage(upstream).inspect()).Id;
  await execa("docker", ["build", "-t", upstream, "-"], {
    input: `FROM ${upstream}\nRUN echo patched > /patched\n`,
    env: { DOCKER_BUILDKIT: "0" },
  });
  await execa("docker", ["push", upstream]);
  await docker.getImage(old).tag({ repo: upstreamRepo, tag: String(process.pid) });

  const moved = await run(dir);
  assert.is(moved.code, 0, moved.stderr);
  const base = moved.report.upstream.find((u: any) => u.node === "base");
  assert.ok(base.changed && base.before !== base.after, JSON.stringify(base));
  assert.equal(
    moved.report.rebuilt.map((r: any) => [r.node, r.action]),
    [
      ["base", "built"],
      ["svc", "built"],
      ["rel", "built"],
    ],
  );
  assert.match(moved.report.rebuilt[0].reason, /upstream image changed/);
  assert.ok(moved.report.seconds.build >= 0 && "prune" in moved.report.seconds);

  // The tag moves again and this engine already holds the new image under it (built here, as a
  // `docker pull` by anyone would leave it): the report still says what the base was built from.
  await execa("docker", ["build", "-t", upstream, "-"], {
    input: `FROM ${upstream}\nRUN echo again > /again\n`,
    env: { DOCKER_BUILDKIT: "0" },
  });
  await execa("docker", ["push", upstream]);
  const dry = await run(dir, ["--dry-run"]);
  assert.is(dry.code, 0, dry.stderr);
  const again = dry.report.upstream.find((u: any) => u.node === "base");
  assert.equal([again.changed, again.before], [true, base.after], JSON.stringify(again));
  assert.is.not(again.after, base.after);
  assert.match(dry.report.rebuilt.find((r: any) => r.node === "base").reason, /upstream image changed/);
});

test("an upstream image whose package database changed: the report names each package's version change", async () => {
  const repo = `${upstreamRepo}-dpkg`;
  const ref = `${repo}:${process.pid}`;
  const status = (openssl: string) =>
    `Package: openssl\nStatus: install ok installed\nArchitecture: amd64\nVersion: ${openssl}\n\nPackage: libssl3\nStatus: install ok installed\nArchitecture: amd64\nSource: openssl\nVersion: ${openssl}\n\n` +
    `Package: zlib1g\nStatus: install ok installed\nArchitecture: amd64\nSource: zlib\nVersion: 1:1.2.13.dfsg-1\n`;
  const publish = async (openssl: string) => {
    const ctx = tempTree({
      Dockerfile: `FROM ${await busyboxImage()}\nCOPY status /var/lib/dpkg/status\nCOPY os-release /etc/os-release\n`,
      status: status(openssl),
      "os-release": 'ID=debian\nVERSION_ID="12"\n',
    });
    await execa("docker", ["build", "-q", "-t", ref, ctx], { env: { DOCKER_BUILDKIT: "0" } });
    await execa("docker", ["push", ref]);
  };
  await publish("3.0.13-1~deb12u1");
  const dir = tempTree({
    "bake.yml": `project: ${project}-pkg\nimages:\n  base: { from: "${ref}" }\n  svc: { parent: base, dockerfile: svc/Dockerfile }\n`,
    "svc/Dockerfile": "ARG BAKE_PARENT\nFROM ${BAKE_PARENT}\nRUN echo layer >> /layers\n",
  });
  const first = await run(dir);
  assert.is(first.code, 0, first.stderr);
  assert.equal(
    first.report.rebuilt.map((r: any) => [r.node, r.action, r.packages]),
    [
      ["base", "built", undefined],
      ["svc", "built", undefined],
    ],
    "nothing was replaced: no diff",
  );
  const before = JSON.parse(readFileSync(path.join(dir, "bake-manifest.json"), "utf8")).images;

  await publish("3.0.15-1~deb12u1");
  const moved = await run(dir);
  assert.is(moved.code, 0, moved.stderr);
  const expected = [
    { name: "libssl3", type: "deb", before: "3.0.13-1~deb12u1", after: "3.0.15-1~deb12u1" },
    { name: "openssl", type: "deb", before: "3.0.13-1~deb12u1", after: "3.0.15-1~deb12u1" },
  ];
  for (const node of ["base", "svc"]) {
    const r = moved.report.rebuilt.find((x: any) => x.node === node);
    assert.equal(
      [r.action, r.packages.changed, r.packages.added, r.packages.removed],
      ["built", expected, [], []],
      JSON.stringify(r),
    );
    assert.is(r.packages.since, before[node].id, "compared with the image it replaces");
  }
  assert.match(
    moved.stderr,
    /base +built .*\n +packages: libssl3 3\.0\.13-1~deb12u1 → 3\.0\.15-1~deb12u1, openssl 3\.0\.13-1~deb12u1 → 3\.0\.15-1~deb12u1\n/,
  );
});

test("a failing node does not stop independent ones; the exit code says it failed", async () => {
  const dir = tempTree({
    "bake.yml": `project: ${project}-fail\nimages:\n  base: { rootfs: { tar: ${await busyboxRootfs()} } }\n  good: { parent: base, dockerfile: good/Dockerfile }\n  bad: { parent: base, dockerfile: bad/Dockerfile }\n  above-bad: { parent: bad, dockerfile: good/Dockerfile }\n`,
    "good/Dockerfile": "ARG BAKE_PARENT\nFROM ${BAKE_PARENT}\nRUN echo good > /good\n",
    "bad/Dockerfile": "ARG BAKE_PARENT\nFROM ${BAKE_PARENT}\nRUN echo broken && exit 4\n",
  });
  const r = await run(dir);
  assert.is(r.code, 1, r.stderr);
  const actions = Object.fromEntries(r.report.rebuilt.map((x: any) => [x.node, x.action]));
  assert.equal(actions, { base: "built", good: "built", bad: "failed", "above-bad": "failed" });
  assert.equal(
    r.report.failed.map((f: any) => f.node),
    ["bad"],
  );
  assert.match(
    r.report.failed[0].error,
    /bad: build failed at step 2\/2: RUN echo broken && exit 4: executor failed running/,
  );
  assert.equal(r.report.skipped, ["above-bad"]);
  assert.match(r.stderr, /FAILED bad: /);
  // Progress as it goes: each phase, its time and the run's so far.
  assert.match(r.stderr, /^nightly: build\n[\s\S]*^nightly: build ended after \d+\.\d s \(\d+ s in all\)$/m);
  // The run's record and report, beside the build's logs: the failure with its log, what built,
  // the upstreams checked and the phases.
  const page = /^report: (.+\/report\.html)$/m.exec(r.stderr)?.[1];
  assert.ok(page && existsSync(page), r.stderr.slice(-2000));
  const record = JSON.parse(readFileSync(path.join(path.dirname(page), "run.json"), "utf8"));
  assert.is(record.command, "nightly");
  assert.is(record.exit, 1);
  assert.equal(Object.fromEntries(record.nodes.map((n: any) => [n.name, n.outcome])), {
    base: "built",
    good: "built",
    bad: "failed",
    "above-bad": "not reached",
  });
  const bad = record.nodes.find((n: any) => n.name === "bad");
  assert.ok(
    bad.log && existsSync(path.join(path.dirname(page), bad.log)),
    "the failed node's log is beside the report",
  );
  assert.equal(
    record.nightly.upstream.map((u: any) => [u.node, u.kind]),
    [["base", "tar"]],
  );
  assert.equal(Object.keys(record.nightly.phases), ["refresh", "build", "bake", "prune"]);
  const html = readFileSync(page, "utf8");
  assert.match(html, /<h2>Upstream<\/h2>/);
  assert.match(html, /id="failure-bad"/);
});

test("debootstrap base: the suite's release index is checked (dry run: reported, nothing written)", async () => {
  let body = "Origin: Debian\nSuite: stable\nDate: 1\n";
  const server: Server = createServer((req, res) => {
    if (req.url === "/debian/dists/bookworm/InRelease") res.end(body);
    else res.writeHead(404).end();
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const port = (server.address() as { port: number }).port;
  try {
    const dir = tempTree({
      "bake.yml": `project: ${project}-deb\nimages:\n  base:\n    rootfs:\n      debootstrap: { suite: bookworm, variant: minbase, mirror: "http://127.0.0.1:${port}/debian" }\n  app: { parent: base, dockerfile: app/Dockerfile }\n`,
      "app/Dockerfile": "ARG BAKE_PARENT\nFROM ${BAKE_PARENT}\n",
    });
    const r = await run(dir, ["--dry-run"]);
    assert.is(r.code, 0, r.stderr);
    const base = r.report.upstream.find((u: any) => u.node === "base");
    assert.equal([base.kind, base.changed, base.note], ["debootstrap", true, "first pin"]);
    assert.match(base.after, /^sha256:[0-9a-f]{64}$/);
    assert.equal(
      r.report.rebuilt.map((x: any) => x.node),
      ["base", "app"],
    );
    assert.not.ok(existsSync(path.join(dir, "bake.lock")), "a dry run writes no pin");
    body += "Date: 2\n";
    const again = await run(dir, ["--dry-run"]);
    assert.is.not(again.report.upstream[0].after, base.after, "a new release index is a new digest");
  } finally {
    server.close();
  }
});

test("a mirror with credentials: they reach the mirror (bake's request, debootstrap's wget) and no argument, pin, report, log or message", async () => {
  const password = `pw-${process.pid}-Xq,7`;
  const user = "bakeuser";
  const expected = `Basic ${Buffer.from(`${user}:${password}`).toString("base64")}`;
  const seen: { url: string; agent: string; authorized: boolean }[] = [];
  const server = createServer((req, res) => {
    const authorized = req.headers.authorization === expected;
    seen.push({ url: req.url!, agent: String(req.headers["user-agent"] ?? ""), authorized });
    // As a private mirror does: a challenge first (wget sends .netrc credentials only then).
    if (!authorized) return void res.writeHead(401, { "WWW-Authenticate": 'Basic realm="mirror"' }).end();
    if (req.url === "/debian/dists/bookworm/InRelease") res.end("Origin: Debian\nSuite: bookworm\n");
    else res.writeHead(404).end();
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const port = (server.address() as { port: number }).port;
  try {
    const dir = tempTree({
      "bake.yml": `project: ${project}-cred\nimages:\n  base:\n    rootfs:\n      debootstrap: { suite: bookworm, variant: minbase, mirror: "http://${user}:${encodeURIComponent(password)}@127.0.0.1:${port}/debian" }\n`,
    });
    const r = await run(dir);
    // The release index is no real one: debootstrap fails after fetching it, and the run says so.
    assert.is(r.code, 1, r.stderr);
    assert.equal(
      r.report.failed.map((f: any) => f.node),
      ["base"],
    );
    assert.ok(
      seen.some((s) => s.authorized && !/wget/i.test(s.agent)),
      `bake's own request: ${JSON.stringify(seen)}`,
    );
    assert.ok(
      seen.some((s) => s.authorized && /wget/i.test(s.agent)),
      `debootstrap's wget: ${JSON.stringify(seen)}`,
    );
    const lock = readFileSync(path.join(dir, "bake.lock"), "utf8");
    assert.match(lock, new RegExp(`"url": "http://127\\.0\\.0\\.1:${port}/debian/dists/bookworm/InRelease"`));
    const logs = readdirSync(path.join(dir, ".bake/logs"), { recursive: true, withFileTypes: true })
      .filter((e) => e.isFile())
      .map((e) => readFileSync(path.join(e.parentPath ?? (e as any).path, e.name), "utf8"));
    for (const [where, text] of [
      ["stdout", r.stdout],
      ["stderr", r.stderr],
      ["bake.lock", lock],
      ...logs.map((l, i) => [`log ${i}`, l]),
    ]) {
      assert.not.ok(text.includes(password) || text.includes(encodeURIComponent(password)), `the password in ${where}`);
      assert.not.ok(text.includes(`${user}:`), `the user info in ${where}`);
    }
  } finally {
    server.close();
    await removeProject(`${project}-cred`);
  }
});

test("the bake phase: on the aws target an AMI that already carries the key is reported, not baked again", async () => {
  const dir = tempTree({
    "bake.yml": `project: ${project}-ami\nimages:\n  base: { rootfs: { tar: ${await busyboxRootfs()} } }\namis:\n  host:\n    builder: ebs\n    region: us-east-1\n    source: { owners: [self], name: "nightly-src-${process.pid}-*" }\n    instance_type: t3.small\n    playbook: host.yml\n    preload: [base]\n`,
    "host.yml": "- hosts: all\n  tasks: []\n",
  });
  await registerAmi(`nightly-src-${process.pid}-1`);
  const plan = JSON.parse((await bake(["plan", "--json"], { cwd: dir, env: motoEnv })).stdout).nodes;
  const key = plan.find((n: any) => n.name === "host").key;
  const existing = await registerAmi(`nightly-host-${process.pid}`, {
    "bake:key": key,
    "bake:project": `${project}-ami`,
    "bake:ami": "host",
  });
  const r = await bake(["nightly", "--json"], { cwd: dir, env: motoEnv });
  assert.is(r.code, 0, r.stderr);
  const report = JSON.parse(r.stdout);
  assert.equal(report.amis, { host: { "us-east-1": existing } });
  assert.equal(report.failed, []);
  await removeProject(`${project}-ami`);
});

test.run();
