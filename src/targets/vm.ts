/**
 * The vm target: Packer's qemu builder provisions a copy of the disk made from the AMI's vm: spec
 * (host/vm-disk.ts); the baked disk is kept under .bake/vm/<ami>-<key12>/ and boot-tested under
 * QEMU, twice (host/vm-host.ts). An AMI that runs services bakes in stages (vm-stages.ts): Packer
 * bakes the host stage's disk, and the release stage is written on it. The rendered folder holds
 * the disk Packer started from, the kernel and the key: it is removed whatever happens, its serial
 * console log kept with the run's logs.
 */
import { rmSync } from "node:fs";
import path from "node:path";
import { KEY_TAG_LENGTH } from "../config/model.js";
import { renderFolder } from "../ami/bake-ami.js";
import { checkVmTarget, keepAndBootVm, keepSerialLog, packerDisk, prepareVm } from "../host/vm-host.js";
import { PACKER_DISK } from "../host/vm-disk.js";
import { findVmDisk, VM_FILES } from "../state/vm-record.js";
import { ACCELERATOR_ENV, KERNEL_CMDLINE, type AcceleratorChoice } from "../tools/qemu.js";
import { stagesOn } from "../graph/stages.js";
import type { TargetTemplatePart } from "../ami/context.js";
import { generateKey } from "../tools/ssh.js";
import { exportAndRunPacker, imagesOf, keepPackagesOf, type AmiTarget } from "./target.js";
import { releaseOnHostStage, vmHostStage } from "./vm-stages.js";

export const vm: AmiTarget = {
  name: "vm",
  bootsHere: true,

  needs(ami) {
    checkVmTarget(ami);
  },

  variables: () => VM_VARIABLES,

  async find(pipeline, ami, key) {
    const found = findVmDisk(pipeline.config.dir, ami.name, key);
    return found ? path.relative(pipeline.config.dir, path.join(found.dir, found.disk)) : undefined;
  },

  async whole(_pipeline, _ami, found) {
    return { vm: found };
  },

  async render(pipeline, ami, dir, packer, extra) {
    // Staged: the folder is the host stage's, which Packer bakes; the release stage is written (vm-stages.ts).
    const stages = stagesOn(ami, "vm", pipeline.keys.get(ami.name));
    const folder = await renderFolder(pipeline, ami, dir, packer, extra, vmTemplate, stages && { stage: stages[0] });
    // The SSH key pair of this folder only: Packer logs in with it, and the disk the bake boots carries its public half.
    await generateKey(path.join(dir, VM_FILES.key), `bake@${pipeline.config.project}-${ami.name}`);
    return folder;
  },

  async bake(b) {
    const { pipeline, ami, run } = b;
    const env = { ...b.env.withheld, PACKER_CACHE_DIR: path.join(run.dir, "packer_cache") };
    const stages = stagesOn(ami, "vm", pipeline.keys.get(ami.name));
    try {
      let accel: AcceleratorChoice;
      let place: (dir: string) => Promise<void>;
      let below: { node: string; key: string } | undefined;
      if (stages) {
        const host = await vmHostStage(b, stages[0], env);
        accel = host.accel;
        place = releaseOnHostStage(b, stages, host.dir);
        below = { node: stages[0].node, key: stages[0].key };
      } else {
        accel = await prepareVm(pipeline, ami, run.dir, { step: run.say, line: run.say }, run.signal);
        try {
          await exportAndRunPacker(b, { ...env, [ACCELERATOR_ENV]: accel.accelerator });
        } finally {
          rmSync(path.join(run.dir, PACKER_DISK), { force: true });
        }
        await keepPackagesOf(b, `vm:${ami.name}-${run.key.slice(0, KEY_TAG_LENGTH)}`);
        place = packerDisk(run.dir);
      }
      const { record, boot } = await keepAndBootVm(pipeline, ami, place, {
        accel,
        below,
        bootTest: run.bootTest,
        passEnv: b.env.passEnv,
        signal: run.signal,
        lockLost: run.lockLost,
        onLine: run.say,
        logsDir: run.logs.dir,
      });
      return {
        regions: { vm: path.relative(pipeline.config.dir, path.join(record.dir, record.disk)) },
        action: "baked",
        images: imagesOf(b.built),
        built: b.built,
        boot,
      };
    } finally {
      keepSerialLog(path.join(run.dir, "serial.log"), run.logs.dir, `${ami.name}.packer-serial.log`);
      if (!run.lockLost?.aborted) rmSync(run.dir, { recursive: true, force: true });
    }
  },

  recorded(pipeline, ami, key) {
    const disk = findVmDisk(pipeline.config.dir, ami.name, key);
    return disk
      ? {
          vm: {
            path: path.relative(pipeline.config.dir, path.join(disk.dir, disk.disk)),
            format: disk.format,
            bytes: disk.bytes,
          },
        }
      : {};
  },
};

/** The accelerator bake chose on this machine (tools/qemu.ts). */
const VM_VARIABLES = { sensitive: [], machine: [{ name: "qemu_accelerator", env: ACCELERATOR_ENV }] };

/** The vm target's part of the template: Packer's qemu builder boots a copy of the host's disk with its own kernel. */
export const vmTemplate: TargetTemplatePart = ({ ami }) => ({
  // The release stage is written on the host stage's disk, not provisioned: the host stage reads the package list.
  readsPackages: true,
  sourcePartial: "qemu",
  sourceRef: "source.qemu.ami",
  ...VM_VARIABLES,
  booted: true,
  ansibleUser: "root",
  vmDisk: PACKER_DISK,
  vmKernel: VM_FILES.kernel,
  vmInitrd: VM_FILES.initrd,
  vmKey: VM_FILES.key,
  vmOutput: VM_FILES.disk,
  vmCmdline: KERNEL_CMDLINE,
  vmNetdev: "user,id=user.0,hostfwd=tcp:127.0.0.1:{{ .SSHHostPort }}-:22",
  vmMemory: ami.vm?.memory ?? 0,
  vmCpus: ami.vm?.cpus ?? 0,
});
