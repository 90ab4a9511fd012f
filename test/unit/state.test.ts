/** Pure parts of running beside other bakes: the AWS lease's steps, retention per key, leftovers, retry settings. */
import { test } from "uvu";
import * as assert from "uvu/assert";
import { existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { LockLostError, withLock } from "../../src/files/process-lock.js";
import path from "node:path";
import { leaseRecords, nextLeaseStep, leaseTtlMs, LEASE_TAG } from "../../src/ami/lease.js";
import { keysMarkedKeep, planAmiRetention, planLeftovers } from "../../src/prune/plan.js";
import { bootOwnerRunning } from "../../src/host/boot-test.js";
import { parentTagOwnerRunning, parentTagRepository } from "../../src/state/parent-tags.js";
import { hostname } from "node:os";
import { awsRetry, bakedName, copyToken } from "../../src/tools/ec2.js";
import { readJsonFile } from "../../src/files/json-file.js";
import { ConfigError } from "../../src/errors.js";
import { tempTree } from "../helpers/bake.js";

const prefix = "bake-lease-p-host-0123456789ab-g";
const pair = (g: number | string, expires: string, holder = "ci-1 pid 7") => ({
  name: `${prefix}${g}`,
  tags: { [LEASE_TAG.expires]: expires, [LEASE_TAG.holder]: holder },
});

test("lease records: generations parsed and ordered newest first; other names ignored", () => {
  const records = leaseRecords(prefix, [
    pair(1, "2026-12-04T10:00:00Z"),
    pair(3, "2026-12-04T10:05:00Z", "ci-2 pid 9"),
    pair("x", "2026-12-04T10:00:00Z"),
  ]);
  assert.equal(
    records.map((r) => [r.generation, r.holder]),
    [
      [3, "ci-2 pid 9"],
      [1, "ci-1 pid 7"],
    ],
  );
});

test("next lease step: none → generation 1; held → wait naming the holder; expired → the next generation", () => {
  const now = Date.parse("2026-12-04T10:01:00Z");
  assert.equal(nextLeaseStep([], now), { action: "create", generation: 1 });
  const held = leaseRecords(prefix, [pair(2, "2026-12-04T10:02:00Z")]);
  assert.equal(nextLeaseStep(held, now), {
    action: "wait",
    holder: "ci-1 pid 7",
    expires: Date.parse("2026-12-04T10:02:00Z"),
  });
  const expired = leaseRecords(prefix, [pair(2, "2026-12-04T10:00:30Z")]);
  assert.equal(nextLeaseStep(expired, now), { action: "create", generation: 3 });
  // A lease without a readable expiry (tags not applied yet, or edited) counts as expired.
  assert.equal(nextLeaseStep(leaseRecords(prefix, [{ name: `${prefix}1`, tags: {} }]), now), {
    action: "create",
    generation: 2,
  });
});

test("lease TTL: 10 minutes unless BAKE_AWS_LEASE_TTL gives seconds", () => {
  assert.is(leaseTtlMs({}), 600_000);
  assert.is(leaseTtlMs({ BAKE_AWS_LEASE_TTL: "30" }), 30_000);
  assert.is(leaseTtlMs({ BAKE_AWS_LEASE_TTL: "soon" }), 600_000);
});

test("retention: bake:keep on one region's copy keeps every copy of that key; in-use names its user", () => {
  const ami = (id: string, region: string, key: string, created: string, tags: Record<string, string> = {}) => ({
    imageId: id,
    name: id,
    created,
    region,
    snapshots: [],
    tags: { "bake:key": key, ...tags },
  });
  const east = [
    ami("ami-3", "us-east-1", "k3", "2026-03"),
    ami("ami-2", "us-east-1", "k2", "2026-02"),
    ami("ami-1", "us-east-1", "k1", "2026-01"),
  ];
  const west = [ami("ami-w1", "eu-west-1", "k1", "2026-01", { "bake:keep": "audit" })];
  const kept = keysMarkedKeep([...east, ...west]);
  assert.equal([...kept], [["k1", "ami-w1 in eu-west-1"]]);
  const decisions = planAmiRetention(
    "host",
    "us-east-1",
    east,
    1,
    new Map([["ami-2", "launch configuration lc-1"]]),
    undefined,
    kept,
  );
  assert.equal(
    decisions.map((d) => [d.id, d.action, d.reason]),
    [
      ["ami-3", "keep", "one of the newest 1"],
      ["ami-2", "keep", "used by launch configuration lc-1"],
      ["ami-1", "keep", "a copy of its key is tagged bake:keep (ami-w1 in eu-west-1)"],
    ],
  );
});

test("names bake gives: the key prefix read back; other AMIs' names are not bake's", () => {
  assert.is(bakedName("arcade", "host", "arcade-host-0123456789ab"), "0123456789ab");
  assert.is(bakedName("arcade", "host", "arcade-host-0123456789ab-1796366638"), "0123456789ab");
  assert.is(bakedName("arcade", "host", "arcade-host-edge-0123456789ab"), undefined, "another AMI, host-edge");
  assert.is(bakedName("arcade", "host", "arcade-host-manual"), undefined);
  const untagged = {
    imageId: "ami-c",
    name: "arcade-host-0123456789ab",
    created: "2026-01",
    region: "eu-west-1",
    snapshots: [],
    tags: {},
    keyInName: "0123456789ab",
  };
  const newer = [1, 2].map((i) => ({
    imageId: `ami-${i}`,
    name: "x",
    created: `2026-0${i + 1}`,
    region: "eu-west-1",
    snapshots: [],
    tags: { "bake:key": `k${i}` },
  }));
  const d = planAmiRetention("host", "eu-west-1", [untagged, ...newer], 1, new Map(), "0123456789ab".padEnd(64, "f"));
  assert.equal(d.find((x) => x.id === "ami-c")!.reason, "carries the current key");
});

test("leftovers: dead builds' parent tags, idle AMI folders and logs past the newest 10 go; what runs stays", () => {
  const logRuns = Array.from({ length: 12 }, (_, i) => `20261204-0000${String(i).padStart(2, "0")}-abcd`);
  const d = planLeftovers({
    parentTags: [
      { ref: "bake-parent/h/11:aa", ownerRunning: false },
      { ref: "bake-parent/h/12:bb", ownerRunning: true },
      { ref: "bake-parent/other/13:cc", ownerRunning: undefined },
    ],
    amiFolders: [
      { path: "/p/.bake/ami/host-local-1", bytes: 3 << 20, inUse: false },
      { path: "/p/.bake/ami/host-local-2", bytes: 0, inUse: true },
    ],
    logRuns,
  });
  assert.equal(
    d.map((x) => [x.name, x.id, x.action]),
    [
      ["parent tag", "bake-parent/h/11:aa", "remove"],
      ["parent tag", "bake-parent/h/12:bb", "keep"],
      ["parent tag", "bake-parent/other/13:cc", "keep"],
      ["ami folder", "/p/.bake/ami/host-local-1", "remove"],
      ["ami folder", "/p/.bake/ami/host-local-2", "keep"],
      ["logs", logRuns[1], "remove"],
      ["logs", logRuns[0], "remove"],
    ],
  );
  assert.match(d[3].reason, /\(3 MiB\)/);
  assert.match(d[2].reason, /another machine/);
});

test("leftovers that hold secrets: a boot test whose owner is gone and a VM boot copy no bake holds go; a running one, or another machine's, stays", () => {
  const d = planLeftovers({
    parentTags: [],
    amiFolders: [],
    logRuns: [],
    bootTests: [
      { namespace: "bake-boot-aaaaaa", containers: 2, ownerRunning: false },
      { namespace: "bake-boot-bbbbbb", containers: 1, ownerRunning: true },
      { namespace: "bake-boot-cccccc", containers: 1, ownerRunning: undefined },
    ],
    bootCopies: [
      { path: "/p/.bake/vm/host-0123456789ab/boot-1", inUse: false },
      { path: "/p/.bake/vm/host-0123456789ab/boot-2", inUse: true },
    ],
  });
  assert.equal(
    d.map((x) => [x.name, x.id, x.action]),
    [
      ["boot test", "bake-boot-aaaaaa", "remove"],
      ["boot test", "bake-boot-bbbbbb", "keep"],
      ["boot test", "bake-boot-cccccc", "keep"],
      ["boot copy", "/p/.bake/vm/host-0123456789ab/boot-1", "remove"],
      ["boot copy", "/p/.bake/vm/host-0123456789ab/boot-2", "keep"],
    ],
  );
  assert.match(d[0].reason, /2 containers, holding secrets/);
  assert.match(d[2].reason, /another machine/);
});

test("parent tags carry the host: only this machine's tags of a dead pid are provably left over", () => {
  assert.is(parentTagRepository("CI-Runner_7.example", 42), "bake-parent/ci-runner-7.example/42");
  assert.is(parentTagOwnerRunning(`${parentTagRepository(hostname(), process.pid)}:abc`), true);
  assert.is(parentTagOwnerRunning(`${parentTagRepository(hostname(), 999999999)}:abc`), false);
  assert.is(parentTagOwnerRunning(`${parentTagRepository("another-container", 999999999)}:abc`), undefined);
  assert.is(
    parentTagOwnerRunning("bake-parent/999999999:abc"),
    undefined,
    "a tag without a host (an older bake) cannot be proven dead",
  );
});

test("a lock taken over by another process: the holder's signal aborts with why, and its release leaves the new holder's lock alone", async () => {
  const dir = mkdtempSync(path.join(tmpdir(), "bake-lock-"));
  const lock = path.join(dir, "ami-p-host-vm-0123456789ab");
  let reason: unknown;
  const stderr = process.stderr.write;
  process.stderr.write = (() => true) as any;
  try {
    await withLock(lock, async (lost) => {
      // What another bake does once this one looks stale: the lock folder made anew.
      rmSync(`${lock}.lock`, { recursive: true, force: true });
      mkdirSync(`${lock}.lock`);
      const started = Date.now();
      while (!lost.aborted && Date.now() - started < 8000) await new Promise((r) => setTimeout(r, 100));
      reason = lost.reason;
    });
  } finally {
    process.stderr.write = stderr;
  }
  assert.ok(reason instanceof LockLostError, String(reason));
  assert.match(
    (reason as Error).message,
    /lost the lock ami-p-host-vm-0123456789ab to another bake .*stopped before touching what it guards/,
  );
  assert.ok(existsSync(`${lock}.lock`), "the new holder's lock stays");
  rmSync(dir, { recursive: true, force: true });
});

test("a boot test's owner label: this machine's running pid, a dead one, another machine's, none", () => {
  assert.is(bootOwnerRunning(`${hostname()}:${process.pid}`), true);
  assert.is(bootOwnerRunning(`${hostname()}:999999999`), false);
  assert.is(bootOwnerRunning(`elsewhere-ci-7:${process.pid}`), undefined);
  assert.is(bootOwnerRunning(undefined), false);
});

test("EC2 retry: adaptive with 10 attempts unless BAKE_AWS_MAX_ATTEMPTS; copy tokens are stable and at most 64 characters", () => {
  assert.equal(awsRetry({}), { retryMode: "adaptive", maxAttempts: 10 });
  assert.equal(awsRetry({ BAKE_AWS_MAX_ATTEMPTS: "3" }), { retryMode: "adaptive", maxAttempts: 3 });
  assert.equal(awsRetry({ BAKE_AWS_MAX_ATTEMPTS: "0" }), { retryMode: "adaptive", maxAttempts: 10 });
  const t = copyToken("ami-1", "eu-west-1", "p-host-0123456789ab");
  assert.is(t, copyToken("ami-1", "eu-west-1", "p-host-0123456789ab"));
  assert.is.not(t, copyToken("ami-1", "eu-central-1", "p-host-0123456789ab"));
  assert.ok(t.length <= 64);
});

test("state files: absent reads as undefined; not JSON is a ConfigError at its line and column", () => {
  const dir = tempTree({});
  assert.is(readJsonFile(path.join(dir, "missing.json"), "the manifest"), undefined);
  const file = path.join(dir, "bake-manifest.json");
  writeFileSync(file, '{\n  "images": {\n    "a": 1,\n  }\n}\n');
  try {
    readJsonFile(file, "the manifest");
    assert.unreachable();
  } catch (e) {
    assert.instance(e, ConfigError);
    assert.equal([(e as ConfigError).line, (e as ConfigError).column], [4, 3]);
  }
  writeFileSync(file, "[]\n");
  assert.throws(() => readJsonFile(file, "the manifest"), /not a JSON object/);
});

test.run();
