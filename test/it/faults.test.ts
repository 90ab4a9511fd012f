/**
 * Faults, on the real engine and registry and on moto: each ends in a clear message and the right
 * exit code, leaves nothing half-done, and a rerun finishes from where the work stood.
 */
import { test } from "uvu";
import * as assert from "uvu/assert";
import { existsSync, mkdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { createServer, connect, type Server, type Socket } from "node:net";
import path from "node:path";
import { execa } from "execa";
import { DescribeImagesCommand } from "@aws-sdk/client-ec2";
import { bake, CLI, tempTree, testEnv } from "../helpers/bake.js";
import { busyboxRootfs, cuttableEngine, docker, removeProject, uniqueProject } from "../helpers/engine.js";
import { faultyEndpoint, motoEc2, motoEnv, registerAmi } from "../helpers/moto.js";

const project = uniqueProject("faults");

test.after(async () => {
  for (const p of [project, `${project}-disk`, `${project}-engine`, `${project}-copy`]) await removeProject(p);
});

/**
 * A TCP proxy to the registry that can be cut: `cutAfter(bytes)` drops every connection once that
 * many bytes went upstream and refuses new ones until `restore()`.
 */
async function cuttableProxy(port: number): Promise<{
  port: number;
  cutAfter: (bytes: number) => void;
  cut: () => void;
  restore: () => void;
  close: () => void;
}> {
  const sockets = new Set<Socket>();
  let sent = 0;
  let limit = Infinity;
  let down = false;
  const cut = () => {
    down = true;
    for (const s of sockets) s.destroy();
  };
  const server: Server = createServer((client) => {
    if (down) return void client.destroy();
    const upstream = connect(port, "127.0.0.1");
    sockets.add(client).add(upstream);
    client.on("data", (d) => {
      sent += d.length;
      if (sent > limit) cut();
    });
    client.pipe(upstream).pipe(client);
    for (const s of [client, upstream])
      s.on("error", () => undefined).on("close", () => {
        sockets.delete(s);
        client.destroy();
        upstream.destroy();
      });
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  return {
    port: (server.address() as { port: number }).port,
    cutAfter: (bytes) => {
      sent = 0;
      limit = bytes;
    },
    cut,
    restore: () => {
      down = false;
      limit = Infinity;
    },
    close: () => {
      cut();
      server.close();
    },
  };
}

test("the registry goes away during a push: exit 1 naming the push; nothing moved; the rerun pushes without building", async () => {
  const proxy = await cuttableProxy(5000);
  const registry = `127.0.0.1:${proxy.port}`;
  const dir = tempTree({
    "bake.yml": `project: ${project}\nregistry: ${registry}\nimages:\n  base: { rootfs: { tar: ${await busyboxRootfs()} } }\n  svc: { parent: base, dockerfile: svc/Dockerfile }\n`,
    "svc/Dockerfile": `ARG BAKE_PARENT\nFROM \${BAKE_PARENT}\nRUN head -c 3000000 /dev/urandom > /blob-${process.pid}\n`,
  });
  try {
    proxy.cutAfter(400_000);
    const r = await bake(["build", "--push", "--json"], { cwd: dir });
    assert.is(r.code, 1, r.stderr);
    assert.match(r.stderr, new RegExp(`pushing ${registry}/${project}/\\w+:[0-9a-f]{12} failed`));
    assert.not.match(r.stderr, /\n\s+at /, "no stack trace");
    const repo = `${registry}/${project}/svc`;
    assert.is(
      (await docker.listImages({ filters: JSON.stringify({ reference: [`${repo}:latest`] }) })).length,
      0,
      "latest did not move",
    );
    assert.not.ok(
      existsSync(path.join(dir, "bake-manifest.json")) &&
        JSON.parse(readFileSync(path.join(dir, "bake-manifest.json"), "utf8")).images.svc?.digest,
      "no digest recorded",
    );

    proxy.restore();
    const rerun = await bake(["build", "--push", "--json"], { cwd: dir });
    assert.is(rerun.code, 0, rerun.stderr);
    const images = JSON.parse(rerun.stdout).images;
    assert.equal([images.base.action, images.svc.action], ["cached", "cached"], "nothing was built again");
    assert.match(images.svc.digest, /^sha256:[0-9a-f]{64}$/);
    const manifest = await fetch(`http://127.0.0.1:5000/v2/${project}/svc/manifests/latest`, {
      headers: { Accept: "application/vnd.docker.distribution.manifest.v2+json" },
    });
    assert.is(manifest.status, 200, "the registry holds svc:latest");
  } finally {
    proxy.close();
  }
});

test("the disk under .bake/ fills: exit 1 saying so, no stack trace; with room again the rerun builds", async () => {
  const dir = tempTree({
    "bake.yml": `project: ${project}-disk\nimages:\n  base: { rootfs: { tar: ${await busyboxRootfs()} } }\n  svc: { parent: base, dockerfile: svc/Dockerfile }\n`,
    "svc/Dockerfile": `ARG BAKE_PARENT\nFROM \${BAKE_PARENT}\nRUN for i in $(seq 1 400); do echo "a line of build output number $i that fills a log"; done\n`,
  });
  const bakeDir = path.join(dir, ".bake");
  mkdirSync(bakeDir);
  await execa("mount", ["-t", "tmpfs", "-o", "size=64k", "tmpfs", bakeDir]);
  try {
    writeFileSync(path.join(bakeDir, "filler"), Buffer.alloc(60 * 1024));
    const r = await bake(["build"], { cwd: dir });
    assert.is(r.code, 1, r.stderr);
    assert.match(r.stderr, /no space left on device/i);
    assert.match(r.stderr, new RegExp(`${bakeDir.replace(/[.]/g, "\\.")}`));
    assert.not.match(r.stderr, /\n\s+at /, "no stack trace");
    const manifest = path.join(dir, "bake-manifest.json");
    assert.ok(!existsSync(manifest) || JSON.parse(readFileSync(manifest, "utf8")), "the manifest is absent or whole");

    rmSync(path.join(bakeDir, "filler"));
    const rerun = await bake(["build", "--json"], { cwd: dir });
    assert.is(rerun.code, 0, rerun.stderr);
    assert.ok(JSON.parse(rerun.stdout).images.svc.id);
  } finally {
    await execa("umount", [bakeDir]);
  }
});

test("the Docker engine goes away during a build: exit 1 saying so; it comes back and the rerun builds", async () => {
  // The engine as bake reaches it, through a socket that is cut as a stopped engine's is: the
  // connections drop mid-build and new ones find no socket. The real dockerd keeps serving the
  // other test files that run beside this one.
  const engine = await cuttableEngine();
  const dir = tempTree({
    // The step sleeps while the engine is cut; the rerun's step (NAP=0) does not.
    "bake.yml": `project: ${project}-engine\nimages:\n  base: { rootfs: { tar: ${await busyboxRootfs()} } }\n  svc: { parent: base, dockerfile: svc/Dockerfile, args: { NAP: "\${NAP:-300}" } }\n`,
    "svc/Dockerfile": `ARG BAKE_PARENT\nFROM \${BAKE_PARENT}\nARG NAP\nRUN echo ${process.pid} > /engine && sleep $NAP\n`,
  });
  try {
    const child = execa(process.execPath, [CLI, "build"], {
      cwd: dir,
      env: testEnv({ DOCKER_HOST: engine.host }),
      reject: false,
      timeout: 120_000,
    });
    let seen = "";
    child.stderr!.on("data", (d) => (seen += d));
    const started = Date.now();
    while (!/RUN echo \d+ > \/engine/.test(seen) && Date.now() - started < 60_000)
      await new Promise((r) => setTimeout(r, 100));
    assert.match(seen, /RUN echo/);
    await new Promise((r) => setTimeout(r, 1500));
    const cutAt = Date.now();
    await engine.cut();
    const r = await child;
    assert.is(r.exitCode, 1, String(r.stderr));
    assert.match(
      String(r.stderr),
      new RegExp(`svc: the Docker engine at ${engine.host.replace(/[.]/g, "\\.")} went away during the build`),
      String(r.stderr),
    );
    assert.not.match(String(r.stderr), /\n\s+at /, "no stack trace");
    assert.ok(
      Date.now() - cutAt < 60_000,
      "it stopped when the engine went, not when the step (300 s) would have ended",
    );
    await engine.restore();
    const rerun = await bake(["build", "--json"], { cwd: dir, env: { DOCKER_HOST: engine.host, NAP: "0" } });
    assert.is(rerun.code, 0, rerun.stderr);
    assert.is(JSON.parse(rerun.stdout).images.svc.action, "built");
    assert.is(
      (
        await docker.listImages({
          filters: JSON.stringify({ label: [`bake.project=${project}-engine`, "bake.node=svc"] }),
        })
      ).length,
      1,
      "one svc image, whole",
    );
  } finally {
    await engine.close();
  }
});

test("the EC2 endpoint fails during a copy to another region: throttling is retried; a copy whose tagging failed is found and finished by the rerun", async () => {
  const dir = tempTree({
    "bake.yml": `project: ${project}-copy\nimages:\n  base: { rootfs: { tar: ${await busyboxRootfs()} } }\namis:\n  host:\n    builder: ebs\n    region: us-east-1\n    copy_to: [eu-west-1]\n    source: { owners: [self], name: "faults-src-${process.pid}-*" }\n    instance_type: t3.small\n    playbook: host.yml\n    preload: [base]\n`,
    "host.yml": "- hosts: all\n  tasks: []\n",
  });
  await registerAmi(`faults-src-${process.pid}-1`);
  const plan = JSON.parse((await bake(["plan", "--json"], { cwd: dir, env: motoEnv })).stdout).nodes;
  const key = plan.find((n: any) => n.name === "host").key;
  const home = await registerAmi(`faults-home-${process.pid}`, {
    "bake:key": key,
    "bake:project": `${project}-copy`,
    "bake:ami": "host",
  });
  const copies = async () =>
    (
      await motoEc2("eu-west-1").send(
        new DescribeImagesCommand({
          Owners: ["self"],
          Filters: [{ Name: "name", Values: [`${project}-copy-host-*`] }],
        }),
      )
    ).Images ?? [];

  // CopyImage is throttled twice (the SDK backs off and retries), then answered; tagging the copy
  // then fails for good, as if the run had been stopped right after the copy.
  const faulty = await faultyEndpoint([
    { action: "CopyImage", times: 2, status: 503, code: "RequestLimitExceeded" },
    {
      action: "CreateTags",
      match: new RegExp(`ResourceId\\.1=(?!${home})ami-`),
      times: Infinity,
      status: 500,
      code: "InternalError",
    },
  ]);
  try {
    const failed = await bake(["ami", "host", "--json"], {
      cwd: dir,
      env: { ...faulty.env, BAKE_AWS_MAX_ATTEMPTS: "3", BAKE_EC2_POLL_MS: "100" },
    });
    assert.is(failed.code, 1, failed.stderr);
    assert.match(failed.stderr, /InternalError/);
    assert.not.match(failed.stderr, /\n\s+at /, "no stack trace");
    assert.is(faulty.calls.get("CopyImage"), 3, "two throttled answers, then the copy");
  } finally {
    faulty.close();
  }
  assert.is((await copies()).length, 1, "the copy exists, untagged");
  // Prune sees the untagged copy by its name (and keeps it).
  const prune = JSON.parse((await bake(["prune", "--json"], { cwd: dir, env: motoEnv })).stdout).decisions;
  const copy = prune.find((d: any) => d.where === "eu-west-1");
  assert.equal([copy?.id, copy?.action], [(await copies())[0].ImageId, "keep"]);

  const rerun = await faultyEndpoint([]);
  try {
    const r = await bake(["ami", "host", "--json"], { cwd: dir, env: { ...rerun.env, BAKE_EC2_POLL_MS: "100" } });
    assert.is(r.code, 0, r.stderr);
    assert.is(rerun.calls.get("CopyImage") ?? 0, 0, "the copy is found by name, not made again");
    const made = await copies();
    assert.is(made.length, 1);
    assert.equal(JSON.parse(r.stdout).regions, { "us-east-1": home, "eu-west-1": made[0].ImageId });
    assert.ok(
      (made[0].Tags ?? []).some((t) => t.Key === "bake:key" && t.Value === key),
      "tagged now",
    );
  } finally {
    rerun.close();
  }
});

test.run();
