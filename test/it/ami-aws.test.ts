/** AMIs on the aws target against moto, and rendered Packer folders that Packer accepts. */
import { test } from "uvu";
import * as assert from "uvu/assert";
import { createHash } from "node:crypto";
import { existsSync, mkdirSync, readFileSync, symlinkSync, writeFileSync } from "node:fs";
import path from "node:path";
import { execa } from "execa";
import { parse as parseYaml } from "yaml";
import { DescribeImageAttributeCommand, DescribeImagesCommand } from "@aws-sdk/client-ec2";
import { bake, tempDir } from "../helpers/bake.js";
import { motoEc2, motoEnv, registerAmi, resetMoto } from "../helpers/moto.js";
import { awsFixture, packerEnv, suffix } from "../helpers/aws-project.js";

const SHARE = "210987654321";

test.before(async () => {
  await resetMoto();
  await registerAmi(`aws-src-${suffix}-1`);
});

const VM =
  "    vm: { rootfs: { debootstrap: { suite: bookworm, variant: minbase, include: [linux-image-cloud-amd64, systemd-sysv, openssh-server, python3] } } }\n";

for (const [builder, target] of [
  ["ebs", "aws"],
  ["instance-store", "aws"],
  ["ebs", "local"],
  ["ebs", "vm"],
] as const) {
  test(`render ${builder} on ${target}: packer validate and packer fmt -check accept the folder as it is`, async () => {
    const dir = await awsFixture(
      target === "local" ? "    local: { image: base }\n" : target === "vm" ? VM : "",
      builder,
    );
    const cert = path.join(dir, "cert.pem");
    writeFileSync(cert, "not a real certificate");
    const env = { ...motoEnv, BAKE_X509_CERT: cert, BAKE_X509_KEY: cert };
    const out = path.join(dir, "rendered");
    const r = await bake(["render", "host", "--target", target, "--out", out], { cwd: dir, env });
    assert.is(r.code, 0, r.stderr);
    const hcl = readFileSync(path.join(out, "ami.pkr.hcl"), "utf8");
    assert.match(
      hcl,
      target === "local"
        ? /source "docker" "ami"/
        : target === "vm"
          ? /source "qemu" "ami"[\s\S]*hostfwd=tcp:127\.0\.0\.1:\{\{ \.SSHHostPort \}\}-:22/
          : builder === "ebs"
            ? /source "amazon-ebs" "ami"/
            : /source "amazon-instance" "ami"/,
    );
    assert.not.match(hcl, /required_plugins/, "Packer 1.6 does not know required_plugins");
    await execa("packer", ["validate", out], { env: packerEnv(env) });
    await execa("packer", ["fmt", "-check", out]);
    const vars = parseYaml(readFileSync(path.join(out, "bake-vars.yml"), "utf8"), {
      customTags: [{ tag: "!unsafe", resolve: (v: string) => v }],
    });
    // An AMI that runs services bakes in two stages on every target: the folder is the host
    // stage's, which Packer bakes first; the release stage, its services included, is written on
    // its result (local, vm) or rendered once the host stage's AMI is known (aws).
    assert.equal(
      [vars.bake_stage, vars.bake_preload_images.map((i: any) => i.name), vars.bake_services.length],
      ["host", ["base"], 0],
    );
  });
}

test("render --target local of an AMI without local: the host starts from bake's default (Debian 12 with systemd), on that target only", async () => {
  const dir = await awsFixture();
  const out = path.join(dir, "rendered");
  const r = await bake(["render", "host", "--target", "local", "--out", out], { cwd: dir, env: motoEnv });
  assert.is(r.code, 0, r.stderr);
  // The host stage (the folder Packer bakes) starts from the default host image.
  assert.match(
    readFileSync(path.join(out, "ami.pkr.hcl"), "utf8"),
    new RegExp(`image += "aws-${suffix}/bake-local-host:[0-9a-f]{12}"`),
  );
  await execa("packer", ["validate", out], { env: packerEnv({ BAKE_DOCKER_SOCKET: "/var/run/docker.sock" }) });
  const local = JSON.parse(
    (
      await bake(["plan", "--target", "local", "--json"], {
        cwd: dir,
        env: { DOCKER_HOST: "unix:///nonexistent.sock" },
      })
    ).stdout,
  ).nodes;
  assert.equal(
    local.filter((n: any) => n.name === "bake-local-host").map((n: any) => [n.kind, n.layer]),
    [["image", "base"]],
  );
  assert.ok(
    local.findIndex((n: any) => n.name === "bake-local-host") < local.findIndex((n: any) => n.name === "host"),
    "the host image comes before the AMI that boots it",
  );
  const aws = JSON.parse(
    (await bake(["plan", "--json"], { cwd: dir, env: { DOCKER_HOST: "unix:///nonexistent.sock" } })).stdout,
  ).nodes;
  assert.not.ok(
    aws.some((n: any) => n.name === "bake-local-host"),
    "other targets never build it",
  );
  // Nor does building images: it is built only where a local AMI is baked.
  const built = await bake(["build", "--json"], { cwd: dir });
  assert.is(built.code, 0, built.stderr);
  assert.not.ok("bake-local-host" in JSON.parse(built.stdout).images, "bake build leaves it alone");
});

test("render or ami --target vm of an AMI without vm: exit 2 naming the AMI's line, nothing rendered or built", async () => {
  const dir = await awsFixture();
  for (const command of ["render", "ami"]) {
    const out = path.join(dir, "rendered");
    const r = await bake([command, "host", "--target", "vm", ...(command === "render" ? ["--out", out] : [])], {
      cwd: dir,
      env: motoEnv,
    });
    assert.is(r.code, 2, r.stderr);
    assert.match(r.stderr, /bake\.yml:\d+:\d+: AMI "host" has no vm: disk for --target vm/);
    assert.not.ok(existsSync(out));
    assert.not.ok(existsSync(path.join(dir, ".bake", "ami")), "nothing rendered");
  }
});

test("instance-store without the x509 paths in the environment: exit 2 naming them", async () => {
  const dir = await awsFixture("", "instance-store");
  const r = await bake(["render", "host", "--out", path.join(dir, "o")], { cwd: dir, env: motoEnv });
  assert.is(r.code, 2);
  assert.match(r.stderr, /set BAKE_X509_CERT and BAKE_X509_KEY/);
});

test("an AMI with the same key exists: returned without Packer, tagged, copied to copy_to, shared", async () => {
  const dir = await awsFixture(`    copy_to: [eu-west-1]\n    share_with: ["${SHARE}"]\n`);
  const plan = JSON.parse((await bake(["plan", "--json"], { cwd: dir, env: motoEnv })).stdout).nodes;
  const key = plan.find((n: any) => n.name === "host").key;
  assert.match(key, /^[0-9a-f]{64}$/);
  const existing = await registerAmi(`aws-${suffix}-host-existing`, { "bake:key": key });
  const bin = tempDir("bake-nopacker-");
  symlinkSync("/usr/bin/git", path.join(bin, "git"));
  const r = await bake(["ami", "host", "--json"], {
    cwd: dir,
    env: { ...motoEnv, PATH: bin, BAKE_EC2_POLL_MS: "200" },
  });
  assert.is(r.code, 0, r.stderr);
  const result = JSON.parse(r.stdout);
  assert.is(result.regions["us-east-1"], existing);
  const copy = result.regions["eu-west-1"];
  assert.match(copy, /^ami-[0-9a-f]+$/);
  for (const [region, id] of [
    ["us-east-1", existing],
    ["eu-west-1", copy],
  ]) {
    const ec2 = motoEc2(region);
    const image = (await ec2.send(new DescribeImagesCommand({ ImageIds: [id] }))).Images![0];
    const tags = Object.fromEntries(image.Tags!.map((t) => [t.Key, t.Value]));
    assert.is(tags["bake:key"], key, `${region} bake:key`);
    assert.is(tags["bake:project"], `aws-${suffix}`);
    assert.match(tags["bake:preload"], /^base=[0-9a-f]{12}$/);
    const perms = await ec2.send(new DescribeImageAttributeCommand({ ImageId: id, Attribute: "launchPermission" }));
    assert.equal(
      perms.LaunchPermissions!.map((p) => p.UserId),
      [SHARE],
      `${region} launch permission`,
    );
  }
  const manifest = JSON.parse(readFileSync(path.join(dir, "bake-manifest.json"), "utf8"));
  assert.equal(
    [manifest.amis.host.key, manifest.amis.host.target, manifest.amis.host.regions],
    [key, "aws", { "us-east-1": existing, "eu-west-1": copy }],
  );
  assert.is(
    manifest.amis.host.inputs["ansible:host.yml"],
    createHash("sha256").update("- hosts: all\n  tasks: []\n").digest("hex"),
  );
  // Again: the copy is found by its key, not made twice.
  const again = JSON.parse(
    (await bake(["ami", "host", "--json"], { cwd: dir, env: { ...motoEnv, PATH: bin } })).stdout,
  );
  assert.equal(again.regions, result.regions);
  // A file Ansible reads appears beside the playbook: the plan names it against the last bake.
  mkdirSync(path.join(dir, "group_vars"));
  writeFileSync(path.join(dir, "group_vars/all.yml"), "x: 1\n");
  const host = JSON.parse((await bake(["plan", "--json"], { cwd: dir, env: motoEnv })).stdout).nodes.find(
    (n: any) => n.name === "host",
  );
  assert.equal(
    [host.status, host.reason],
    ["build", `playbook input group_vars/all.yml changed since ${key.slice(0, 12)}`],
  );
});

test("no AWS credentials: exit 2, pointing to --target local", async () => {
  const dir = await awsFixture();
  const r = await bake(["ami", "host"], { cwd: dir });
  assert.is(r.code, 2);
  assert.match(r.stderr, /no AWS credentials.*use --target local/);
});

test("an unknown region: exit 2 naming it", async () => {
  const dir = await awsFixture("    copy_to: [xx-nowhere-1]\n");
  const r = await bake(["ami", "host"], { cwd: dir, env: motoEnv });
  assert.is(r.code, 2, r.stderr);
  assert.match(r.stderr, /unknown AWS region xx-nowhere-1/);
});

test.run();
