/**
 * The vm target in stages. Packer bakes the host stage, whose disk is kept once per key on this
 * machine under .bake/vm/<ami>@host-<key12>/ (with its kernel, initrd, key and package list). The
 * release stage is written, not booted (release-stage.ts): a qcow2 whose backing file is the host
 * stage's disk, holding the release's files. The host's loader loads its archive at the first
 * boot; the boot test boots that disk.
 */
import { copyFileSync, mkdirSync, rmSync } from "node:fs";
import path from "node:path";
import { shortKey } from "../config/model.js";
import type { Stage } from "../graph/stages.js";
import { acquireLock, machineLock } from "../files/process-lock.js";
import { findVmDisk, VM_FILES, vmDir, writeVmRecord } from "../state/vm-record.js";
import { diskOnBelow, keepBakedDisk, PACKER_DISK } from "../host/vm-disk.js";
import { prepareVm } from "../host/vm-host.js";
import { ACCELERATOR_ENV, chooseAccelerator, type AcceleratorChoice } from "../tools/qemu.js";
import { keepPackagesOfBelow } from "../sbom/host-packages.js";
import { BakeError } from "../errors.js";
import { exportAndRunPacker, keepPackagesOf, type TargetBake } from "./target.js";
import { releaseContent } from "./release-stage.js";

/** The host stage's disk on this machine: found by its key, else baked by Packer and kept. One bake per stage key. */
export async function vmHostStage(
  b: TargetBake,
  host: Stage,
  env: Record<string, string | undefined>,
): Promise<{ dir: string; accel: AcceleratorChoice }> {
  const { pipeline, ami, run } = b;
  const where = (dir: string) => path.relative(pipeline.config.dir, dir);
  const release = await acquireLock(
    machineLock(`vm-stage-${pipeline.config.project}-${ami.name}-${shortKey(host.key)}`),
    {
      signal: run.signal,
      onWait: (holder) => run.say(`stage host: waiting for its disk: ${holder} is baking it`),
    },
  );
  try {
    const found = findVmDisk(pipeline.config.dir, host.node, host.key);
    // A kept release disk may stand on this disk: --force bakes the release stage again on it.
    if (found) {
      run.say(`stage host: ${where(path.join(found.dir, found.disk))} has this key: reused`);
      const accel = await chooseAccelerator(path.join(found.dir, VM_FILES.kernel), { signal: run.signal });
      run.say(`QEMU accelerator: ${accel.accelerator} (${accel.reason})`);
      return { dir: found.dir, accel };
    }
    const work = b.folder.dir;
    const accel = await prepareVm(pipeline, ami, work, { step: run.say, line: run.say }, run.signal);
    try {
      await exportAndRunPacker(
        b,
        { ...env, [ACCELERATOR_ENV]: accel.accelerator },
        { name: host.name, folder: b.folder, images: host.images },
      );
    } finally {
      rmSync(path.join(work, PACKER_DISK), { force: true });
    }
    const dir = vmDir(pipeline.config.dir, host.node, host.key);
    await keepPackagesOf(b, `vm:${host.node}-${shortKey(host.key)}`, host);
    try {
      keepBakedDisk(path.join(work, "output", VM_FILES.disk), dir, work);
      for (const f of [VM_FILES.kernel, VM_FILES.initrd]) copyFileSync(path.join(work, f), path.join(dir, f));
      const vm = ami.vm!;
      writeVmRecord(dir, { ami: host.node, key: host.key, disk: VM_FILES.disk, memory: vm.memory, cpus: vm.cpus });
    } catch (e) {
      rmSync(dir, { recursive: true, force: true });
      throw e;
    }
    run.say(`stage host: kept ${where(path.join(dir, VM_FILES.disk))}`);
    return { dir, accel };
  } finally {
    await release();
  }
}

/**
 * The release stage's disk, written into the AMI's folder on the host stage's: its archive, its
 * records and units, and the key the host stage's disk lets in. Its package list is the host stage's.
 */
export function releaseOnHostStage(
  b: TargetBake,
  stages: [Stage, Stage],
  belowDir: string,
): (dir: string) => Promise<void> {
  const { pipeline, ami, run } = b;
  const [host] = stages;
  return async (dir) => {
    rmSync(dir, { recursive: true, force: true });
    mkdirSync(dir, { recursive: true });
    const release = await releaseContent(b, stages);
    try {
      run.say("stage release: writing the release into a disk on the host stage's");
      await diskOnBelow(path.join(belowDir, VM_FILES.disk), path.join(dir, VM_FILES.disk), release, run.signal);
    } finally {
      rmSync(release.archive, { force: true });
    }
    for (const f of [VM_FILES.key, `${VM_FILES.key}.pub`]) copyFileSync(path.join(belowDir, f), path.join(dir, f));
    if (!keepPackagesOfBelow(pipeline.config.dir, "vm", host, { name: ami.name, key: stages[1].key }))
      throw new BakeError(`${ami.name}: the host stage ${shortKey(host.key)} has no package list kept: bake it again`);
  };
}
