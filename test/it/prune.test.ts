/** `bake prune` against moto and the real engine: retention, in-use and bake:keep kept, snapshots deleted. */
import { test } from "uvu";
import * as assert from "uvu/assert";
import { appendFileSync } from "node:fs";
import path from "node:path";
import { CreateImageCommand, CreateLaunchTemplateCommand, CreateTagsCommand, DescribeImagesCommand, DescribeSnapshotsCommand, RunInstancesCommand } from "@aws-sdk/client-ec2";
import { bake, tempTree } from "../helpers/bake.js";
import { busyboxRootfs, docker, removeProject, uniqueProject } from "../helpers/engine.js";
import { motoEc2, motoEnv, resetMoto } from "../helpers/moto.js";

const project = uniqueProject("prune-it");
const ec2 = motoEc2();
let dir = "";
const amis: string[] = [];

async function bakedAmi(i: number, extraTags: Record<string, string> = {}): Promise<string> {
  const amazon = (await ec2.send(new DescribeImagesCommand({ Owners: ["amazon"] }))).Images![0].ImageId!;
  const instance = (await ec2.send(new RunInstancesCommand({ ImageId: amazon, MinCount: 1, MaxCount: 1 }))).Instances![0].InstanceId!;
  const { ImageId } = await ec2.send(new CreateImageCommand({ InstanceId: instance, Name: `${project}-host-${i}` }));
  const tags = { "bake:project": project, "bake:ami": "host", "bake:key": `key${i}`, ...extraTags };
  await ec2.send(new CreateTagsCommand({ Resources: [ImageId!], Tags: Object.entries(tags).map(([Key, Value]) => ({ Key, Value })) }));
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
  for (let i = 1; i <= 6; i++) {
    amis.push(await bakedAmi(i, i === 1 ? { "bake:keep": "release 1.0" } : {}));
    await new Promise((r) => setTimeout(r, 1100));
  }
  await ec2.send(new RunInstancesCommand({ ImageId: amis[1], MinCount: 1, MaxCount: 1 }));
  await ec2.send(new CreateLaunchTemplateCommand({ LaunchTemplateName: `${project}-lt`, LaunchTemplateData: { ImageId: amis[2] } }));
});

test.after(async () => {
  await removeProject(project);
});

const decisionsOf = (stdout: string) => JSON.parse(stdout).decisions as { kind: string; id: string; where: string; action: string; reason: string; name: string }[];

test("dry run: the plan per AMI keeps the newest, bake:keep and in-use AMIs, and changes nothing", async () => {
  const r = await bake(["prune", "--json"], { cwd: dir, env: motoEnv });
  assert.is(r.code, 0, r.stderr);
  const ami = decisionsOf(r.stdout).filter((d) => d.kind === "ami" && d.where === "us-east-1");
  assert.equal(
    ami.map((d) => [d.id, d.action, d.reason]),
    [
      [amis[5], "keep", "one of the newest 2"],
      [amis[4], "keep", "one of the newest 2"],
      [amis[3], "remove", "older than the newest 2"],
      [amis[2], "keep", "used by an instance or launch template"],
      [amis[1], "keep", "used by an instance or launch template"],
      [amis[0], "keep", "tagged bake:keep"],
    ],
  );
  const still = await ec2.send(new DescribeImagesCommand({ Owners: ["self"], Filters: [{ Name: "tag:bake:project", Values: [project] }] }));
  assert.is(still.Images!.length, 6);
});

test("--yes deregisters what the plan removes and deletes its snapshots", async () => {
  const before = (await ec2.send(new DescribeImagesCommand({ ImageIds: [amis[3]] }))).Images![0];
  const snapshot = before.BlockDeviceMappings![0].Ebs!.SnapshotId!;
  const r = await bake(["prune", "--yes"], { cwd: dir, env: motoEnv });
  assert.is(r.code, 0, r.stderr);
  assert.match(r.stderr, /removed 1/);
  const left = await ec2.send(new DescribeImagesCommand({ Owners: ["self"], Filters: [{ Name: "tag:bake:project", Values: [project] }] }));
  assert.equal(left.Images!.map((i) => i.ImageId).sort(), [amis[0], amis[1], amis[2], amis[4], amis[5]].sort());
  const snaps = await ec2.send(new DescribeSnapshotsCommand({ OwnerIds: ["self"] }));
  assert.not.ok(snaps.Snapshots!.some((s) => s.SnapshotId === snapshot), "the snapshot is gone");
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
  const dry = decisionsOf((await bake(["prune", "--json", "--keep-images", "1"], { cwd: dir })).stdout).filter((d) => d.kind === "image" && d.name === "svc");
  assert.equal(dry.map((d) => [d.id, d.action]), [
    [ids[3], "keep"],
    [ids[2], "keep"],
    [ids[1], "remove"],
    [ids[0], "remove"],
  ]);
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
    assert.is(await docker.getImage(ids[0]).inspect().catch(() => undefined), undefined);
    assert.equal((await docker.getImage(ids[1]).inspect()).RepoTags, tagsBefore, "the used image keeps its tags");
    for (const kept of [ids[2], ids[3]]) assert.ok(await docker.getImage(kept).inspect());
  } finally {
    await user.remove({ force: true });
  }
});

test.run();
