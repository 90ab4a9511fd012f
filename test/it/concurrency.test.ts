/**
 * Two bakes at once: on one machine (one project, and a second checkout of it) every image key is
 * built once and `.bake/` stays whole; across machines the AWS lease (on moto) lets one bake of a
 * key run at a time and outlives no dead holder. Corrupt state files fail loudly.
 */
import { test } from "uvu";
import * as assert from "uvu/assert";
import { cpSync, readFileSync, writeFileSync } from "node:fs";
import path from "node:path";
import { execa } from "execa";
import { DescribeKeyPairsCommand } from "@aws-sdk/client-ec2";
import { bake, CLI, ROOT, tempTree, testEnv } from "../helpers/bake.js";
import { busyboxRootfs, docker, removeProject, uniqueProject } from "../helpers/engine.js";
import { motoEc2, motoEnv } from "../helpers/moto.js";
import { LEASE_TAG } from "../../src/ami/lease.js";

const project = uniqueProject("concurrency");
let dir = "";

test.before(async () => {
  dir = tempTree({
    "bake.yml": `project: ${project}\nimages:\n  base: { rootfs: { tar: ${await busyboxRootfs()} } }\n  svc: { parent: base, dockerfile: svc/Dockerfile }\n  rel: { parent: svc, dockerfile: rel/Dockerfile, run: { command: [sleep, "1"] } }\n`,
    "svc/Dockerfile": `ARG BAKE_PARENT\nFROM \${BAKE_PARENT}\nRUN sleep 2 && echo ${process.pid} > /svc\n`,
    "rel/Dockerfile": "ARG BAKE_PARENT\nFROM ${BAKE_PARENT}\nRUN echo rel > /rel\n",
  });
});

test.after(async () => {
  await removeProject(project);
});

const start = (cwd: string, args: string[]) =>
  execa(process.execPath, [CLI, ...args], { cwd, env: testEnv(), reject: false, timeout: 120_000 });

test("three bake builds at once (two in one checkout, one in a second checkout): all succeed, each key built once", async () => {
  const second = `${dir}-second-checkout`;
  cpSync(dir, second, { recursive: true });
  const runs = [start(dir, ["build", "--json"]), start(dir, ["build", "--json"]), start(second, ["build", "--json"])];
  const results = await Promise.all(runs);
  for (const r of results) assert.is(r.exitCode, 0, String(r.stderr));
  const images = results.map((r) => JSON.parse(String(r.stdout)).images);
  for (const node of ["base", "svc", "rel"]) {
    assert.is(new Set(images.map((i) => i[node].id)).size, 1, `${node}: one image id`);
    assert.is(
      images.filter((i) => i[node].action === "built").length,
      1,
      `${node} built once: ${images.map((i) => i[node].action)}`,
    );
  }
  // The processes that waited said for whom.
  const pids = runs.map((r) => r.pid);
  const waits = results
    .map((r) => /waiting for \S+: pid (\d+) on \S+ \(bake build --json\)/.exec(String(r.stderr))?.[1])
    .filter(Boolean);
  assert.ok(
    waits.length >= 1 && waits.every((p) => pids.includes(Number(p))),
    results.map((r) => r.stderr).join("\n---\n"),
  );
  const svcImages = await docker.listImages({
    filters: JSON.stringify({ label: [`bake.project=${project}`, "bake.node=svc"] }),
  });
  assert.is(svcImages.length, 1);
  for (const d of [dir, second]) {
    const manifest = JSON.parse(readFileSync(path.join(d, "bake-manifest.json"), "utf8"));
    assert.equal(Object.keys(manifest.images).sort(), ["base", "rel", "svc"]);
  }
});

test("a corrupt bake-manifest.json or bake.lock stops the command before any build: exit 2, file and line named", async () => {
  const manifest = path.join(dir, "bake-manifest.json");
  const good = readFileSync(manifest, "utf8");
  writeFileSync(path.join(dir, "svc/Dockerfile"), "ARG BAKE_PARENT\nFROM ${BAKE_PARENT}\nRUN echo changed > /svc\n");
  try {
    writeFileSync(manifest, good.slice(0, good.length / 2));
    const r = await bake(["build"], { cwd: dir });
    assert.is(r.code, 2, r.stderr);
    assert.match(r.stderr, new RegExp(`${manifest.replace(/[.]/g, "\\.")}:\\d+:\\d+: the manifest is not valid JSON`));
    assert.not.match(r.stderr, /built|\n\s+at /);
    writeFileSync(manifest, good);
    writeFileSync(path.join(dir, "bake.lock"), '{"debootstrap": {,}}\n');
    const lock = await bake(["build"], { cwd: dir });
    assert.is(lock.code, 2, lock.stderr);
    assert.match(lock.stderr, /bake\.lock:1:18: bake\.lock is not valid JSON/);
  } finally {
    writeFileSync(manifest, good);
    writeFileSync(path.join(dir, "bake.lock"), '{"debootstrap": {}}\n');
  }
  const svc = (
    await docker.listImages({ filters: JSON.stringify({ label: [`bake.project=${project}`, "bake.node=svc"] }) })
  ).length;
  assert.is(svc, 1, "nothing was built");
});

/**
 * A process that holds the AWS lease of one key on moto, printing when it starts, holds and
 * releases it. It releases after `holdMs`, or as soon as a line comes on its stdin.
 */
function leaseHolder(name: string, options: { ttl: number; holdMs: number }) {
  const script = `
    const { connectEc2 } = await import(${JSON.stringify(path.join(ROOT, "dist/src/tools/ec2.js"))});
    const { acquireLease } = await import(${JSON.stringify(path.join(ROOT, "dist/src/ami/lease.js"))});
    console.log("START " + Date.now());
    const lease = await acquireLease(connectEc2(), "us-east-1", ${JSON.stringify(`bake-lease-${project}-host-${name}-g`)}, { ttlMs: ${options.ttl}, pollMs: 200, onWait: (t) => console.log("WAIT " + t), onLost: (t) => console.log("LOST " + t) });
    console.log("HELD " + Date.now() + " " + lease.name);
    await new Promise((r) => { setTimeout(r, ${options.holdMs}); process.stdin.once("data", r); });
    await lease.release();
    console.log("RELEASED " + Date.now());
    process.exit(0); // not at the end of its hold: the hold's timer would keep it running
  `;
  return execa(process.execPath, ["--input-type=module", "-e", script], {
    env: testEnv(motoEnv),
    reject: false,
    timeout: 180_000,
  });
}
/** Resolves when the holder has printed `text`; fails if it ends first. */
function printed(holder: ReturnType<typeof leaseHolder>, text: string): Promise<void> {
  return new Promise((resolve, reject) => {
    let out = "";
    holder.stdout!.on("data", (d) => {
      out += String(d);
      if (out.includes(text)) resolve();
    });
    void holder.then((r) => reject(new Error(`the holder ended before it printed ${text}: ${r.stdout}${r.stderr}`)));
  });
}
const stamp = (out: string, what: string) => Number(new RegExp(`${what} (\\d+)`).exec(out)?.[1]);
const leasePairs = async (name: string) =>
  ((await motoEc2().send(new DescribeKeyPairsCommand({}))).KeyPairs ?? [])
    .filter((k) => k.KeyName!.startsWith(`bake-lease-${project}-host-${name}-`))
    .sort((a, b) => a.KeyName!.localeCompare(b.KeyName!));
const leaseNames = async (name: string) => (await leasePairs(name)).map((k) => k.KeyName!);

// No step below waits on a clock: each holder is told when to let go, or the test reads the
// lease's own expiry, so a busy machine slows these tests without failing them.
test("the AWS lease: a second holder waits, naming the first, and holds only after it released", async () => {
  const first = leaseHolder("k1", { ttl: 10_000, holdMs: 120_000 });
  await printed(first, "HELD");
  const second = leaseHolder("k1", { ttl: 10_000, holdMs: 100 });
  await printed(second, "WAIT");
  first.stdin!.write("release\n");
  const [a, b] = await Promise.all([first, second]);
  assert.is(a.exitCode, 0, String(a.stderr));
  assert.is(b.exitCode, 0, String(b.stderr));
  assert.match(
    String(b.stdout),
    new RegExp(`WAIT waiting for the AWS lease bake-lease-${project}-host-k1: held by \\S+ pid ${first.pid} until `),
  );
  assert.not.match(String(a.stdout), /LOST/, "the first holder renewed its lease while the second waited");
  assert.ok(stamp(String(b.stdout), "HELD") >= stamp(String(a.stdout), "RELEASED"), `${a.stdout}\n${b.stdout}`);
  assert.equal(await leaseNames("k1"), [], "released leases are gone");
});

test("the AWS lease: a holder that dies frees it when its TTL runs out; the next holder takes the next generation", async () => {
  const dying = leaseHolder("k2", { ttl: 2000, holdMs: 120_000 });
  await printed(dying, "HELD");
  dying.kill("SIGKILL");
  await dying;
  const pairs = await leasePairs("k2");
  assert.equal(
    pairs.map((k) => k.KeyName),
    [`bake-lease-${project}-host-k2-g1`],
  );
  const expires = Date.parse(pairs[0].Tags?.find((t) => t.Key === LEASE_TAG.expires)?.Value ?? "");
  assert.ok(expires > 0, "the lease carries its expiry");
  const next = leaseHolder("k2", { ttl: 2000, holdMs: 500 });
  let during: string[] = [];
  next.stdout!.on("data", async (d) => {
    if (String(d).includes("HELD")) during = await leaseNames("k2");
  });
  const r = await next;
  assert.is(r.exitCode, 0, String(r.stderr));
  const held = stamp(String(r.stdout), "HELD");
  assert.ok(held >= expires, `held at ${held}, before the dead holder's lease expired at ${expires}`);
  // Taken soon after the later of the expiry and the holder's start (it polls every 200 ms; the bound is loose for a busy machine).
  const late = held - Math.max(expires, stamp(String(r.stdout), "START"));
  assert.ok(late < 10_000, `held ${late} ms after the lease was free to take`);
  assert.match(String(r.stdout), /HELD \d+ bake-lease-\S+-k2-g2/);
  assert.equal(
    during,
    [`bake-lease-${project}-host-k2-g2`],
    "the dead holder's generation is removed by the one that took over",
  );
  assert.equal(await leaseNames("k2"), []);
});

test.run();
