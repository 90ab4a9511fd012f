/**
 * Base images' starting points: a rootfs (debootstrap or tarball) imported once and kept as
 * `bake-rootfs:<digest12>` (labelled with the full spec digest), or an upstream image pinned
 * by digest. A debootstrap rootfs is also cached as a tarball keyed by its spec, so a wiped
 * engine does not pay for debootstrap again.
 */
import { createReadStream, existsSync, mkdirSync, renameSync, rmSync } from "node:fs";
import path from "node:path";
import type { ImageNode } from "../config/model.js";
import { BakeError } from "../errors.js";
import { sha256 } from "../graph/context-files.js";
import { debootstrap, packRootfs, tidyRootfs } from "../tools/debootstrap.js";
import { LABEL, repositoryOf, type DockerTool } from "../tools/docker.js";
import { bakeCacheDir, machineLock, withLock } from "../files/process-lock.js";

export const ROOTFS_REPO = "bake-rootfs";

export function rootfsCacheDir(env = process.env): string {
  return path.join(bakeCacheDir(env), "rootfs");
}

export interface StepReport {
  step(text: string): void;
  line(text: string): void;
}

/** The id of the image a base starts from, importing or pulling it when the engine lacks it. */
export async function baseParentId(
  node: ImageNode,
  rootfsDigest: string | undefined,
  from: string | undefined,
  docker: DockerTool,
  report: StepReport,
  signal?: AbortSignal,
): Promise<string> {
  if (node.from) {
    const [, digest] = (from ?? "").split("@");
    if (!digest) throw new BakeError(`${node.name}: upstream image ${node.from} has no known digest`);
    const pinned = `${repositoryOf(node.from)}@${digest}`;
    const local = await docker.inspectImage(pinned);
    if (local) return local.id;
    report.step(`pulling ${pinned}`);
    if (!(await docker.pull(pinned, signal, report.line)))
      throw new BakeError(`${node.name}: ${pinned} is not in its registry`);
    return (await docker.inspectImage(pinned))!.id;
  }
  if (!rootfsDigest || !node.rootfs) throw new BakeError(`${node.name}: a base needs rootfs: or from:`);
  const tag = sha256(rootfsDigest).slice(0, 12);
  const rootfs = node.rootfs;
  // One debootstrap and one import per spec on this machine, however many bakes want it at once.
  return withLock(
    machineLock(`rootfs-${tag}`),
    async () => {
      const existing = await docker.inspectImage(`${ROOTFS_REPO}:${tag}`);
      if (existing && existing.labels[LABEL.rootfs] === rootfsDigest) return existing.id;
      let tarFile = rootfs.tar;
      if (rootfs.debootstrap) {
        const cacheDir = rootfsCacheDir();
        tarFile = path.join(cacheDir, `${sha256(rootfsDigest)}.tar`);
        if (!existsSync(tarFile)) {
          mkdirSync(cacheDir, { recursive: true });
          const work = path.join(cacheDir, `tmp-${process.pid}-${tag}`);
          const partial = `${tarFile}.partial-${process.pid}`;
          try {
            report.step(`debootstrap ${rootfs.debootstrap.suite}`);
            await debootstrap(rootfs.debootstrap, work, {
              credentials: rootfs.mirrorCredentials,
              onLine: report.line,
              signal,
            });
            tidyRootfs(work);
            report.step("packing the rootfs");
            await packRootfs(work, partial, signal);
            renameSync(partial, tarFile);
          } finally {
            rmSync(work, { recursive: true, force: true });
            rmSync(partial, { force: true });
          }
        }
      }
      report.step("importing the rootfs");
      return docker.importRootfs(
        createReadStream(tarFile!),
        { repo: ROOTFS_REPO, tag },
        { [LABEL.rootfs]: rootfsDigest },
        signal,
      );
    },
    { signal, onWait: (holder) => report.step(`waiting for the rootfs ${tag}: ${holder} prepares it`) },
  );
}
