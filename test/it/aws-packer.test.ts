/**
 * The AWS path run for real: `bake ami` on the aws target runs Packer's amazon-ebs builder against
 * moto as the EC2 endpoint, with a local systemd container with sshd as the
 * instance Packer reaches on 127.0.0.1 (BAKE_SSH_HOST / BAKE_SSH_PORT). The whole path: source
 * AMI lookup, key pair, security group, RunInstances, SSH, the preload upload, the playbook, the
 * AMI's goss test, CreateImage, tags, bake's copy and share, the manifest; and Packer's clean-up.
 */
import { test } from "uvu";
import * as assert from "uvu/assert";
import { cpSync, mkdirSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import path from "node:path";
import {
  DescribeImagesCommand,
  DescribeInstancesCommand,
  DescribeKeyPairsCommand,
  DescribeSecurityGroupsCommand,
  DescribeImageAttributeCommand,
} from "@aws-sdk/client-ec2";
import { execa } from "execa";
import { createHash } from "node:crypto";
import { bake, CLI, ROOT, tempTree, testEnv, tempDir } from "../helpers/bake.js";
import { busyboxRootfs, docker, removeProject, uniqueProject } from "../helpers/engine.js";
import { motoEc2, motoEnv, resetMoto } from "../helpers/moto.js";
import { ENGINE_SOCKET_IN_HOST, ENGINE_STANDIN, STANDIN_UNITS } from "../../src/host/standin.js";
import { bootHostKeys } from "../../src/host/vm-host.js";
import { HOST_KEY_ALIAS } from "../../src/host/vm-boot-test.js";
import { generateKey, sshRun } from "../../src/tools/ssh.js";

const project = uniqueProject("aws-packer");
let dir = "";
let instance = "";
let sshPort = "";

const INSTANCE_DOCKERFILE = [
  "ARG BAKE_PARENT",
  "FROM ${BAKE_PARENT}",
  // The engine comes with the source, as on an engine-ready AMI (bake's engine role finds it there).
  "RUN apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends systemd-sysv dbus openssh-server sudo python3-apt docker.io apparmor >/dev/null",
  "RUN useradd --create-home --shell /bin/bash admin && echo 'admin ALL=(ALL) NOPASSWD:ALL' > /etc/sudoers.d/admin",
  // EC2 installs the key pair the instance is launched with; the stand-in accepts the key Packer offers.
  "RUN printf '#!/bin/sh\\necho \"$1 $2\"\\n' > /usr/local/bin/offered-key && chmod 755 /usr/local/bin/offered-key",
  "RUN printf 'AuthorizedKeysCommand /usr/local/bin/offered-key %%t %%k\\nAuthorizedKeysCommandUser nobody\\nPubkeyAcceptedAlgorithms +ssh-rsa\\n' > /etc/ssh/sshd_config.d/stand-in.conf && systemctl enable ssh",
  "",
].join("\n");

test.before(async () => {
  // An AMI with this key from an earlier run would make the bake a no-op.
  await resetMoto();
  dir = tempTree({
    "bake.yml": `project: ${project}
images:
  base:
    rootfs:
      debootstrap: { suite: bookworm, variant: minbase, include: [python3, ca-certificates] }
  instance: { parent: base, dockerfile: instance/Dockerfile }
  web:
    parent: base
    dockerfile: web/Dockerfile
    run: { ports: ["8080"], command: [python3, -m, http.server, "8080"], pass_env: [WEB_TOKEN] }
amis:
  host:
    builder: ebs
    region: us-east-1
    copy_to: [eu-west-1]
    share_with: ["123456789012"]
    # One of moto's own images (an EBS root, as Packer requires of a source).
    source: { owners: ["099720109477"], name: "ubuntu/images/hvm-ssd/ubuntu-trusty-14.04-amd64-server-*" }
    instance_type: t3.small
    playbook: ansible/host.yml
    preload: [base]
    test: host.goss.yaml
  # Runs a service: baked in two stages, the release stage from the host stage's AMI.
  app:
    builder: ebs
    region: us-east-1
    source: { owners: ["099720109477"], name: "ubuntu/images/hvm-ssd/ubuntu-trusty-14.04-amd64-server-*" }
    instance_type: t3.small
    playbook: ansible/app.yml
    preload: [base]
    services: [web]
    retention: { keep: 1 }
`,
    "instance/Dockerfile": INSTANCE_DOCKERFILE,
    "web/Dockerfile": "ARG BAKE_PARENT\nFROM ${BAKE_PARENT}\nRUN echo 1 > /release\n",
    "ansible/app.yml":
      '- name: App host\n  hosts: all\n  become: true\n  tasks:\n    - name: Mark the app host\n      ansible.builtin.copy: { dest: /etc/app-host, content: "1\\n", mode: "0644" }\n',
    "ansible/host.yml":
      '- name: Host\n  hosts: all\n  become: true\n  tasks:\n    - name: Mark the host\n      ansible.builtin.copy: { dest: /etc/baked-on-aws, content: "yes\\n", mode: "0644" }\n',
    // The user's playbook ran, and bake's own provisioning kept the shipped images for the loader.
    "host.goss.yaml":
      'file:\n  /etc/baked-on-aws:\n    exists: true\n    contents: ["yes"]\n  /var/lib/bake/preload/images.json:\n    exists: true\n',
  });
  const built = await bake(["build", "instance", "--json"], { cwd: dir });
  assert.is(built.code, 0, built.stderr);
  const image = JSON.parse(built.stdout).images.instance.id;
  // The instance: a systemd host whose sshd answers on a 127.0.0.1 port the engine picks. No engine
  // runs in an unprivileged container: the outer one answers on the host's socket, and bake's
  // stand-in drop-ins (as on the local target) take the place of the engine's units.
  const standin = tempDir("bake-aws-standin-");
  for (const [file, text] of Object.entries(ENGINE_STANDIN)) {
    mkdirSync(path.dirname(path.join(standin, file)), { recursive: true });
    writeFileSync(path.join(standin, file), text);
  }
  instance = (
    await docker.createContainer({
      name: `${project}-instance`,
      Image: image,
      Entrypoint: [""],
      Cmd: ["/sbin/init"],
      Env: ["container=docker"],
      StopSignal: "SIGRTMIN+3",
      Labels: { "bake.project": project },
      ExposedPorts: { "22/tcp": {} },
      HostConfig: {
        Tmpfs: { "/run": "", "/run/lock": "" },
        Binds: [
          "/sys/fs/cgroup:/sys/fs/cgroup:ro",
          `/var/run/docker.sock:${ENGINE_SOCKET_IN_HOST}`,
          ...STANDIN_UNITS.map((u) => `${path.join(standin, u)}:/run/systemd/system/${u}:ro`),
        ],
        PortBindings: { "22/tcp": [{ HostIp: "127.0.0.1", HostPort: "" }] },
      },
    } as any)
  ).id;
  const container = docker.getContainer(instance);
  await container.start();
  sshPort = (await container.inspect()).NetworkSettings.Ports["22/tcp"]![0].HostPort;
});

test.after(async () => {
  if (instance)
    await docker
      .getContainer(instance)
      .remove({ force: true })
      .catch(() => undefined);
  await removeProject(project);
  await removeProject(`${project}-ssh`);
});

const ssh = () => ({ ...motoEnv, BAKE_SSH_HOST: "127.0.0.1", BAKE_SSH_PORT: sshPort, BAKE_EC2_POLL_MS: "200" });
const ec2 = motoEc2();
const leftovers = async () => ({
  keyPairs: ((await ec2.send(new DescribeKeyPairsCommand({}))).KeyPairs ?? [])
    .map((k) => k.KeyName!)
    .filter((n) => n.startsWith("packer")),
  groups: ((await ec2.send(new DescribeSecurityGroupsCommand({}))).SecurityGroups ?? [])
    .map((g) => g.GroupName!)
    .filter((n) => n.startsWith("packer")),
  running: (
    (
      await ec2.send(
        new DescribeInstancesCommand({
          Filters: [{ Name: "instance-state-name", Values: ["pending", "running", "stopping", "stopped"] }],
        }),
      )
    ).Reservations ?? []
  )
    .flatMap((r) => r.Instances ?? [])
    .filter((i) => (i.KeyName ?? "").startsWith("packer"))
    .map((i) => i.InstanceId),
});

test("bake ami on aws: Packer's amazon-ebs run against moto, the playbook and the AMI's test on the instance, then copy, share, manifest", async () => {
  const r = await bake(["ami", "host", "--json"], { cwd: dir, env: ssh() });
  assert.is(r.code, 0, r.stderr.slice(-4000));
  const result = JSON.parse(r.stdout);
  assert.equal(Object.keys(result.regions).sort(), ["eu-west-1", "us-east-1"]);
  const home = (await ec2.send(new DescribeImagesCommand({ ImageIds: [result.regions["us-east-1"]] }))).Images![0];
  assert.is(home.Tags!.find((t) => t.Key === "bake:key")?.Value, result.key);
  assert.match(r.stderr, /Using ssh communicator to connect: 127\.0\.0\.1/);
  assert.match(r.stderr, /TASK \[Mark the host\]/);
  // bake's own provisioning ran on the instance around the user's playbook.
  assert.match(
    r.stderr,
    /TASK \[docker_host : Install the Docker engine\][\s\S]*TASK \[Mark the host\][\s\S]*TASK \[preload : Keep the shipped image archive\]/,
  );
  assert.match(r.stderr, /Count: 3, Failed: 0/, "the AMI's goss test ran on the instance");
  const shared = await motoEc2("eu-west-1").send(
    new DescribeImageAttributeCommand({ ImageId: result.regions["eu-west-1"], Attribute: "launchPermission" }),
  );
  assert.equal(
    (shared.LaunchPermissions ?? []).map((p) => p.UserId),
    ["123456789012"],
  );
  const manifest = JSON.parse(readFileSync(path.join(dir, "bake-manifest.json"), "utf8"));
  assert.equal(manifest.amis.host.regions, result.regions);
  assert.equal(await leftovers(), { keyPairs: [], groups: [], running: [] }, "Packer removed what it made");

  // What is inside: the instance's packages, read from its dpkg database by the last
  // provisioners (and removed from it), and the image it ships.
  const out = path.join(dir, "host.cdx.json");
  const sbom = await bake(["sbom", "host", "--format", "cyclonedx-json", "--out", out], { cwd: dir, env: ssh() });
  assert.is(sbom.code, 0, sbom.stderr);
  const text = readFileSync(out, "utf8");
  assert.is(`sha256:${createHash("sha256").update(text).digest("hex")}`, manifest.amis.host.sbom["cyclonedx-json"]);
  const bom = JSON.parse(text);
  assert.equal(
    bom.metadata.component.properties
      .filter((p: any) => p.name === "bake:ami")
      .map((p: any) => p.value)
      .sort(),
    Object.entries(result.regions)
      .map(([r, id]) => `${r}:${id}`)
      .sort(),
  );
  const host = bom.components.find((c: any) => c["bom-ref"] === "host:host").components.map((c: any) => c.name);
  assert.ok(host.includes("openssh-server") && host.includes("systemd-sysv"), host.join(", "));
  assert.equal(bom.components.map((c: any) => c["bom-ref"]).sort(), ["host:host", "image:base"]);
  const left = await execa("docker", ["exec", instance, "ls", "/var/tmp"]);
  assert.not.match(left.stdout, /bake-packages/, "the archive of the databases is not left on the host");
  const verified = await bake(["verify", "host", "--json"], { cwd: dir, env: ssh() });
  assert.is(verified.code, 0, verified.stdout + verified.stderr);
  assert.equal(
    JSON.parse(verified.stdout).checks.map((c: any) => [c.name, c.ok]),
    [
      ["working tree", true],
      ["ami", true],
      ["manifest", true],
    ],
  );
});

test("a failing playbook: exit 1 naming the step, no AMI registered, nothing of Packer's left in the account", async () => {
  const images = async () =>
    (
      (
        await ec2.send(
          new DescribeImagesCommand({ Owners: ["self"], Filters: [{ Name: "name", Values: [`${project}-host-*`] }] }),
        )
      ).Images ?? []
    ).length;
  const before = await images();
  writeFileSync(
    path.join(dir, "ansible/host.yml"),
    "- name: Host\n  hosts: all\n  tasks:\n    - name: Fail on purpose\n      ansible.builtin.command: /bin/false\n",
  );
  const r = await bake(["ami", "host"], { cwd: dir, env: ssh() });
  assert.is(r.code, 1, r.stderr.slice(-3000));
  assert.match(
    r.stderr,
    /error: host: packer build failed at "Provisioning with Ansible" \(task "Fail on purpose"\) on instance i-[0-9a-f]+ \(exit 1\): /,
  );
  assert.match(
    r.stderr,
    /Packer cleaned up: Terminating the source AWS instance; Cleaning up any extra volumes; Deleting temporary security group; Deleting temporary keypair/,
  );
  assert.is(await images(), before, "no AMI registered");
  assert.equal(await leftovers(), { keyPairs: [], groups: [], running: [] });
});

test("Ctrl-C during the Packer run: exit 130, Packer cleans up, nothing left in the account and no AMI", async () => {
  writeFileSync(
    path.join(dir, "ansible/host.yml"),
    "- name: Host\n  hosts: all\n  tasks:\n    - name: Take a while\n      ansible.builtin.command: sleep 600\n      changed_when: false\n",
  );
  const images = async () =>
    (
      (
        await ec2.send(
          new DescribeImagesCommand({ Owners: ["self"], Filters: [{ Name: "name", Values: [`${project}-host-*`] }] }),
        )
      ).Images ?? []
    ).length;
  const before = await images();
  const child = execa(process.execPath, [CLI, "ami", "host"], { cwd: dir, env: testEnv(ssh()), reject: false });
  let seen = "";
  child.stderr!.on("data", (d) => (seen += d));
  const started = Date.now();
  while (!/TASK \[Take a while\]/.test(seen) && Date.now() - started < 120_000)
    await new Promise((r) => setTimeout(r, 200));
  assert.match(seen, /TASK \[Take a while\]/);
  // Measured from the interrupt: how long the task took to start depends on the machine.
  const interrupted = Date.now();
  child.kill("SIGINT");
  const r = await child;
  assert.is(r.exitCode, 130, String(r.stderr).slice(-2000));
  assert.ok(Date.now() - interrupted < 120_000, "stopped long before the task (600 s) would have ended");
  assert.is(await images(), before, "no AMI registered");
  assert.equal(await leftovers(), { keyPairs: [], groups: [], running: [] });
});

test("instance-store: bake's EC2 AMI tools role on the stand-in host (check mode): refuses without a download, would install with one, skips where the tools are", async () => {
  const run = (extra: string[]) =>
    execa(
      "ansible-playbook",
      [
        "-i",
        `${project}-instance,`,
        "-c",
        "community.docker.docker",
        "--check",
        ...extra,
        path.join(ROOT, "ansible/bake/ec2-ami-tools.yml"),
      ],
      { reject: false, env: { ANSIBLE_HOST_KEY_CHECKING: "False", ANSIBLE_NOCOLOR: "1" } },
    );
  const refused = await run([]);
  assert.is(refused.exitCode, 2, refused.stdout);
  assert.match(
    refused.stdout,
    /the EC2 AMI tools \(ec2-bundle-vol\) are not on this instance[\s\S]*BAKE_EC2_AMI_TOOLS_URL/,
  );
  // The download, served inside the host on its own 127.0.0.1 (check mode asks for it, downloads nothing).
  const inHost = async (cmd: string) => {
    const exec = await docker
      .getContainer(instance)
      .exec({ Cmd: ["sh", "-c", cmd], AttachStdout: true, AttachStderr: true });
    const stream = await exec.start({});
    let out = "";
    stream.on("data", (c: Buffer) => (out += c.toString("utf8")));
    await new Promise((r) => stream.on("end", r));
    return out.replace(/[\x00-\x08]/g, "");
  };
  await inHost(
    `mkdir -p /srv && python3 -c "import zipfile; z = zipfile.ZipFile('/srv/ec2-ami-tools.zip', 'w'); z.writestr('ec2-ami-tools-1.5.19/bin/ec2-bundle-vol', '#!/bin/sh\\n'); z.close()"`,
  );
  const sha256 = /[0-9a-f]{64}/.exec(await inHost("sha256sum /srv/ec2-ami-tools.zip"))![0];
  await inHost("(python3 -m http.server 8765 --bind 127.0.0.1 --directory /srv >/dev/null 2>&1 &) ; sleep 1");
  const planned = await run([
    "-e",
    "ec2_ami_tools_url=http://127.0.0.1:8765/ec2-ami-tools.zip",
    "-e",
    `ec2_ami_tools_sha256=${sha256}`,
  ]);
  assert.is(planned.exitCode, 0, planned.stdout);
  assert.match(
    planned.stdout,
    /TASK \[ec2_ami_tools : Download the tools, checked against their sha256\] \*+\nchanged:/,
  );
  assert.match(
    await inHost("ls /usr/local/bin/ec2-bundle-vol 2>&1 || true"),
    /No such file/,
    "check mode changed nothing",
  );
  await inHost("printf '#!/bin/sh\\n' > /usr/local/bin/ec2-bundle-vol && chmod 755 /usr/local/bin/ec2-bundle-vol");
  const skipped = await run([]);
  assert.is(skipped.exitCode, 0, skipped.stdout);
  assert.match(skipped.stdout, /TASK \[ec2_ami_tools : Know where to download them from\] \*+\nskipping:/);
});

test("two runners, one account: the second bake of a key waits on the AWS lease, naming the holder, and returns the first one's AMI", async () => {
  writeFileSync(
    path.join(dir, "ansible/host.yml"),
    '- name: Host\n  hosts: all\n  become: true\n  tasks:\n    - name: Mark the host\n      ansible.builtin.copy: { dest: /etc/baked-on-aws, content: "yes\\n", mode: "0644" }\n    - name: Take a moment\n      ansible.builtin.pause: { seconds: 3 }\n',
  );
  const second = `${dir}-runner-2`;
  cpSync(dir, second, { recursive: true, filter: (src) => !src.includes(`${path.sep}.bake${path.sep}`) });
  // Each runner has its own machine (its own lock folder): only the account's lease is shared.
  const runner = (cwd: string, n: number) =>
    execa(process.execPath, [CLI, "ami", "host", "--json"], {
      cwd,
      env: testEnv({ ...ssh(), BAKE_CACHE_DIR: path.join(cwd, `.runner-${n}-cache`) }),
      reject: false,
      timeout: 300_000,
    });
  const first = runner(dir, 1);
  let seen = "";
  first.stderr!.on("data", (d) => (seen += d));
  while (!/Creating temporary keypair/.test(seen)) await new Promise((r) => setTimeout(r, 100));
  const [a, b] = await Promise.all([first, runner(second, 2)]);
  assert.is(a.exitCode, 0, String(a.stderr).slice(-2000));
  assert.is(b.exitCode, 0, String(b.stderr).slice(-2000));
  assert.equal(JSON.parse(String(b.stdout)).regions, JSON.parse(String(a.stdout)).regions, "the same AMI");
  assert.match(
    String(b.stderr),
    new RegExp(
      `waiting for the AWS lease bake-lease-${project}-host-[0-9a-f]{12}: held by \\S+ pid ${first.pid} until `,
    ),
  );
  assert.match(String(b.stderr), /another bake finished key [0-9a-f]{12} while this one waited: ami-/);
  assert.not.match(String(b.stderr), /packer build/, "the second runner never started Packer");
  const lease = ((await ec2.send(new DescribeKeyPairsCommand({}))).KeyPairs ?? []).filter((k) =>
    k.KeyName!.startsWith("bake-lease-"),
  );
  assert.equal(lease, [], "the lease is released");
});

test("SSH pinned to a host key bake made refuses an sshd with another key before any command runs (a process that took a VM's port)", async () => {
  // The stand-in's sshd answers on 127.0.0.1 with host keys of its own, as anything that took the
  // port a VM's SSH is forwarded from would.
  const boot = tempDir("bake-pin-");
  try {
    const pinned = await bootHostKeys(boot);
    const client = path.join(boot, "id_ed25519");
    await generateKey(client, "bake-test");
    const r = await sshRun(
      { port: Number(sshPort), key: client, user: "root", knownHosts: pinned.knownHosts, hostKeyAlias: HOST_KEY_ALIAS },
      "touch /etc/bake-pin-ran",
      { timeoutMs: 20_000 },
    );
    assert.is(r.code, 255, r.out);
    assert.match(r.out, /Host key verification failed|REMOTE HOST IDENTIFICATION HAS CHANGED/);
    const ran = await docker.getContainer(instance).exec({ Cmd: ["test", "-e", "/etc/bake-pin-ran"] });
    await new Promise<void>((resolve, reject) =>
      ran.start({}, (e: any, stream: any) => (e ? reject(e) : stream.on("end", resolve).resume())),
    );
    assert.is.not((await ran.inspect()).ExitCode, 0, "no command ran on the other host");
  } finally {
    rmSync(boot, { recursive: true, force: true });
  }
});

test("the engine over ssh:// (the stand-in's sshd, whose docker CLI reaches this engine): builds keep BuildKit with a session; a refused key or no sshd is exit 1 naming ssh and the fix, nothing tagged", async () => {
  // The user's ssh configuration, as ~/.ssh/config would hold it: a key, and this host's key taken
  // on first use. A wrapper first on PATH stands for it; bake runs `ssh` as the docker CLI does.
  const home = tempDir("bake-ssh-engine-");
  const key = path.join(home, "id_ed25519");
  await generateKey(key, "bake-ssh-engine");
  writeFileSync(
    path.join(home, "config"),
    `Host *\n  IdentityFile ${key}\n  IdentitiesOnly yes\n  StrictHostKeyChecking no\n  UserKnownHostsFile /dev/null\n  LogLevel ERROR\n`,
  );
  mkdirSync(path.join(home, "bin"));
  writeFileSync(path.join(home, "bin", "ssh"), `#!/bin/sh\nexec /usr/bin/ssh -F ${home}/config "$@"\n`, {
    mode: 0o755,
  });
  const PATH = `${path.join(home, "bin")}:${process.env.PATH}`;
  const token = `over-ssh-${project}`;
  const dir = tempTree({
    "bake.yml": `project: ${project}-ssh\nimages:\n  base: { rootfs: { tar: ${await busyboxRootfs()} } }\n  svc:\n    parent: base\n    dockerfile: svc/Dockerfile\n    secrets: { token: { env: SSH_TOKEN } }\n`,
    "svc/Dockerfile": `ARG BAKE_PARENT\nFROM \${BAKE_PARENT}\nRUN --mount=type=secret,id=token echo ${project} && wc -c < /run/secrets/token > /token.len\nRUN --mount=type=cache,id=${project}-ssh,target=/cache echo kept > /cache/run && ls /cache > /cache.seen\nCOPY ssh.txt /\n`,
    "svc/ssh.txt": "over ssh\n",
  });
  const host = `ssh://root@127.0.0.1:${sshPort}`;
  // FORCE_COLOR (set by the test runner) beside NO_COLOR makes Node warn on stderr's first line.
  const env = { DOCKER_HOST: host, PATH, SSH_TOKEN: token, FORCE_COLOR: undefined };
  const doctor = await bake(["doctor"], { cwd: dir, env });
  assert.match(
    doctor.stdout,
    new RegExp(
      `docker engine +[^\\n]* at ssh://root@127\\.0\\.0\\.1:${sshPort} \\(ssh\\); builds through BuildKit with a session`,
    ),
    doctor.stdout,
  );
  const r = await bake(["build", "--json"], { cwd: dir, env });
  assert.is(r.code, 0, r.stderr);
  const images = JSON.parse(r.stdout).images;
  assert.equal([images.base.action, images.svc.action], ["built", "built"]);
  const logs = path.join(dir, ".bake", "logs");
  assert.match(
    readFileSync(path.join(logs, readdirSync(logs).sort().pop()!, "svc.log"), "utf8"),
    `building through BuildKit with a session (${host}, ssh)`,
  );
  // The same engine through its socket: the image and its key; the secret reached the step, not the image.
  assert.is((await docker.getImage(images.svc.id).inspect()).Config.Labels["bake.key"], images.svc.key);
  const seen = await execa("docker", ["run", "--rm", images.svc.id, "sh", "-c", "cat /token.len /cache.seen /ssh.txt"]);
  assert.equal(
    seen.stdout.split("\n").map((l) => l.trim()),
    [String(token.length), "run", "over ssh"],
  );
  assert.not.match(r.stdout + r.stderr, token);
  // Refused and unreachable: one line naming ssh and what to fix; nothing built or tagged.
  writeFileSync(path.join(dir, "svc/ssh.txt"), "changed\n");
  const tags = async () =>
    (await docker.listImages({ filters: JSON.stringify({ label: [`bake.project=${project}-ssh`] }) }))
      .flatMap((i) => i.RepoTags ?? [])
      .sort();
  const before = await tags();
  const refused = await bake(["build"], {
    cwd: dir,
    env: { ...env, DOCKER_HOST: `ssh://nobody-here@127.0.0.1:${sshPort}` },
  });
  assert.is(refused.code, 1, refused.stderr);
  assert.match(
    refused.stderr,
    new RegExp(
      `^error: docker engine at ssh://nobody-here@127\\.0\\.0\\.1:${sshPort} over ssh: the ssh server refused bake's key: add the public key to the user's authorized_keys there, or load the key into ssh-agent \\(ssh: [^\\n]*Permission denied`,
    ),
    refused.stderr,
  );
  const closed = await bake(["build"], { cwd: dir, env: { ...env, DOCKER_HOST: "ssh://root@127.0.0.1:1" } });
  assert.is(closed.code, 1, closed.stderr);
  assert.match(
    closed.stderr,
    /^error: docker engine at ssh:\/\/root@127\.0\.0\.1:1 over ssh: ssh could not connect: check the host and port in DOCKER_HOST/,
    closed.stderr,
  );
  for (const run of [refused, closed]) assert.not.match(run.stderr, /\n\s+at /, "no stack trace");
  assert.equal(await tags(), before, "nothing tagged");
  rmSync(home, { recursive: true, force: true });
});

test("staged on aws: the release stage runs on an instance of the host stage's AMI; a release-only change runs it alone, a playbook change both", async () => {
  const plan = async () =>
    JSON.parse((await bake(["plan", "app", "--json"], { cwd: dir, env: ssh() })).stdout).nodes.find(
      (n: any) => n.name === "app",
    );
  const image = async (id: string) => {
    const i = (await ec2.send(new DescribeImagesCommand({ ImageIds: [id] }))).Images![0];
    return Object.fromEntries(i.Tags!.map((t) => [t.Key, t.Value]));
  };
  // The two Packer runs of a bake, as bake's own lines divide its output.
  const runs = (stderr: string) => {
    const at = stderr.indexOf("stage release: packer build");
    assert.ok(at > 0, stderr.slice(-3000));
    return { host: stderr.slice(0, at), release: stderr.slice(at) };
  };
  const inInstance = async (command: string) => (await execa("docker", ["exec", instance, "sh", "-c", command])).stdout;

  // 1. The first bake: the host stage from the source, then the release stage from its AMI.
  const first = await bake(["ami", "app", "--json"], { cwd: dir, env: ssh() });
  assert.is(first.code, 0, first.stderr.slice(-4000));
  const one = runs(first.stderr);
  assert.match(one.host, /TASK \[docker_host : Install the Docker engine\][\s\S]*TASK \[Mark the app host\]/);
  assert.match(one.host, /stage host: ami-[0-9a-f]+ in us-east-1\n/);
  assert.not.match(one.release, /TASK \[docker_host|TASK \[bake_agent|TASK \[Mark the app host\]/);
  assert.match(one.release, /TASK \[preload : Keep the shipped image archive\][\s\S]*TASK \[service : /);
  const firstAmi = JSON.parse(first.stdout).regions["us-east-1"];
  const releaseTags = await image(firstAmi);
  const hostAmi = releaseTags["bake:source-ami"];
  const hostTags = await image(hostAmi);
  const stages = (await plan()).stages;
  assert.equal(
    [releaseTags["bake:key"], releaseTags["bake:ami"], releaseTags["bake:stage"]],
    [JSON.parse(first.stdout).key, "app", undefined],
  );
  assert.equal(
    [hostTags["bake:key"], hostTags["bake:ami"], hostTags["bake:stage"]],
    [stages[0].key, "app@host", "host"],
  );
  assert.equal(
    stages.map((x: any) => [x.name, x.status]),
    [
      ["host", "cached"],
      ["release", "cached"],
    ],
  );
  // The release archive holds the release's layers only: none of the host stage's archive's.
  const blobs = async (tar: string) =>
    (await inInstance(`tar -tf /var/lib/bake/preload/${tar}`))
      .split("\n")
      .filter((f) => /(^blobs\/|\/layer\.tar$)/.test(f));
  const [hostBlobs, releaseBlobs] = [await blobs("images.tar"), await blobs("release.tar")];
  assert.ok(releaseBlobs.length > 0 && hostBlobs.length > 0, `${hostBlobs} / ${releaseBlobs}`);
  assert.equal(
    releaseBlobs.filter((b) => hostBlobs.includes(b)),
    [],
  );
  const [hostBytes, releaseBytes] = (
    await inInstance("stat -c %s /var/lib/bake/preload/images.tar /var/lib/bake/preload/release.tar")
  )
    .split("\n")
    .map(Number);
  assert.ok(releaseBytes * 20 < hostBytes, `release.tar ${releaseBytes} bytes, images.tar ${hostBytes}`);
  const contract = JSON.parse(await inInstance(`cat /etc/bake/services/${project}-web.json`));
  assert.equal(contract.pass_env, ["WEB_TOKEN"]);
  const manifest = JSON.parse(readFileSync(path.join(dir, "bake-manifest.json"), "utf8"));
  assert.equal(
    manifest.amis.app.stages.map((x: any) => [x.name, x.key]),
    [["host", hostTags["bake:key"]]],
  );

  // 2. A release-only change: the host stage's AMI is reused, the release stage alone runs.
  writeFileSync(path.join(dir, "web/Dockerfile"), "ARG BAKE_PARENT\nFROM ${BAKE_PARENT}\nRUN echo 2 > /release\n");
  assert.equal(
    (await plan()).stages.map((x: any) => [x.name, x.status, x.reason]),
    [
      ["host", "cached", `${hostAmi} in us-east-1 has this key: reused`],
      ["release", "build", (await plan()).stages[1].reason],
    ],
  );
  const second = await bake(["ami", "app", "--json"], { cwd: dir, env: ssh() });
  assert.is(second.code, 0, second.stderr.slice(-4000));
  assert.match(second.stderr, new RegExp(`stage host: ${hostAmi} in us-east-1 has this key: reused`));
  assert.is(second.stderr.match(/packer build /g)?.length, 1, "one Packer run");
  assert.not.match(second.stderr, /TASK \[docker_host|TASK \[bake_agent|TASK \[Mark the app host\]/);
  const secondAmi = JSON.parse(second.stdout).regions["us-east-1"];
  assert.is.not(secondAmi, firstAmi);
  assert.is((await image(secondAmi))["bake:source-ami"], hostAmi);

  // 3. The bottom stage moves (the playbook): both stages bake, the release on the new host stage.
  writeFileSync(
    path.join(dir, "ansible/app.yml"),
    '- name: App host\n  hosts: all\n  become: true\n  tasks:\n    - name: Mark the app host\n      ansible.builtin.copy: { dest: /etc/app-host, content: "2\\n", mode: "0644" }\n',
  );
  const moved = (await plan()).stages;
  assert.equal(
    moved.map((x: any) => [x.name, x.status]),
    [
      ["host", "build"],
      ["release", "build"],
    ],
  );
  assert.match(moved[0].reason, /^playbook input app\.yml changed since [0-9a-f]{12}$/, moved[0].reason);
  const third = await bake(["ami", "app", "--json"], { cwd: dir, env: ssh() });
  assert.is(third.code, 0, third.stderr.slice(-4000));
  const three = runs(third.stderr);
  assert.match(three.host, /TASK \[Mark the app host\]/);
  const thirdAmi = JSON.parse(third.stdout).regions["us-east-1"];
  const newHost = (await image(thirdAmi))["bake:source-ami"];
  assert.is.not(newHost, hostAmi);
  assert.is((await image(newHost))["bake:key"], moved[0].key);
  assert.equal(await leftovers(), { keyPairs: [], groups: [], running: [] }, "Packer removed what it made");

  // Retention (keep: 1): the older release AMIs go, and the host stage AMI only they stood on.
  const decisions = JSON.parse((await bake(["prune", "--json"], { cwd: dir, env: ssh() })).stdout).decisions.filter(
    (d: any) => d.kind === "ami" && d.name.startsWith("app"),
  );
  const decided = (id: string) => decisions.find((d: any) => d.id === id)?.action;
  assert.equal(
    [decided(thirdAmi), decided(secondAmi), decided(firstAmi), decided(newHost), decided(hostAmi)],
    ["keep", "remove", "remove", "keep", "remove"],
  );
  assert.match(decisions.find((d: any) => d.id === hostAmi).reason, /no AMI kept was baked on it/);
});

test.run();
