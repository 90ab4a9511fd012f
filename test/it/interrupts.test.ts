/**
 * Interrupts stop destructive work: SIGINT, SIGTERM (what CI sends on cancel) and SIGHUP in each
 * phase of `bake nightly` end the run with exit 130, and no prune starts after one.
 */
import { test } from "uvu";
import * as assert from "uvu/assert";
import { writeFileSync } from "node:fs";
import path from "node:path";
import { execa } from "execa";
import { bake, CLI, tempTree, testEnv } from "../helpers/bake.js";
import { busyboxRootfs, docker, removeProject, uniqueProject } from "../helpers/engine.js";
import { faultyEndpoint, motoEnv, registerAmi } from "../helpers/moto.js";

const project = uniqueProject("interrupts");
let dir = "";
const svcIds: string[] = [];
const dockerfile = (n: number, slow = false) =>
  `ARG BAKE_PARENT\nFROM \${BAKE_PARENT}\nRUN echo ${n} > /v${slow ? " && sleep 4" : ""}\n`;

test.before(async () => {
  dir = tempTree({
    "bake.yml": `project: ${project}\nimages:\n  base: { rootfs: { tar: ${await busyboxRootfs()} } }\n  svc: { parent: base, dockerfile: svc/Dockerfile }\namis:\n  host:\n    builder: ebs\n    region: us-east-1\n    source: { owners: [self], name: "interrupts-src-${process.pid}-*" }\n    instance_type: t3.small\n    playbook: host.yml\n    preload: [base]\n`,
    "svc/Dockerfile": dockerfile(1),
    "host.yml": "- hosts: all\n  tasks: []\n",
  });
  // Four builds of svc: a nightly's prune (the current key and the newest 2 earlier kept) removes the oldest.
  for (let n = 1; n <= 4; n++) {
    writeFileSync(path.join(dir, "svc/Dockerfile"), dockerfile(n));
    const r = await bake(["build", "--json"], { cwd: dir });
    assert.is(r.code, 0, r.stderr);
    svcIds.push(JSON.parse(r.stdout).images.svc.id);
    await new Promise((r) => setTimeout(r, 1100));
  }
  writeFileSync(path.join(dir, "svc/Dockerfile"), dockerfile(5, true));
  // The AMI's key exists on the endpoint: the bake phase only finds it.
  await registerAmi(`interrupts-src-${process.pid}-1`);
  const plan = JSON.parse((await bake(["plan", "--json"], { cwd: dir, env: motoEnv })).stdout).nodes;
  await registerAmi(`interrupts-host-${process.pid}`, {
    "bake:key": plan.find((n: any) => n.name === "host").key,
    "bake:project": project,
    "bake:ami": "host",
  });
});

test.after(async () => {
  await removeProject(project);
});

/** Runs `bake nightly`, sends `signal` once stderr shows `line`, and returns what it did. */
async function interruptAt(line: RegExp, signal: NodeJS.Signals, env: Record<string, string>) {
  const child = execa(process.execPath, [CLI, "nightly", "--target", "aws"], {
    cwd: dir,
    env: testEnv(env),
    reject: false,
    timeout: 600_000,
    // One signal, as the test sends it: execa would follow it with SIGKILL after 5 s, and on a
    // loaded machine the clean-up can take longer than that.
    forceKillAfterDelay: false,
  });
  let stderr = "";
  let sent = false;
  child.stderr!.on("data", (d) => {
    stderr += String(d);
    if (!sent && line.test(stderr)) {
      sent = true;
      child.kill(signal);
    }
  });
  const r = await child;
  return { code: r.exitCode, stderr, sent };
}

for (const [phase, signal] of [
  ["refresh", "SIGINT"],
  ["build", "SIGTERM"],
  ["bake", "SIGHUP"],
  ["prune", "SIGTERM"],
] as const) {
  test(`${signal} in the ${phase} phase: exit 130, the run stops, nothing is pruned`, async () => {
    // A slow endpoint keeps the bake and prune phases busy when the signal arrives.
    const endpoint = await faultyEndpoint([{ action: "DescribeImages", times: Infinity, delayMs: 700 }]);
    try {
      const r = await interruptAt(new RegExp(`nightly: ${phase}`), signal, endpoint.env);
      assert.ok(r.sent, `the ${phase} phase was reached:\n${r.stderr}`);
      assert.is(r.code, 130, r.stderr);
      assert.match(r.stderr, new RegExp(`${signal}: stopping and cleaning up`));
      assert.not.match(r.stderr, /FAILED/, `an interrupt is not reported as a failure:\n${r.stderr}`);
      const later = ["refresh", "build", "bake", "prune"].slice(
        ["refresh", "build", "bake", "prune"].indexOf(phase) + 1,
      );
      for (const p of later)
        assert.not.match(r.stderr, new RegExp(`nightly: ${p}`), `the ${p} phase started after the interrupt`);
      for (const id of svcIds)
        assert.ok(
          await docker
            .getImage(id)
            .inspect()
            .catch(() => undefined),
          `${id} was pruned`,
        );
    } finally {
      endpoint.close();
    }
  });
}

test("uninterrupted, the same nightly prunes what the interrupted ones left alone", async () => {
  const r = await bake(["nightly", "--target", "aws", "--json"], { cwd: dir, env: motoEnv });
  assert.is(r.code, 0, r.stderr);
  assert.ok(
    JSON.parse(r.stdout).pruned.some((p: any) => p.id === svcIds[0]),
    r.stdout,
  );
  assert.is(
    await docker
      .getImage(svcIds[0])
      .inspect()
      .catch(() => undefined),
    undefined,
  );
});

test.run();
