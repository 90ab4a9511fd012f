/**
 * The vm target's disks. A host disk is made once per spec on this machine (debootstrap, then the
 * few files a booted VM needs, then mkfs.ext4 straight from the folder: no loop device or mount)
 * and kept under ~/.cache/bake/vm. Each bake works on a copy that carries its own SSH key; what
 * it leaves is a folder under .bake/vm/ with the disk, the kernel and initrd the disk holds, the
 * key, and vm.json, which the plan reads to know the disk by its key.
 */
import {
  existsSync,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  renameSync,
  rmSync,
  symlinkSync,
  writeFileSync,
} from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import type { VmSpec } from "../config/model.js";
import { VM_ENABLED_UNITS, VM_ROOTFS_FILES, vmDiskDigest } from "../graph/vm-disk-spec.js";
import { VM_FILES } from "../state/vm-record.js";
import { debootstrap } from "../tools/debootstrap.js";
import { copyOut, makeExt4, writeFiles, type DiskFile, type DiskLink } from "../tools/ext4.js";
import { convertDisk, overlayDisk } from "../tools/qemu.js";
import { generateKey, HOST_KEY_TYPES } from "../tools/ssh.js";
import { bakeCacheDir, machineLock, withLock } from "../files/process-lock.js";
import { cleanUpOnForcedStop } from "../state/forced-cleanup.js";

export function vmDiskCacheDir(env = process.env): string {
  return path.join(bakeCacheDir(env), "vm");
}

export interface DiskReport {
  step(text: string): void;
  line(text: string): void;
}

/** Writes bake's VM files into a debootstrapped folder. */
export function prepareRootfs(dir: string): void {
  for (const [file, text] of Object.entries(VM_ROOTFS_FILES)) {
    const target = path.join(dir, file);
    mkdirSync(path.dirname(target), { recursive: true });
    rmSync(target, { force: true });
    writeFileSync(target, text, { mode: 0o644 });
  }
  for (const key of ["rsa", "ecdsa", "ed25519"])
    for (const ext of ["", ".pub"]) rmSync(path.join(dir, "etc/ssh", `ssh_host_${key}_key${ext}`), { force: true });
  for (const [wants, unit] of VM_ENABLED_UNITS) {
    const link = path.join(dir, "etc/systemd/system", wants, unit);
    mkdirSync(path.dirname(link), { recursive: true });
    rmSync(link, { force: true });
    symlinkSync(`/lib/systemd/system/${unit}`, link);
  }
}

/** The host disk of a spec (raw, sparse), made once per machine: the debootstrap is the slow part. */
export async function baseDisk(vm: VmSpec, report: DiskReport, signal?: AbortSignal): Promise<string> {
  const digest = vmDiskDigest(vm);
  const file = path.join(vmDiskCacheDir(), `${digest}.raw`);
  return withLock(
    machineLock(`vm-disk-${digest.slice(0, 12)}`),
    async () => {
      if (existsSync(file)) return file;
      mkdirSync(vmDiskCacheDir(), { recursive: true });
      const work = path.join(vmDiskCacheDir(), `tmp-${process.pid}-${digest.slice(0, 12)}`);
      const partial = `${file}.partial-${process.pid}`;
      try {
        report.step(`debootstrap ${vm.rootfs.debootstrap.suite} for the VM host's disk`);
        await debootstrap(vm.rootfs.debootstrap, work, {
          credentials: vm.rootfs.mirrorCredentials,
          onLine: report.line,
          signal,
        });
        prepareRootfs(work);
        report.step(`making the ${vm.diskSize} disk`);
        await makeExt4(work, partial, vm.diskSize, signal);
        renameSync(partial, file);
      } finally {
        rmSync(work, { recursive: true, force: true });
        rmSync(partial, { force: true });
      }
      return file;
    },
    { signal, onWait: (holder) => report.step(`waiting for the VM disk ${digest.slice(0, 12)}: ${holder} makes it`) },
  );
}

/**
 * The SSH host keys of one boot, made here in `dir` (a 0700 folder) as sshd names them: a boot
 * whose disk holds them skips `ssh-keygen -A`, which in an emulated guest is seconds of its one
 * CPU for the RSA key alone, before sshd answers. Returns the disk files and the ed25519 public key.
 */
export async function hostKeyFiles(dir: string, comment: string): Promise<{ files: DiskFile[]; ed25519: string }> {
  const files: DiskFile[] = [];
  let ed25519 = "";
  for (const type of HOST_KEY_TYPES) {
    const name = `ssh_host_${type}_key`;
    const publicKey = await generateKey(path.join(dir, name), comment, type);
    if (type === "ed25519") ed25519 = publicKey;
    files.push(
      { path: `/etc/ssh/${name}`, from: path.join(dir, name), mode: 0o600 },
      { path: `/etc/ssh/${name}.pub`, content: publicKey, mode: 0o644 },
    );
  }
  return { files, ed25519 };
}

/** The disk Packer starts from, in the bake's rendered folder: a copy of the base disk with the bake's key and host name. */
export const PACKER_DISK = "disk.raw";

/**
 * The bake's copy of the base disk with the rendered folder's public key (root may log in with
 * it: Packer and the boot test do), its host name and host keys for Packer's boot (its shutdown
 * removes them: every VM booted from the baked disk makes its own), and the kernel and initrd
 * Packer boots it with.
 */
export async function diskForBake(base: string, dir: string, hostname: string, signal?: AbortSignal): Promise<void> {
  const disk = path.join(dir, PACKER_DISK);
  await convertDisk({ file: base, format: "raw" }, { file: disk, format: "raw" }, signal);
  const publicKey = readFileSync(path.join(dir, `${VM_FILES.key}.pub`), "utf8");
  const keysDir = mkdtempSync(path.join(tmpdir(), "bake-host-keys-"));
  const release = cleanUpOnForcedStop(() => rmSync(keysDir, { recursive: true, force: true }));
  try {
    const hostKeys = await hostKeyFiles(keysDir, hostname);
    await writeFiles(
      disk,
      [
        { path: "/root/.ssh/authorized_keys", content: publicKey, mode: 0o600 },
        { path: "/etc/hostname", content: `${hostname}\n`, mode: 0o644 },
        ...hostKeys.files,
      ],
      { "/root/.ssh": 0o700 },
    );
  } finally {
    rmSync(keysDir, { recursive: true, force: true });
    release();
  }
  await bootFiles(disk, dir);
}

/** Copies the kernel and initrd the disk holds (/vmlinuz, /initrd.img) out of it, for QEMU's -kernel/-initrd. */
export async function bootFiles(rawDisk: string, dir: string): Promise<{ kernel: string; initrd: string }> {
  const kernel = path.join(dir, VM_FILES.kernel);
  const initrd = path.join(dir, VM_FILES.initrd);
  await copyOut(rawDisk, "/vmlinuz", kernel);
  await copyOut(rawDisk, "/initrd.img", initrd);
  return { kernel, initrd };
}

/** Moves Packer's output into the VM folder (replacing an unfinished one). */
export function keepBakedDisk(packerDisk: string, dir: string, from: string): void {
  rmSync(dir, { recursive: true, force: true });
  mkdirSync(dir, { recursive: true });
  renameSync(packerDisk, path.join(dir, VM_FILES.disk));
  for (const f of [VM_FILES.key, `${VM_FILES.key}.pub`]) renameSync(path.join(from, f), path.join(dir, f));
}

/**
 * A disk made on the disk of the stage below without booting either: a qcow2 whose backing file
 * is `below` (named relative to its folder), holding only what the files and links written into
 * it change. The raw copy it is written through goes whatever happens.
 */
export async function diskOnBelow(
  below: string,
  out: string,
  write: { files: DiskFile[]; links: DiskLink[] },
  signal?: AbortSignal,
): Promise<void> {
  const raw = `${out}.raw`;
  try {
    await convertDisk({ file: below, format: "qcow2" }, { file: raw, format: "raw" }, signal);
    await writeFiles(raw, write.files, {}, write.links);
    await overlayDisk(raw, out, below, signal);
  } finally {
    rmSync(raw, { force: true });
  }
}
