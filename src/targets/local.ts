/**
 * The local target: Packer's docker builder starts the AMI's host image (systemd as PID 1) in the
 * local engine, the same playbooks provision it, and the committed image is the "AMI", tagged by
 * key; the boot test then boots it as a host (host/local-host.ts). A failed boot test leaves
 * nothing tagged.
 */
import { mkdirSync, writeFileSync } from "node:fs";
import path from "node:path";
import { BakeError } from "../errors.js";
import { renderFolder } from "../ami/bake-ami.js";
import { DOCKER_SOCKET_ENV } from "../ami/context.js";
import { bootTestLocal, checkHostImage, checkLocalTarget } from "../host/local-host.js";
import { ENGINE_STANDIN } from "../host/standin.js";
import { exportAndRunPacker, imagesOf, keepPackagesOf, type AmiTarget } from "./target.js";

export const local: AmiTarget = {
  name: "local",
  bootsHere: true,

  needs(ami) {
    checkLocalTarget(ami);
  },

  async find(pipeline, ami, key, tools) {
    return (await tools.docker().listBakeImages(pipeline.config.project)).find(
      (r) => r.node === ami.name && r.key === key,
    )?.id;
  },

  async whole(_pipeline, _ami, found) {
    return { local: found };
  },

  checkBuilt(pipeline, ami, docker) {
    return checkHostImage(pipeline, ami, docker);
  },

  async render(pipeline, ami, dir, packer, extra) {
    const folder = await renderFolder(pipeline, ami, dir, packer, extra);
    // What the host container runs in place of an engine of its own: it uses the local engine's.
    for (const [file, text] of Object.entries(ENGINE_STANDIN)) {
      mkdirSync(path.dirname(path.join(dir, "host-standin", file)), { recursive: true });
      writeFileSync(path.join(dir, "host-standin", file), text);
    }
    return folder;
  },

  async bake(b) {
    const { pipeline, ami, run, docker } = b;
    const { engineSocket } = checkLocalTarget(ami);
    const ids = await exportAndRunPacker(b, { ...b.env.withheld, [DOCKER_SOCKET_ENV]: engineSocket });
    const regions = { local: localImageId(ids) };
    await keepPackagesOf(b, regions.local);
    const boot = run.bootTest
      ? await bootTestLocal(pipeline, ami, regions.local, docker, {
          engineSocket,
          passEnv: b.env.passEnv,
          signal: run.signal,
          onLine: run.say,
        })
      : undefined;
    return { regions, action: "baked", images: imagesOf(b.built), built: b.built, boot };
  },
};

/** The local target's result: the committed image id Packer reported. */
export function localImageId(artifactIds: string[]): string {
  const id = artifactIds.find((a) => /^sha256:[0-9a-f]{64}$/.test(a));
  if (!id) throw new BakeError(`packer reported no image id (artifacts: ${artifactIds.join(", ")})`);
  return id;
}
