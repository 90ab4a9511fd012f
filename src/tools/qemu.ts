/**
 * The only module that runs QEMU (qemu-system-x86_64 and qemu-img): the accelerator this machine
 * can use, a VM booted from a disk with its kernel given directly, and disk conversions.
 */
import { existsSync, mkdirSync, readFileSync, rmSync } from "node:fs";
import path from "node:path";
import { BakeError } from "../errors.js";
import { bakeCacheDir } from "../files/process-lock.js";
import { writeJsonFile } from "../files/json-file.js";
import { run, start, type BackgroundProcess } from "./exec.js";

export const QEMU = "qemu-system-x86_64";
export const QEMU_IMG = "qemu-img";
/** Forces the accelerator (kvm or tcg) instead of bake's probe. */
export const ACCELERATOR_ENV = "BAKE_QEMU_ACCELERATOR";
const NOT_INSTALLED = `${QEMU} is not installed (Debian: qemu-system-x86, qemu-utils): run make setup`;

export type Accelerator = "kvm" | "tcg";

export interface AcceleratorChoice {
  accelerator: Accelerator;
  /** Why: the probe's finding, or the variable that forced it. */
  reason: string;
}

export async function qemuVersion(): Promise<string> {
  const { stdout } = await run(QEMU, ["--version"], { notInstalled: NOT_INSTALLED });
  return /version (\S+)/.exec(stdout)?.[1] ?? stdout.split("\n")[0];
}

export interface VmArgsInput {
  disk: string;
  format: "raw" | "qcow2";
  kernel: string;
  initrd: string;
  append: string;
  memory: number;
  cpus: number;
  accelerator: Accelerator;
  /** Host ports on 127.0.0.1 forwarded to guest ports. */
  forwards: { host: number; guest: number }[];
  serialLog: string;
  pidFile: string;
}

/** The kernel command line of a bake VM host: the root file system on the first virtio disk, the console on the serial port. */
export const KERNEL_CMDLINE = "root=/dev/vda rw console=ttyS0 panic=10";

/**
 * qemu-system-x86_64's arguments: no display, the serial console to a file, user networking whose
 * forwards listen on 127.0.0.1 only. The VM reboots in place (no -no-reboot): the boot test reboots it.
 */
export function vmArgs(o: VmArgsInput): string[] {
  const forwards = o.forwards.map((f) => `,hostfwd=tcp:127.0.0.1:${f.host}-:${f.guest}`).join("");
  return [
    "-machine",
    `q35,accel=${o.accelerator}`,
    "-cpu",
    o.accelerator === "kvm" ? "host" : "max",
    "-smp",
    String(o.cpus),
    "-m",
    String(o.memory),
    "-kernel",
    o.kernel,
    "-initrd",
    o.initrd,
    "-append",
    o.append,
    // QEMU's option syntax ends a value at a comma: one in the path (a project folder) is doubled.
    "-drive",
    `file=${o.disk.replace(/,/g, ",,")},if=virtio,format=${o.format},cache=unsafe`,
    "-netdev",
    `user,id=net0${forwards}`,
    "-device",
    "virtio-net-pci,netdev=net0",
    "-display",
    "none",
    "-monitor",
    "none",
    "-serial",
    `file:${o.serialLog}`,
    "-pidfile",
    o.pidFile,
  ];
}

/** Starts a VM in a process group of its own (stopped with everything bake started on a forced stop). */
export async function startVm(input: VmArgsInput, onLine?: (line: string) => void): Promise<BackgroundProcess> {
  return start(QEMU, vmArgs(input), { onLine }).catch((e: Error) => {
    throw /not installed/.test(e.message) ? new BakeError(NOT_INSTALLED) : e;
  });
}

/** The probe: a kernel with no root disk panics at once and, with -no-reboot, QEMU exits. */
export function probeArgs(kernel: string, accelerator: Accelerator, serialLog: string): string[] {
  return [
    "-machine",
    `q35,accel=${accelerator}`,
    "-m",
    "256",
    "-no-reboot",
    "-display",
    "none",
    "-monitor",
    "none",
    "-serial",
    `file:${serialLog}`,
    "-kernel",
    kernel,
    "-append",
    "console=ttyS0 panic=-1 root=/dev/bake-probe-none",
  ];
}

const PROBE_SECONDS = 15;

/**
 * KVM where it starts a guest, TCG where it does not: `/dev/kvm` can exist and a KVM guest still
 * hang (seen on these machines), so bake boots `kernel` once with KVM and takes it only when the
 * kernel got as far as its panic for want of a root disk. Kept per boot of this machine and
 * QEMU version; BAKE_QEMU_ACCELERATOR=kvm|tcg decides without a probe.
 */
export async function chooseAccelerator(
  kernel: string,
  options: { env?: NodeJS.ProcessEnv; signal?: AbortSignal } = {},
): Promise<AcceleratorChoice> {
  const env = options.env ?? process.env;
  const forced = env[ACCELERATOR_ENV];
  if (forced) {
    if (forced !== "kvm" && forced !== "tcg") throw new BakeError(`${ACCELERATOR_ENV}=${forced}: use kvm or tcg`);
    return { accelerator: forced, reason: `${ACCELERATOR_ENV}=${forced}` };
  }
  if (!existsSync("/dev/kvm"))
    return { accelerator: "tcg", reason: "no /dev/kvm on this machine: software emulation (TCG)" };
  const cacheFile = path.join(bakeCacheDir(env), "qemu-accelerator.json");
  const version = await qemuVersion();
  const bootId = readFileSync("/proc/sys/kernel/random/boot_id", "utf8").trim();
  const cached = readCache(cacheFile);
  if (cached && cached.bootId === bootId && cached.qemu === version) return cached.choice;
  const dir = path.join(bakeCacheDir(env), `probe-${process.pid}`);
  mkdirSync(dir, { recursive: true });
  const serial = path.join(dir, "serial.log");
  let choice: AcceleratorChoice;
  try {
    const started = Date.now();
    const r = await run(QEMU, probeArgs(kernel, "kvm", serial), {
      timeoutMs: PROBE_SECONDS * 1000,
      reject: false,
      signal: options.signal,
      notInstalled: NOT_INSTALLED,
    }).catch((e: Error) => ({ exitCode: undefined, stderr: e.message }));
    const printed = existsSync(serial) ? readFileSync(serial, "utf8") : "";
    const seconds = ((Date.now() - started) / 1000).toFixed(1);
    choice =
      r.exitCode === 0 && /Kernel panic|VFS: Unable to mount root/.test(printed)
        ? { accelerator: "kvm", reason: `KVM started a guest kernel in ${seconds} s` }
        : {
            accelerator: "tcg",
            reason: `/dev/kvm exists but a KVM guest ${Date.now() - started >= PROBE_SECONDS * 1000 - 500 ? `did not get through its boot in ${PROBE_SECONDS} s` : `failed to start (exit ${r.exitCode})`}: software emulation (TCG)`,
          };
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
  if (options.signal?.aborted) return choice;
  mkdirSync(path.dirname(cacheFile), { recursive: true });
  writeJsonFile(cacheFile, { bootId, qemu: version, choice });
  return choice;
}

/** The accelerator bake chose on this boot of the machine, if it probed yet (for bake doctor). */
export function cachedAccelerator(env = process.env): AcceleratorChoice | undefined {
  const cached = readCache(path.join(bakeCacheDir(env), "qemu-accelerator.json"));
  const bootId = existsSync("/proc/sys/kernel/random/boot_id")
    ? readFileSync("/proc/sys/kernel/random/boot_id", "utf8").trim()
    : "";
  return cached?.bootId === bootId ? cached.choice : undefined;
}

function readCache(file: string): { bootId: string; qemu: string; choice: AcceleratorChoice } | undefined {
  try {
    return JSON.parse(readFileSync(file, "utf8"));
  } catch {
    return undefined;
  }
}

/** Converts a disk image between formats (sparse: only written blocks are copied). */
export async function convertDisk(
  from: { file: string; format: "raw" | "qcow2" },
  to: { file: string; format: "raw" | "qcow2" },
  signal?: AbortSignal,
): Promise<void> {
  await run(QEMU_IMG, ["convert", "-f", from.format, "-O", to.format, from.file, to.file], {
    signal,
    notInstalled: NOT_INSTALLED,
  });
}

/**
 * A qcow2 image of a raw disk that holds only the clusters that differ from `backing` (a qcow2
 * image), which it names by a path relative to its own folder: a stage's disk on the disk of the
 * stage below. Made on the raw disk as its backing file, then rebased in qemu-img's safe mode,
 * which compares the two backing files and copies in only what differs.
 */
export async function overlayDisk(raw: string, out: string, backing: string, signal?: AbortSignal): Promise<void> {
  const dir = path.dirname(out);
  const name = path.basename(out);
  const options = { cwd: dir, signal, notInstalled: NOT_INSTALLED };
  await run(QEMU_IMG, ["create", "-q", "-f", "qcow2", "-b", path.resolve(raw), "-F", "raw", name], options);
  await run(QEMU_IMG, ["rebase", "-f", "qcow2", "-b", path.relative(dir, backing), "-F", "qcow2", name], options);
}

/** A disk image's virtual size and the bytes it takes on this machine. */
export async function diskInfo(file: string): Promise<{ format: string; virtualSize: number; actualSize: number }> {
  const { stdout } = await run(QEMU_IMG, ["info", "--output=json", file], { notInstalled: NOT_INSTALLED });
  const info = JSON.parse(stdout) as { format: string; "virtual-size": number; "actual-size": number };
  return { format: info.format, virtualSize: info["virtual-size"], actualSize: info["actual-size"] };
}
