/**
 * The folder a VM bake leaves under .bake/vm/<ami>-<key12>/ and its vm.json: what the plan and
 * the commands read to know a baked disk by its key (host/vm-host.ts fills it).
 */
import { shortKey } from "../config/model.js";
import { existsSync, readFileSync, statSync } from "node:fs";
import path from "node:path";
import { writeJsonFile } from "../files/json-file.js";
import { KERNEL_CMDLINE } from "../tools/qemu.js";

/** Files of a bake's VM folder (.bake/vm/<ami>-<key12>/). */
export const VM_FILES = {
  disk: "disk.qcow2",
  kernel: "vmlinuz",
  initrd: "initrd.img",
  key: "id_ed25519",
  record: "vm.json",
} as const;

/** What vm.json says of a baked disk. */
export interface VmRecord {
  ami: string;
  key: string;
  disk: string;
  format: "qcow2";
  bytes: number;
  cmdline: string;
  memory: number;
  cpus: number;
  user: string;
  created: string;
  /** A stage's disk: the stage below whose disk is its backing file (`<ami>@host` and its key). */
  below?: { node: string; key: string };
}

/** The folder a VM bake leaves: one per AMI and key. */
export function vmDir(projectDir: string, ami: string, key: string): string {
  return path.join(projectDir, ".bake", "vm", `${ami}-${shortKey(key)}`);
}

export function writeVmRecord(
  dir: string,
  record: Omit<VmRecord, "bytes" | "cmdline" | "created" | "format" | "user">,
): VmRecord {
  const full: VmRecord = {
    ...record,
    format: "qcow2",
    bytes: statSync(path.join(dir, VM_FILES.disk)).size,
    cmdline: KERNEL_CMDLINE,
    user: "root",
    created: new Date().toISOString(),
  };
  writeJsonFile(path.join(dir, VM_FILES.record), full);
  return full;
}

/** What a VM folder's vm.json says, if it has a readable one. */
export function readVmRecord(dir: string): VmRecord | undefined {
  try {
    return JSON.parse(readFileSync(path.join(dir, VM_FILES.record), "utf8")) as VmRecord;
  } catch {
    return undefined;
  }
}

/** The baked disk with this key, when its folder is whole. */
export function findVmDisk(projectDir: string, ami: string, key: string): (VmRecord & { dir: string }) | undefined {
  const dir = vmDir(projectDir, ami, key);
  const record = readVmRecord(dir);
  if (!record || record.key !== key || record.ami !== ami) return undefined;
  for (const f of [VM_FILES.disk, VM_FILES.kernel, VM_FILES.initrd, VM_FILES.key])
    if (!existsSync(path.join(dir, f))) return undefined;
  return { ...record, dir };
}
