/**
 * The vm target around the Packer run: what must hold before it (the AMI names a vm: disk, QEMU is
 * there), the disk and accelerator it runs with, and afterwards the baked disk kept under .bake/vm/
 * with its kernel and initrd, boot-tested, and recorded only once the test passed: a failed or
 * interrupted boot test leaves no disk, no VM and no file.
 */
import { randomBytes } from "node:crypto";
import { cleanUpOnForcedStop } from "../state/forced-cleanup.js";
import { chmodSync, copyFileSync, existsSync, mkdirSync, rmSync, writeFileSync } from "node:fs";
import path from "node:path";
import type { AmiNode } from "../config/model.js";
import { BootTestFailedError, ConfigError, interruption } from "../errors.js";
import { knownKeys, type Pipeline } from "../state/read.js";
import { chooseAccelerator, convertDisk, KERNEL_CMDLINE, type AcceleratorChoice } from "../tools/qemu.js";
import { writeFiles, type DiskFile } from "../tools/ext4.js";
import { knownHostsLine } from "../tools/ssh.js";
import { servicesOf } from "../up/services.js";
import type { BootReport } from "./boot-test.js";
import { amiGossTest, runtimeEnvFile } from "./boot-test.js";
import { bootTestVm, HOST_KEY_ALIAS } from "./vm-boot-test.js";
import { shippedRefs } from "./local-host.js";
import { baseDisk, bootFiles, diskForBake, hostKeyFiles, keepBakedDisk, type DiskReport } from "./vm-disk.js";
import { findVmDisk, VM_FILES, vmDir, writeVmRecord, type VmRecord } from "../state/vm-record.js";

/** The AMI names the disk its VM host starts from: a config error (exit 2) at the AMI otherwise. */
export function checkVmTarget(ami: AmiNode): NonNullable<AmiNode["vm"]> {
  if (!ami.vm) {
    throw new ConfigError(
      ami.position,
      `AMI "${ami.name}" has no vm: disk for --target vm`,
      `add vm: { rootfs: { debootstrap: { suite: bookworm, variant: minbase, include: [linux-image-cloud-amd64, systemd-sysv, openssh-server, python3, ...] } } } to amis.${ami.name}`,
    );
  }
  return ami.vm;
}

/** Before Packer: the bake's disk (from the spec's cached disk) with its key, kernel and initrd, and the accelerator. */
export async function prepareVm(
  pipeline: Pipeline,
  ami: AmiNode,
  dir: string,
  report: DiskReport,
  signal: AbortSignal,
): Promise<AcceleratorChoice> {
  const vm = checkVmTarget(ami);
  const base = await baseDisk(vm, report, signal);
  report.step("copying the disk for this bake, with its SSH key");
  await diskForBake(base, dir, `${pipeline.config.project}-${ami.name}`, signal);
  const accel = await chooseAccelerator(path.join(dir, VM_FILES.kernel), { signal });
  report.line(`QEMU accelerator: ${accel.accelerator} (${accel.reason})`);
  return accel;
}

export interface VmBakeOptions {
  accel: AcceleratorChoice;
  /** The run's log folder: each boot's serial console is kept there. */
  logsDir: string;
  bootTest: boolean;
  passEnv: Record<string, string>;
  signal: AbortSignal;
  /** Aborted when another bake took this key's lock over: the disk folder is then its to keep. */
  lockLost?: AbortSignal;
  onLine: (l: string) => void;
}

/** Packer's disk into the AMI's folder, with the key it was baked with (a bake in one run, or a stage baked by Packer). */
export function packerDisk(workDir: string): (dir: string) => Promise<void> {
  return async (dir) => keepBakedDisk(path.join(workDir, "output", VM_FILES.disk), dir, workDir);
}

/**
 * After Packer (or a stage written on the stage below): the disk into .bake/vm/<ami>-<key12>/ by
 * `place`, the kernel and initrd it holds beside it, the boot test on a copy that carries the
 * runtime environment file, and vm.json once everything passed.
 */
export async function keepAndBootVm(
  pipeline: Pipeline,
  ami: AmiNode,
  place: (dir: string) => Promise<void>,
  options: VmBakeOptions & { below?: VmRecord["below"] },
): Promise<{ record: VmRecord & { dir: string }; boot?: BootReport }> {
  const vm = checkVmTarget(ami);
  const key = pipeline.keys.get(ami.name)!.key!;
  const dir = vmDir(pipeline.config.dir, ami.name, key);
  const bootDir = path.join(dir, `boot-${randomBytes(3).toString("hex")}`);
  let passed = false;
  // A forced stop (a second signal) still removes the boot copy: its disk holds the runtime env file.
  const release = cleanUpOnForcedStop(() => rmSync(bootDir, { recursive: true, force: true }));
  try {
    await place(dir);
    const raw = await bootCopy(path.join(dir, VM_FILES.disk), bootDir, options.signal);
    // The kernel and initrd the baked disk holds (a playbook may have changed them).
    const { kernel, initrd } = await bootFiles(raw, dir);
    let boot: BootReport | undefined;
    if (options.bootTest) {
      boot = await bootTestCopy(pipeline, ami, { dir, raw, bootDir, kernel, initrd }, options);
      if (!boot.ok) throw new BootTestFailedError(ami.name, boot.checks);
    }
    if (options.signal.aborted) throw interruption(options.signal);
    const record = writeVmRecord(dir, {
      ami: ami.name,
      key,
      disk: VM_FILES.disk,
      memory: vm.memory,
      cpus: vm.cpus,
      ...(options.below ? { below: options.below } : {}),
    });
    passed = true;
    return { record: { ...record, dir }, boot };
  } finally {
    keepSerialLog(path.join(bootDir, "serial.log"), options.logsDir, `${ami.name}.boot-serial.log`);
    rmSync(bootDir, { recursive: true, force: true });
    release();
    // Nothing of a disk that did not pass stays behind, unless the folder is another bake's now.
    if (!passed && !options.lockLost?.aborted) rmSync(dir, { recursive: true, force: true });
  }
}

/** What a boot test boots: the raw copy in its 0700 folder, and the kernel and initrd beside the kept disk. */
interface BootCopy {
  dir: string;
  raw: string;
  bootDir: string;
  kernel: string;
  initrd: string;
}

/** The boot test on a boot copy: its runtime env file and host key written into it, then every check, twice across a reboot. */
async function bootTestCopy(
  pipeline: Pipeline,
  ami: AmiNode,
  copy: BootCopy,
  options: {
    accel: AcceleratorChoice;
    passEnv: Record<string, string>;
    signal: AbortSignal;
    onLine: (l: string) => void;
  },
): Promise<BootReport> {
  const vm = checkVmTarget(ami);
  // As user-data would: the pass_env values in the runtime environment file, in the copy only;
  // and an SSH host key made for this boot, which the boot test's SSH pins.
  const hostKey = await bootHostKeys(copy.bootDir);
  await writeFiles(copy.raw, [
    { path: ami.runtimeEnv, content: runtimeEnvFile(options.passEnv), mode: 0o600 },
    ...hostKey.files,
  ]);
  const keys = knownKeys(pipeline);
  return bootTestVm({
    vm: {
      disk: copy.raw,
      format: "raw",
      kernel: copy.kernel,
      initrd: copy.initrd,
      append: KERNEL_CMDLINE,
      memory: vm.memory,
      cpus: vm.cpus,
      accelerator: options.accel.accelerator,
      serialLog: path.join(copy.bootDir, "serial.log"),
      pidFile: path.join(copy.bootDir, "qemu.pid"),
    },
    key: path.join(copy.dir, VM_FILES.key),
    knownHosts: hostKey.knownHosts,
    project: pipeline.config.project,
    ami: ami.name,
    shipped: shippedRefs(pipeline, ami),
    services: servicesOf(pipeline.config, ami.services, keys),
    secrets: Object.values(options.passEnv),
    ...amiGossTest(pipeline.config.dir, ami),
    signal: options.signal,
    onLine: options.onLine,
  });
}

/**
 * `bake test --target vm`: the boot test of the disk kept for the AMI's current key, on a copy (the
 * kept disk is never booted, so it stays as baked); undefined when no disk has the key. The copy
 * goes whatever happens, a second signal included.
 */
export async function bootKeptDisk(
  pipeline: Pipeline,
  ami: AmiNode,
  key: string,
  options: { passEnv: Record<string, string>; signal: AbortSignal; onLine: (l: string) => void; logsDir: string },
): Promise<BootReport | undefined> {
  const kept = findVmDisk(pipeline.config.dir, ami.name, key);
  if (!kept) return undefined;
  const accel = await chooseAccelerator(path.join(kept.dir, VM_FILES.kernel), { signal: options.signal });
  options.onLine(`QEMU accelerator: ${accel.accelerator} (${accel.reason})`);
  const bootDir = path.join(kept.dir, `boot-${randomBytes(3).toString("hex")}`);
  const release = cleanUpOnForcedStop(() => rmSync(bootDir, { recursive: true, force: true }));
  try {
    const raw = await bootCopy(path.join(kept.dir, kept.disk), bootDir, options.signal);
    const files = { kernel: path.join(kept.dir, VM_FILES.kernel), initrd: path.join(kept.dir, VM_FILES.initrd) };
    const boot = await bootTestCopy(pipeline, ami, { dir: kept.dir, raw, bootDir, ...files }, { ...options, accel });
    if (options.signal.aborted) throw interruption(options.signal);
    return boot;
  } finally {
    keepSerialLog(path.join(bootDir, "serial.log"), options.logsDir, `${ami.name}.boot-serial.log`);
    rmSync(bootDir, { recursive: true, force: true });
    release();
  }
}

/**
 * The copy of the baked disk a boot test boots, which will carry the runtime environment file (the
 * pass_env values): its folder is 0700 from creation and the copy 0600 before any secret is
 * written into it, so no other user can read it at any moment.
 */
export async function bootCopy(disk: string, bootDir: string, signal?: AbortSignal): Promise<string> {
  mkdirSync(bootDir, { mode: 0o700 });
  chmodSync(bootDir, 0o700); // whatever the umask
  const raw = path.join(bootDir, "disk.raw");
  await convertDisk({ file: disk, format: "qcow2" }, { file: raw, format: "raw" }, signal);
  chmodSync(raw, 0o600);
  return raw;
}

/**
 * The host keys made for one boot test (sshd keeps the keys it finds; `ssh-keygen -A` at boot
 * makes only the missing ones, seconds of an emulated CPU for RSA) and the known_hosts file that
 * pins the ed25519 one, all in the 0700 boot folder.
 */
export async function bootHostKeys(
  bootDir: string,
): Promise<{ files: DiskFile[]; publicKey: string; knownHosts: string }> {
  const { files, ed25519 } = await hostKeyFiles(bootDir, HOST_KEY_ALIAS);
  const knownHosts = path.join(bootDir, "known_hosts");
  writeFileSync(knownHosts, knownHostsLine(HOST_KEY_ALIAS, ed25519), { mode: 0o600 });
  return { files, publicKey: ed25519, knownHosts };
}

/** Keeps a VM's serial console (what systemd printed at boot) with the run's logs. */
export function keepSerialLog(file: string, logsDir: string, name: string): void {
  if (!existsSync(file)) return;
  mkdirSync(logsDir, { recursive: true, mode: 0o700 });
  copyFileSync(file, path.join(logsDir, name));
}
