/** The vm target's pure parts: QEMU's, SSH's and debugfs's argument lists, the disk's files and digest. */
import { test } from "uvu";
import * as assert from "uvu/assert";
import { existsSync, mkdirSync, mkdtempSync, readFileSync, readlinkSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { KERNEL_CMDLINE, probeArgs, vmArgs } from "../../src/tools/qemu.js";
import { forwardArgs, knownHostsLine, masterArgs, sshArgs } from "../../src/tools/ssh.js";
import { mkfsArgs, writeRequests } from "../../src/tools/ext4.js";
import { prepareRootfs } from "../../src/host/vm-disk.js";
import { VM_ROOTFS_FILES, vmDiskDigest } from "../../src/graph/vm-disk-spec.js";
import type { VmSpec } from "../../src/config/model.js";
import { runtimeEnvFile } from "../../src/host/boot-test.js";
import { bootCopy, bootHostKeys } from "../../src/host/vm-host.js";
import { SSH_UNREACHED, startVmForwardingSsh } from "../../src/host/vm-boot-test.js";
import { freePort } from "../../src/tools/ports.js";
import { statSync } from "node:fs";
import { execa } from "execa";
import { randomBytes } from "node:crypto";
import { planVmRetention, planVmStageRetention } from "../../src/prune/plan.js";
import { copyOut, readLink } from "../../src/tools/ext4.js";
import { diskOnBelow } from "../../src/host/vm-disk.js";
import { HOST_PATHS, releaseFiles } from "../../src/targets/release-stage.js";
import type { AnsibleVars } from "../../src/ami/context.js";
import { parse as parseYaml } from "yaml";
import { ROOT } from "../helpers/bake.js";

test("QEMU: the disk's kernel booted directly, no display, every forward on 127.0.0.1 only", () => {
  const args = vmArgs({
    disk: "/d/disk.raw",
    format: "raw",
    kernel: "/d/vmlinuz",
    initrd: "/d/initrd.img",
    append: KERNEL_CMDLINE,
    memory: 2048,
    cpus: 2,
    accelerator: "tcg",
    forwards: [
      { host: 40022, guest: 22 },
      { host: 40080, guest: 8080 },
    ],
    serialLog: "/d/serial.log",
    pidFile: "/d/qemu.pid",
  });
  assert.equal(args, [
    "-machine",
    "q35,accel=tcg",
    "-cpu",
    "max",
    "-smp",
    "2",
    "-m",
    "2048",
    "-kernel",
    "/d/vmlinuz",
    "-initrd",
    "/d/initrd.img",
    "-append",
    "root=/dev/vda rw console=ttyS0 panic=10",
    "-drive",
    "file=/d/disk.raw,if=virtio,format=raw,cache=unsafe",
    "-netdev",
    "user,id=net0,hostfwd=tcp:127.0.0.1:40022-:22,hostfwd=tcp:127.0.0.1:40080-:8080",
    "-device",
    "virtio-net-pci,netdev=net0",
    "-display",
    "none",
    "-monitor",
    "none",
    "-serial",
    "file:/d/serial.log",
    "-pidfile",
    "/d/qemu.pid",
  ]);
  assert.ok(
    vmArgs({
      disk: "d",
      format: "qcow2",
      kernel: "k",
      initrd: "i",
      append: "a",
      memory: 1,
      cpus: 1,
      accelerator: "kvm",
      forwards: [],
      serialLog: "s",
      pidFile: "p",
    }).includes("host"),
  );
  // A comma in the project's path is doubled, as QEMU's option syntax asks.
  assert.ok(
    vmArgs({
      disk: "/home/a,b/.bake/vm/x/boot-1/disk.raw",
      format: "raw",
      kernel: "k",
      initrd: "i",
      append: "a",
      memory: 1,
      cpus: 1,
      accelerator: "tcg",
      forwards: [],
      serialLog: "s",
      pidFile: "p",
    }).includes("file=/home/a,,b/.bake/vm/x/boot-1/disk.raw,if=virtio,format=raw,cache=unsafe"),
  );
});

test("the accelerator probe: a kernel with no root disk, and QEMU exits when it panics", () => {
  assert.equal(probeArgs("/k", "kvm", "/s.log"), [
    "-machine",
    "q35,accel=kvm",
    "-m",
    "256",
    "-no-reboot",
    "-display",
    "none",
    "-monitor",
    "none",
    "-serial",
    "file:/s.log",
    "-kernel",
    "/k",
    "-append",
    "console=ttyS0 panic=-1 root=/dev/bake-probe-none",
  ]);
});

test("SSH: only the pinned host key, the bake's key only, 127.0.0.1 and the forwarded port; forwards to a Unix socket", () => {
  const t = {
    port: 40022,
    key: "/d/id_ed25519",
    user: "root",
    knownHosts: "/d/boot-1/known_hosts",
    hostKeyAlias: "bake-boot-test",
  };
  const args = sshArgs(t, "systemctl is-system-running");
  assert.equal(args.slice(-3), ["root@127.0.0.1", "--", "systemctl is-system-running"]);
  for (const o of [
    "BatchMode=yes",
    "StrictHostKeyChecking=yes",
    "UserKnownHostsFile=/d/boot-1/known_hosts",
    "GlobalKnownHostsFile=/dev/null",
    "HostKeyAlias=bake-boot-test",
    "HostKeyAlgorithms=ssh-ed25519",
    "IdentitiesOnly=yes",
  ])
    assert.ok(args.includes(o), o);
  assert.not.ok(args.some((a) => /StrictHostKeyChecking=no|UserKnownHostsFile=\/dev\/null/.test(a)));
  assert.equal(args.slice(args.indexOf("-i"), args.indexOf("-i") + 4), ["-i", "/d/id_ed25519", "-p", "40022"]);
  const fwd = forwardArgs(t, "/tmp/bake-probe-x/http.sock", 8080);
  assert.equal(fwd.slice(-6), [
    "ExitOnForwardFailure=yes",
    "-o",
    "StreamLocalBindUnlink=yes",
    "-L",
    "/tmp/bake-probe-x/http.sock:127.0.0.1:8080",
    "root@127.0.0.1",
  ]);
  assert.equal(
    knownHostsLine("bake-boot-test", "ssh-ed25519 AAAAC3Nza bake-boot-test\n"),
    "bake-boot-test ssh-ed25519 AAAAC3Nza\n",
  );
});

test("a boot's host keys: every type sshd would make at first boot, made for it; the ed25519 one pinned in a known_hosts only its user reads", async () => {
  const dir = mkdtempSync(path.join(tmpdir(), "bake-vm-pin-"));
  const key = await bootHostKeys(dir);
  assert.match(key.publicKey, /^ssh-ed25519 \S+ bake-boot-test\n$/);
  assert.equal(
    key.files.map((f) => [f.path, f.mode]),
    ["rsa", "ecdsa", "ed25519"].flatMap((t) => [
      [`/etc/ssh/ssh_host_${t}_key`, 0o600],
      [`/etc/ssh/ssh_host_${t}_key.pub`, 0o644],
    ]),
  );
  for (const [t, type] of [
    ["rsa", "ssh-rsa"],
    ["ecdsa", "ecdsa-sha2-nistp256"],
    ["ed25519", "ssh-ed25519"],
  ]) {
    assert.match(readFileSync(path.join(dir, `ssh_host_${t}_key`), "utf8"), /BEGIN OPENSSH PRIVATE KEY/);
    assert.is(statSync(path.join(dir, `ssh_host_${t}_key`)).mode & 0o777, 0o600);
    const pub = key.files.find((f) => f.path === `/etc/ssh/ssh_host_${t}_key.pub`)!;
    assert.match(String("content" in pub && pub.content), new RegExp(`^${type} `));
  }
  assert.is(readFileSync(key.knownHosts, "utf8"), `bake-boot-test ${key.publicKey.split(" ").slice(0, 2).join(" ")}\n`);
  assert.is(statSync(key.knownHosts).mode & 0o777, 0o600);
  rmSync(dir, { recursive: true, force: true });
});

test("QEMU whose SSH port another process took first starts again on another port (no race between picking and binding)", async () => {
  const { createServer } = await import("node:net");
  const taken = createServer();
  await new Promise<void>((r) => taken.listen(0, "127.0.0.1", r));
  const takenPort = (taken.address() as { port: number }).port;
  const picked: number[] = [];
  const dir = mkdtempSync(path.join(tmpdir(), "bake-vm-port-"));
  try {
    // A kernel that does not exist: QEMU sets up its network first, so the taken port fails it
    // at once, and on a free port it gets as far as the kernel and exits for that reason.
    const vm = {
      disk: path.join(dir, "disk.raw"),
      format: "raw" as const,
      kernel: path.join(dir, "no-kernel"),
      initrd: path.join(dir, "no-initrd"),
      append: KERNEL_CMDLINE,
      memory: 64,
      cpus: 1,
      accelerator: "tcg" as const,
      serialLog: path.join(dir, "serial.log"),
      pidFile: path.join(dir, "qemu.pid"),
    };
    writeFileSync(vm.disk, Buffer.alloc(1024));
    const started = await startVmForwardingSsh(vm, 5, async () => {
      const port = picked.length ? await freePort() : takenPort;
      picked.push(port);
      return port;
    });
    const ended = await started.vm.exited;
    assert.is(picked.length, 2, "a second port after the first was taken");
    assert.is(started.port, picked[1]);
    assert.match(ended.stderrTail, /kernel/, "the second start got past the network");
  } finally {
    taken.close();
    rmSync(dir, { recursive: true, force: true });
  }
});

test("e2fsprogs: mkfs.ext4 fills the image from the folder; debugfs requests make folders, write, set mode and owner", () => {
  assert.equal(mkfsArgs("/r", "/d/disk.raw", "4G"), [
    "-q",
    "-F",
    "-t",
    "ext4",
    "-L",
    "bake-root",
    "-d",
    "/r",
    "/d/disk.raw",
    "4G",
  ]);
  assert.equal(
    writeRequests([{ path: "/root/.ssh/authorized_keys", local: "/t/f0", mode: 0o600 }], { "/root/.ssh": 0o700 }),
    [
      "mkdir /root",
      "mkdir /root/.ssh",
      "set_inode_field /root/.ssh mode 040700",
      "rm /root/.ssh/authorized_keys",
      "write /t/f0 /root/.ssh/authorized_keys",
      "set_inode_field /root/.ssh/authorized_keys mode 0100600",
      "set_inode_field /root/.ssh/authorized_keys uid 0",
      "set_inode_field /root/.ssh/authorized_keys gid 0",
    ],
  );
});

test("a debootstrapped folder becomes a VM host: fstab, DHCP, resolver, host keys made at first boot, units enabled", () => {
  const dir = mkdtempSync(path.join(tmpdir(), "bake-vm-rootfs-"));
  mkdirSync(path.join(dir, "etc/ssh"), { recursive: true });
  writeFileSync(path.join(dir, "etc/ssh/ssh_host_ed25519_key"), "shared by every disk of the spec");
  writeFileSync(path.join(dir, "etc/machine-id"), "6c917bb8fbf24a8eb92125a0c54b27cf\n");
  prepareRootfs(dir);
  assert.match(readFileSync(path.join(dir, "etc/fstab"), "utf8"), /^\/dev\/vda \/ ext4/m);
  assert.equal(readFileSync(path.join(dir, "etc/machine-id"), "utf8"), "");
  assert.not.ok(existsSync(path.join(dir, "etc/ssh/ssh_host_ed25519_key")));
  assert.equal(
    readlinkSync(path.join(dir, "etc/systemd/system/multi-user.target.wants/systemd-networkd.service")),
    "/lib/systemd/system/systemd-networkd.service",
  );
  assert.match(
    readFileSync(path.join(dir, "etc/systemd/system/ssh.service.d/bake-host-keys.conf"), "utf8"),
    /ExecStartPre=\/usr\/bin\/ssh-keygen -A/,
  );
  rmSync(dir, { recursive: true, force: true });
});

test("the disk's digest follows its spec, its size and bake's files", () => {
  const vm = (include: string[], diskSize = "4G"): VmSpec => ({
    rootfs: { debootstrap: { suite: "bookworm", include } },
    diskSize,
    memory: 2048,
    cpus: 2,
    position: { file: "bake.yml", line: 1, column: 1 },
  });
  const a = vmDiskDigest(vm(["python3"]));
  assert.equal(
    vmDiskDigest({ ...vm(["python3"]), memory: 4096, cpus: 4 }),
    a,
    "memory and CPUs are how it runs, not what it is",
  );
  assert.is.not(vmDiskDigest(vm(["python3", "curl"])), a);
  assert.is.not(vmDiskDigest(vm(["python3"], "8G")), a);
  assert.ok(Object.keys(VM_ROOTFS_FILES).includes("etc/resolv.conf"));
});

test("a VM host's runtime environment holds the pass_env values only (its own engine: no namespace)", () => {
  assert.equal(runtimeEnvFile({ B: "2", A: "x=y" }), "A=x=y\nB=2\n");
  assert.match(runtimeEnvFile({}, "bake-boot-1"), /BAKE_NAMESPACE=bake-boot-1\nBAKE_PUBLISH=ephemeral/);
});

/** A VM disk folder of `node` as prune reads it: made on day `day`, `mib` big. */
const vmFolder =
  (node: string, mib: number) =>
  (key: string | undefined, day: number, inUse = false) => ({
    path: `/p/.bake/vm/${node}-${(key ?? "unfinished000").slice(0, 12)}`,
    key,
    created: `2026-12-0${day}T00:00:00.000Z`,
    bytes: mib * 2 ** 20,
    inUse,
  });

test("prune keeps a vm disk with the current key, the newest `keep` and any a bake holds; removes unfinished ones", () => {
  const disk = vmFolder("host", 512);
  const decisions = planVmRetention(
    "host",
    [
      disk("a".repeat(64), 1),
      disk("b".repeat(64), 2),
      disk("c".repeat(64), 3),
      disk(undefined, 4),
      disk("d".repeat(64), 5, true),
    ],
    1,
    "a".repeat(64),
  );
  assert.equal(
    decisions.map((d) => [d.key.slice(0, 1), d.action, d.reason]),
    [
      ["d", "keep", "a bake is using it (512 MiB)"],
      ["", "remove", "left by a bake that did not finish (512 MiB)"],
      ["c", "keep", "one of the newest 1"],
      ["b", "remove", "older than the newest 1 (512 MiB)"],
      ["a", "keep", "carries the current key"],
    ],
  );
  assert.ok(decisions.every((d) => d.kind === "vm" && d.where === "local"));
});

test("the boot copy that will carry the secrets: its folder 0700 and the disk 0600 from creation, whatever the umask", async () => {
  const dir = mkdtempSync(path.join(tmpdir(), "bake-bootcopy-"));
  const old = process.umask(0o022);
  try {
    const disk = path.join(dir, "disk.qcow2");
    await execa("qemu-img", ["create", "-q", "-f", "qcow2", disk, "1M"]);
    const raw = await bootCopy(disk, path.join(dir, "boot-abc"));
    assert.is(statSync(path.join(dir, "boot-abc")).mode & 0o777, 0o700);
    assert.is(statSync(raw).mode & 0o777, 0o600);
    assert.is(statSync(raw).size, 1 << 20);
  } finally {
    process.umask(old);
    rmSync(dir, { recursive: true, force: true });
  }
});

test("debugfs requests for a link: its folders, then the link replacing whatever stood there", () => {
  assert.equal(writeRequests([], {}, [{ path: "/etc/w/a@b.service", target: "/etc/a@.service" }]), [
    "mkdir /etc",
    "mkdir /etc/w",
    "rm /etc/w/a@b.service",
    "symlink /etc/w/a@b.service /etc/a@.service",
  ]);
});

test("a disk written on the disk below: a qcow2 whose backing file is the stage below's, holding only the files written", async () => {
  const dir = mkdtempSync(path.join(tmpdir(), "bake-overlay-"));
  try {
    const raw = path.join(dir, "base.raw");
    await execa("truncate", ["-s", "64M", raw]);
    await execa("mkfs.ext4", ["-q", "-F", raw]);
    // The stage below holds data of its own (16 MiB that must not be copied into the disk above).
    writeFileSync(path.join(dir, "below.bin"), randomBytes(16 << 20));
    await execa("debugfs", ["-w", "-R", `write ${path.join(dir, "below.bin")} /below.bin`, raw]);
    mkdirSync(path.join(dir, "app@host-1"));
    mkdirSync(path.join(dir, "app-2"));
    const below = path.join(dir, "app@host-1", "disk.qcow2");
    await execa("qemu-img", ["convert", "-f", "raw", "-O", "qcow2", raw, below]);
    const archive = path.join(dir, "release.tar");
    writeFileSync(archive, Buffer.alloc(3 << 20, 7));
    const out = path.join(dir, "app-2", "disk.qcow2");
    await diskOnBelow(below, out, {
      files: [
        { path: "/var/lib/bake/preload/release.tar", from: archive, mode: 0o644 },
        { path: "/etc/bake/services/p-app.json", content: "{}\n", mode: 0o644 },
      ],
      links: [
        {
          path: "/etc/systemd/system/multi-user.target.wants/bake-service@p-app.service",
          target: "/etc/systemd/system/bake-service@.service",
        },
      ],
    });
    const info = JSON.parse((await execa("qemu-img", ["info", "--output=json", out])).stdout);
    assert.is(info["backing-filename"], "../app@host-1/disk.qcow2", "named relative to its folder");
    assert.is(info["backing-filename-format"], "qcow2");
    assert.ok(statSync(out).size < 5 << 20, `${statSync(out).size} bytes: only what was written (3 MiB)`);
    assert.not.ok(existsSync(`${out}.raw`), "no raw copy left");
    // Read back through the chain, as a boot copy is made.
    const back = path.join(dir, "back.raw");
    await execa("qemu-img", ["convert", "-f", "qcow2", "-O", "raw", out, back]);
    await copyOut(back, "/var/lib/bake/preload/release.tar", path.join(dir, "out.tar"));
    assert.ok(readFileSync(path.join(dir, "out.tar")).equals(readFileSync(archive)));
    await copyOut(back, "/below.bin", path.join(dir, "below.out"));
    assert.ok(
      readFileSync(path.join(dir, "below.out")).equals(readFileSync(path.join(dir, "below.bin"))),
      "the stage below's files",
    );
    assert.is(
      await readLink(back, "/etc/systemd/system/multi-user.target.wants/bake-service@p-app.service"),
      "/etc/systemd/system/bake-service@.service",
    );
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test("the release stage as files: the archive and its record under the stage's name, each contract, each unit enabled", () => {
  const dir = mkdtempSync(path.join(tmpdir(), "bake-release-files-"));
  try {
    const archive = path.join(dir, "preload.tar");
    writeFileSync(archive, "");
    const vars = {
      bake_preload_name: "release",
      bake_preload_images: [{ name: "app", ref: "p/app:0123456789ab", key: "k".repeat(64) }],
      bake_services: [{ name: "p-app", create: { name: "p-app", Image: "p/app:0123456789ab" }, pass_env: ["TOKEN"] }],
      bake_runtime_env: "/etc/bake/runtime.env",
    } as unknown as AnsibleVars;
    const { files, links } = releaseFiles(vars, archive);
    assert.equal(
      files.map((f) => [f.path, f.mode, "from" in f ? f.from : f.content]),
      [
        ["/var/lib/bake/preload/release.tar", 0o644, archive],
        [
          "/var/lib/bake/preload/release.json",
          0o644,
          '[\n    {\n        "key": "' +
            "k".repeat(64) +
            '",\n        "name": "app",\n        "ref": "p/app:0123456789ab"\n    }\n]\n',
        ],
        [
          "/etc/bake/services/p-app.json",
          0o644,
          '{\n    "create": {\n        "Image": "p/app:0123456789ab",\n        "name": "p-app"\n    },\n    "pass_env": [\n        "TOKEN"\n    ],\n    "runtime_env": "/etc/bake/runtime.env"\n}\n',
        ],
      ],
    );
    assert.equal(links, [
      {
        path: "/etc/systemd/system/multi-user.target.wants/bake-service@p-app.service",
        target: "/etc/systemd/system/bake-service@.service",
      },
    ]);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test("the release stage's paths are the ones bake's roles use on every other target", () => {
  const roles = path.join(ROOT, "ansible/bake/roles");
  const preload = parseYaml(readFileSync(path.join(roles, "preload/defaults/main.yml"), "utf8"));
  assert.is(preload.preload_dir, HOST_PATHS.preload);
  const atBoot = readFileSync(path.join(roles, "service/tasks/at-boot.yml"), "utf8");
  assert.ok(atBoot.includes(`dest: "${HOST_PATHS.services}/{{ item.name }}.json"`), atBoot);
  assert.ok(atBoot.includes(`dest: ${HOST_PATHS.serviceUnit}`), atBoot);
  assert.ok(atBoot.includes("WantedBy=multi-user.target"));
});

test("host stage disks: the current one and each one a kept disk stands on stay; the others go", () => {
  const disk = vmFolder("host@host", 2048);
  const decisions = planVmStageRetention(
    "host@host",
    [
      disk("a".repeat(64), 1),
      disk("b".repeat(64), 2),
      disk("c".repeat(64), 3),
      disk(undefined, 4),
      disk("d".repeat(64), 5, true),
    ],
    new Map([["b".repeat(64), "0123456789ab"]]),
    "c".repeat(64),
  );
  assert.equal(
    decisions.map((d) => [d.key.slice(0, 1), d.action, d.reason]),
    [
      ["d", "keep", "a bake is using it (2048 MiB)"],
      ["", "remove", "left by a bake that did not finish (2048 MiB)"],
      ["c", "keep", "carries the current key"],
      ["b", "keep", "the kept disk 0123456789ab stands on it"],
      ["a", "remove", "no kept disk stands on it (2048 MiB)"],
    ],
  );
});

test("the boot test runs a command again only when ssh never reached the guest's shell", () => {
  for (const said of [
    "Connection timed out during banner exchange\nConnection to 127.0.0.1 port 40123 timed out",
    "kex_exchange_identification: read: Connection reset by peer",
    "ssh: connect to host 127.0.0.1 port 40123: Connection refused",
    "ssh: connect to host 127.0.0.1 port 40123: Connection timed out",
  ])
    assert.ok(SSH_UNREACHED.test(said), said);
  for (const said of [
    "Connection to 127.0.0.1 closed by remote host.",
    "degraded",
    "curl: (7) Failed to connect to 127.0.0.1 port 8080 after 0 ms: Connection refused on the service",
  ])
    assert.not.ok(SSH_UNREACHED.test(said), said);
});

test("the boot test's commands share one master connection: the master in the foreground, commands on its socket, forwards on their own", () => {
  const t = { port: 40123, key: "/b/id", user: "root", knownHosts: "/b/kh", hostKeyAlias: "bake-boot-test" };
  const master = masterArgs(t, "/tmp/bake-ssh-x/master");
  assert.ok(master.includes("-M") && master.includes("-N"));
  assert.ok(master.includes("ControlPersist=no") && master.includes("ControlPath=/tmp/bake-ssh-x/master"));
  assert.ok(master.includes("StrictHostKeyChecking=yes") && master.includes("HostKeyAlias=bake-boot-test"));
  const shared = sshArgs({ ...t, controlPath: "/tmp/bake-ssh-x/master" }, "true");
  assert.equal(shared.slice(-7), [
    "-o",
    "ControlMaster=no",
    "-o",
    "ControlPath=/tmp/bake-ssh-x/master",
    "root@127.0.0.1",
    "--",
    "true",
  ]);
  assert.not.ok(sshArgs(t, "true").some((a) => a.startsWith("ControlPath")));
  assert.not.ok(
    forwardArgs({ ...t, controlPath: "/tmp/bake-ssh-x/master" }, "/s", 80).some((a) => a.startsWith("Control")),
  );
});

test.run();
