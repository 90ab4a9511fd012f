/**
 * `bake prune` against moto and the real engine: retention, every way an AMI can be in use,
 * bake:keep per key, a failure that stops nothing, a rerun that finishes the work, leftovers.
 */
import { test } from "uvu";
import * as assert from "uvu/assert";
import { appendFileSync, existsSync, mkdirSync, writeFileSync } from "node:fs";
import path from "node:path";
import { hostname } from "node:os";
import { parentTagRepository } from "../../src/state/parent-tags.js";
import { execa } from "execa";
import {
  CreateImageCommand,
  CreateLaunchTemplateCommand,
  CreateTagsCommand,
  DescribeImagesCommand,
  DescribeSnapshotsCommand,
  ModifyImageAttributeCommand,
  RunInstancesCommand,
} from "@aws-sdk/client-ec2";
import { AutoScalingClient, CreateLaunchConfigurationCommand } from "@aws-sdk/client-auto-scaling";
import { PutParameterCommand, SSMClient } from "@aws-sdk/client-ssm";
import { bake, ROOT, tempTree } from "../helpers/bake.js";
import { busyboxImage, busyboxRootfs, docker, removeProject, uniqueProject } from "../helpers/engine.js";
import { faultyEndpoint, MOTO, motoEc2, motoEnv, registerAmi, resetMoto } from "../helpers/moto.js";

const project = uniqueProject("prune-it");
const ec2 = motoEc2();
const motoClient = {
  region: "us-east-1",
  endpoint: MOTO,
  credentials: { accessKeyId: "testing", secretAccessKey: "testing" },
};
let dir = "";
const amis: string[] = [];
const snapshotOf = new Map<string, string>();

let amazon = "";

async function bakedAmi(i: number, extraTags: Record<string, string> = {}): Promise<string> {
  // The source of every AMI made here: moto's answer does not change, asked once.
  amazon ||= (await ec2.send(new DescribeImagesCommand({ Owners: ["amazon"] }))).Images![0].ImageId!;
  const instance = (await ec2.send(new RunInstancesCommand({ ImageId: amazon, MinCount: 1, MaxCount: 1 })))
    .Instances![0].InstanceId!;
  const { ImageId } = await ec2.send(new CreateImageCommand({ InstanceId: instance, Name: `${project}-host-${i}` }));
  const snapshot = (await ec2.send(new DescribeImagesCommand({ ImageIds: [ImageId!] }))).Images![0]
    .BlockDeviceMappings![0].Ebs!.SnapshotId!;
  snapshotOf.set(ImageId!, snapshot);
  // Tagged as Packer's tags and snapshot_tags leave them.
  const tags = { "bake:project": project, "bake:ami": "host", "bake:key": `key${i}`, ...extraTags };
  await ec2.send(
    new CreateTagsCommand({
      Resources: [ImageId!, snapshot],
      Tags: Object.entries(tags).map(([Key, Value]) => ({ Key, Value })),
    }),
  );
  return ImageId!;
}

test.before(async () => {
  await resetMoto();
  dir = tempTree({
    "bake.yml": `project: ${project}
images:
  base: { rootfs: { tar: ${await busyboxRootfs()} } }
  svc: { parent: base, dockerfile: svc/Dockerfile }
amis:
  host:
    builder: ebs
    region: us-east-1
    copy_to: [eu-west-1]
    source: { owners: [self], name: "nothing-matches-*" }
    instance_type: t3.small
    playbook: host.yml
    preload: [base]
    retention: { keep: 2 }
`,
    "svc/Dockerfile": "ARG BAKE_PARENT\nFROM ${BAKE_PARENT}\nRUN echo 0 > /v\n",
    "host.yml": "- hosts: all\n  tasks: []\n",
  });
  // Oldest first, a second apart (moto's creation times have one-second resolution).
  for (let i = 0; i <= 10; i++) {
    amis.push(await bakedAmi(i, i === 0 ? { "bake:keep": "release 1.0" } : {}));
    await new Promise((r) => setTimeout(r, 1100));
  }
  await ec2.send(new RunInstancesCommand({ ImageId: amis[1], MinCount: 1, MaxCount: 1 }));
  await ec2.send(
    new CreateLaunchTemplateCommand({ LaunchTemplateName: `${project}-lt`, LaunchTemplateData: { ImageId: amis[2] } }),
  );
  await new AutoScalingClient(motoClient).send(
    new CreateLaunchConfigurationCommand({
      LaunchConfigurationName: `${project}-lc`,
      ImageId: amis[4],
      InstanceType: "t3.small",
    }),
  );
  const ssm = new SSMClient(motoClient);
  await ssm.send(
    new PutParameterCommand({ Name: `/${project}/lt-ami`, Value: amis[5], Type: "String", DataType: "text" }),
  );
  await ec2.send(
    new CreateLaunchTemplateCommand({
      LaunchTemplateName: `${project}-lt-ssm`,
      LaunchTemplateData: { ImageId: `resolve:ssm:/${project}/lt-ami` },
    }),
  );
  await ssm.send(
    new PutParameterCommand({ Name: `/${project}/golden`, Value: amis[6], Type: "String", DataType: "aws:ec2:image" }),
  );
  // The eu-west-1 copy of key7 is marked bake:keep there; the us-east-1 one is not.
  await registerAmi(
    `${project}-host-7-copy`,
    { "bake:project": project, "bake:ami": "host", "bake:key": "key7", "bake:keep": "audit" },
    "eu-west-1",
  );
  await ec2.send(
    new ModifyImageAttributeCommand({ ImageId: amis[8], LaunchPermission: { Add: [{ UserId: "111122223333" }] } }),
  );
});

test.after(async () => {
  await removeProject(project);
});

type Decision = {
  kind: string;
  id: string;
  where: string;
  action: string;
  reason: string;
  name: string;
  warning?: string;
  error?: string;
};
const decisionsOf = (stdout: string) => JSON.parse(stdout).decisions as Decision[];
const ownedAmis = async () =>
  (
    await ec2.send(
      new DescribeImagesCommand({ Owners: ["self"], Filters: [{ Name: "tag:bake:project", Values: [project] }] }),
    )
  ).Images!.map((i) => i.ImageId!);
const snapshotExists = async (id: string) =>
  (await ec2.send(new DescribeSnapshotsCommand({ OwnerIds: ["self"] }))).Snapshots!.some((s) => s.SnapshotId === id);

test("dry run: every way an AMI is in use keeps it, bake:keep holds every copy of its key, sharing is warned of; nothing changes", async () => {
  const r = await bake(["prune", "--json"], { cwd: dir, env: motoEnv });
  assert.is(r.code, 0, r.stderr);
  const ami = decisionsOf(r.stdout).filter((d) => d.kind === "ami" && d.where === "us-east-1");
  assert.equal(
    ami.map((d) => [d.id, d.action, d.reason.replaceAll(project, "P")]),
    [
      [amis[10], "keep", "one of the newest 2"],
      [amis[9], "keep", "one of the newest 2"],
      [amis[8], "remove", "older than the newest 2"],
      [
        amis[7],
        "keep",
        `a copy of its key is tagged bake:keep (${ami.length && decisionsOf(r.stdout).find((d) => d.where === "eu-west-1")!.id} in eu-west-1)`,
      ],
      [amis[6], "keep", "used by SSM parameter /P/golden"],
      [amis[5], "keep", "used by launch template P-lt-ssm version 1 (resolve:ssm:/P/lt-ami)"],
      [amis[4], "keep", "used by launch configuration P-lc"],
      [amis[3], "remove", "older than the newest 2"],
      [amis[2], "keep", "used by launch template P-lt version 1"],
      [
        amis[1],
        "keep",
        `used by instance ${ami
          .find((d) => d.id === amis[1])!
          .reason.split(" ")
          .at(-1)}`,
      ],
      [amis[0], "keep", "tagged bake:keep"],
    ],
  );
  assert.match(ami.find((d) => d.id === amis[1])!.reason, /^used by instance i-/);
  assert.is(
    ami.find((d) => d.id === amis[8])!.warning,
    "shared with 111122223333: instances in those accounts are not visible here",
  );
  assert.is((await ownedAmis()).length, 11);
});

test("--yes: a snapshot that cannot be deleted is reported and the rest goes on (exit 1); a rerun finishes it", async () => {
  const stuck = snapshotOf.get(amis[3])!;
  const endpoint = await faultyEndpoint([
    { action: "DeleteSnapshot", match: new RegExp(stuck), times: Infinity, status: 400, code: "InvalidSnapshot.InUse" },
  ]);
  try {
    const r = await bake(["prune", "--yes"], { cwd: dir, env: endpoint.env });
    assert.is(r.code, 1, r.stderr);
    assert.match(
      r.stderr,
      new RegExp(
        `FAILED ami ${amis[3]} in us-east-1: deregistered, but snapshots were not deleted: ${stuck}: injected by the test: InvalidSnapshot.InUse`,
      ),
    );
    // One AMI removed (checked below), and whatever leftovers of the engine's other bakes went too
    // (a killed bake's parent tag is anyone's to prune): the count is not this file's alone.
    assert.match(r.stderr, /removed [1-9]\d*, 1 failed/, r.stderr);
  } finally {
    endpoint.close();
  }
  const left = await ownedAmis();
  assert.not.ok(left.includes(amis[3]) || left.includes(amis[8]), "both AMIs deregistered");
  assert.is(left.length, 9);
  assert.not.ok(await snapshotExists(snapshotOf.get(amis[8])!), "the other AMI's snapshot is gone");
  assert.ok(await snapshotExists(stuck), "the snapshot that failed is still there");

  const plan = await bake(["prune", "--json"], { cwd: dir, env: motoEnv });
  const orphan = decisionsOf(plan.stdout).filter((d) => d.kind === "snapshot");
  assert.equal(
    orphan.map((d) => [d.id, d.action, d.reason]),
    [[stuck, "remove", "its AMI was deregistered"]],
  );
  const rerun = await bake(["prune", "--yes"], { cwd: dir, env: motoEnv });
  assert.is(rerun.code, 0, rerun.stderr);
  assert.not.ok(await snapshotExists(stuck));
});

test("throttling: the EC2 client backs off and retries (adaptive), and prune finishes", async () => {
  const endpoint = await faultyEndpoint([
    { action: "DescribeImages", times: 3, status: 503, code: "RequestLimitExceeded" },
  ]);
  try {
    const r = await bake(["prune", "--json"], { cwd: dir, env: endpoint.env });
    assert.is(r.code, 0, r.stderr);
    assert.ok(endpoint.calls.get("DescribeImages")! >= 4, `retried: ${endpoint.calls.get("DescribeImages")}`);
    assert.ok(decisionsOf(r.stdout).some((d) => d.kind === "ami"));
  } finally {
    endpoint.close();
  }
});

test("leftovers: parent tags of finished builds, AMI folders no bake holds and old logs go; what a running bake uses stays", async () => {
  const busybox = await busyboxImage();
  let dead = 4_000_000;
  while (existsSync(`/proc/${dead}`)) dead++;
  const deadTag = () => docker.getImage(busybox).tag({ repo: parentTagRepository(hostname(), dead), tag: "feedbeef" });
  await deadTag();
  await docker.getImage(busybox).tag({ repo: parentTagRepository(hostname(), process.pid), tag: "feedbeef" });
  // Another machine sharing the engine: its build may be running, whatever its pid is here.
  await docker.getImage(busybox).tag({ repo: parentTagRepository("another-ci-container", dead), tag: "feedbeef" });
  const folder = (name: string) => {
    const p = path.join(dir, ".bake/ami", name);
    mkdirSync(p, { recursive: true });
    writeFileSync(path.join(p, "preload.tar"), Buffer.alloc(1 << 20));
    return p;
  };
  const old = folder("host-local-aaaaaaaaaaaa");
  const busy = folder("host-local-bbbbbbbbbbbb");
  for (let i = 0; i < 12; i++)
    mkdirSync(path.join(dir, `.bake/logs/20261201-0000${String(i).padStart(2, "0")}-abcd`), { recursive: true });
  // What a forced stop can leave that holds secrets: a boot test's host whose bake is gone (and one
  // whose bake runs), and a VM boot copy no bake holds.
  const bootHost = async (namespace: string, owner: string) =>
    (
      await docker.createContainer({
        Image: busybox,
        Cmd: ["true"],
        Labels: { "bake.project": project, "bake.namespace": namespace, "bake.boot-test": "host", "bake.owner": owner },
      })
    ).id;
  const deadBoot = await bootHost("bake-boot-dead01", `${hostname()}:${dead}`);
  const liveBoot = await bootHost("bake-boot-live01", `${hostname()}:${process.pid}`);
  const bootCopy = path.join(dir, ".bake/vm/host-cccccccccccc/boot-abc123");
  mkdirSync(bootCopy, { recursive: true });
  writeFileSync(path.join(bootCopy, "disk.raw"), "DIAGNOSTICS_TOKEN=x\n");
  // Another process holds the lock a bake holds on its folder.
  const holder = execa(process.execPath, [
    "--input-type=module",
    "-e",
    `
    const { acquireLock } = await import(${JSON.stringify(path.join(ROOT, "dist/src/files/process-lock.js"))});
    const { amiBakeLock } = await import(${JSON.stringify(path.join(ROOT, "dist/src/ami/bake-ami.js"))});
    await acquireLock(amiBakeLock(${JSON.stringify(project)}, ${JSON.stringify(busy)}));
    console.log("held");
    setInterval(() => {}, 1000);
  `,
  ]);
  await new Promise<void>((resolve) => holder.stdout!.on("data", (d) => String(d).includes("held") && resolve()));
  try {
    // Any prune on this engine removes a dead bake's parent tag, a nightly's in a file beside this
    // one too: while the tag went between its tagging and the dry run's end, tag and look again.
    let dry: Decision[] = [];
    for (let attempt = 1; attempt <= 4; attempt++) {
      dry = decisionsOf((await bake(["prune", "--json"], { cwd: dir })).stdout).filter((d) => d.kind === "leftover");
      const kept = await docker
        .getImage(`${parentTagRepository(hostname(), dead)}:feedbeef`)
        .inspect()
        .then(
          () => true,
          () => false,
        );
      if (kept) break;
      await deadTag();
    }
    const byId = (id: string) => dry.find((d) => d.id === id || d.id.endsWith(id));
    assert.equal(
      [
        byId(`${parentTagRepository(hostname(), dead)}:feedbeef`)?.action,
        byId(`${parentTagRepository(hostname(), process.pid)}:feedbeef`)?.action,
        byId(`${parentTagRepository("another-ci-container", dead)}:feedbeef`)?.action,
      ],
      ["remove", "keep", "keep"],
    );
    assert.equal([byId(old)?.action, byId(busy)?.action], ["remove", "keep"]);
    assert.match(byId(busy)!.reason, /a bake is using it/);
    assert.equal(
      dry.filter((d) => d.name === "logs").map((d) => d.id),
      ["20261201-000001-abcd", "20261201-000000-abcd"],
    );
    assert.equal(
      [byId("bake-boot-dead01")?.action, byId("bake-boot-live01")?.action, byId(bootCopy)?.action],
      ["remove", "keep", "remove"],
    );
    assert.match(
      byId("bake-boot-dead01")!.reason,
      /left by a boot test that did not finish \(1 container, holding secrets\)/,
    );
    const r = await bake(["prune", "--yes"], { cwd: dir });
    assert.is(r.code, 0, r.stderr);
    assert.not.ok(existsSync(old), "the idle AMI folder is gone");
    assert.ok(existsSync(path.join(busy, "preload.tar")), "the held one stays");
    assert.not.ok(existsSync(path.join(dir, ".bake/logs/20261201-000000-abcd")));
    assert.ok(existsSync(path.join(dir, ".bake/logs/20261201-000002-abcd")));
    assert.is(
      await docker
        .getImage(`${parentTagRepository(hostname(), dead)}:feedbeef`)
        .inspect()
        .catch(() => undefined),
      undefined,
    );
    assert.ok(await docker.getImage(`${parentTagRepository(hostname(), process.pid)}:feedbeef`).inspect());
    assert.ok(
      await docker.getImage(`${parentTagRepository("another-ci-container", dead)}:feedbeef`).inspect(),
      "another machine's tag stays",
    );
    assert.is(
      await docker
        .getContainer(deadBoot)
        .inspect()
        .catch(() => undefined),
      undefined,
      "the dead boot test's host is gone",
    );
    assert.ok(await docker.getContainer(liveBoot).inspect(), "a running boot test's host stays");
    assert.not.ok(existsSync(bootCopy), "the boot copy is gone");
  } finally {
    await docker
      .getContainer(liveBoot)
      .remove({ force: true })
      .catch(() => undefined);
    holder.kill();
    await holder.catch(() => undefined);
    for (const [host, pid] of [
      [hostname(), process.pid],
      ["another-ci-container", dead],
    ] as const)
      await docker
        .getImage(`${parentTagRepository(host, pid)}:feedbeef`)
        .remove()
        .catch(() => undefined);
  }
});

test("local images: the current key and the newest N earlier builds stay; the rest go only with --yes", async () => {
  const ids: string[] = [];
  for (let i = 1; i <= 4; i++) {
    appendFileSync(path.join(dir, "svc/Dockerfile"), `RUN echo ${i} >> /v\n`);
    const r = await bake(["build", "--json"], { cwd: dir });
    assert.is(r.code, 0, r.stderr);
    ids.push(JSON.parse(r.stdout).images.svc.id);
    await new Promise((r) => setTimeout(r, 1100));
  }
  const dry = decisionsOf((await bake(["prune", "--json", "--keep-images", "1"], { cwd: dir })).stdout).filter(
    (d) => d.kind === "image" && d.name === "svc",
  );
  assert.equal(
    dry.map((d) => [d.id, d.action]),
    [
      [ids[3], "keep"],
      [ids[2], "keep"],
      [ids[1], "remove"],
      [ids[0], "remove"],
    ],
  );
  assert.ok(await docker.getImage(ids[0]).inspect(), "a dry run removes nothing");
  // A count that is not a whole number of 0 or more removes nothing (it read as NaN, and -1 passed).
  for (const bad of ["foo", "-1", "1.5"]) {
    const refused = await bake(["prune", "--yes", "--keep-images", bad], { cwd: dir });
    assert.is(refused.code, 2, `${bad}: ${refused.stderr}`);
    assert.match(refused.stderr, /--keep-images takes a whole number of 0 or more/);
  }
  assert.ok(await docker.getImage(ids[0]).inspect(), "nothing removed");
  // An image a container uses keeps every tag: the engine's refusal comes only after untagging.
  const user = await docker.createContainer({ Image: ids[1], Cmd: ["true"] });
  const tagsBefore = (await docker.getImage(ids[1]).inspect()).RepoTags;
  try {
    const r = await bake(["prune", "--yes", "--keep-images", "1"], { cwd: dir });
    assert.is(r.code, 0, r.stderr);
    assert.is(
      await docker
        .getImage(ids[0])
        .inspect()
        .catch(() => undefined),
      undefined,
    );
    assert.equal((await docker.getImage(ids[1]).inspect()).RepoTags, tagsBefore, "the used image keeps its tags");
    for (const kept of [ids[2], ids[3]]) assert.ok(await docker.getImage(kept).inspect());
  } finally {
    await user.remove({ force: true });
  }
});

test.run();
