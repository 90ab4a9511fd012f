/**
 * The local target: Packer's docker builder starts the AMI's host image (systemd as PID 1) in the
 * local engine, the same playbooks provision it, and the committed image is the "AMI", tagged by
 * key; the boot test then boots it as a host (host/local-host.ts). A failed boot test leaves
 * nothing tagged.
 */
import { mkdirSync, rmSync, writeFileSync } from "node:fs";
import path from "node:path";
import { localAmiRepository, shortKey } from "../config/model.js";
import { canonicalJson } from "../graph/keys.js";
import { BakeError, interruption } from "../errors.js";
import { acquireLock, machineLock } from "../files/process-lock.js";
import { stagesOn, stageTag, type Stage } from "../graph/stages.js";
import type { Pipeline } from "../state/read.js";
import type { AmiNode } from "../config/model.js";
import { renderFolder, type RenderedFolder } from "../ami/bake-ami.js";
import { DOCKER_SOCKET_ENV, type TargetTemplatePart } from "../ami/context.js";
import { keepPackagesOfBelow } from "../sbom/host-packages.js";
import { releaseContent } from "./release-stage.js";
import { bootTestLocal, checkHostImage, checkLocalTarget } from "../host/local-host.js";
import { ENGINE_SOCKET_IN_HOST, ENGINE_STANDIN, STANDIN_UNITS, SYSTEMD_RUN_FLAGS } from "../host/standin.js";
import { exportAndRunPacker, imagesOf, keepPackagesOf, type AmiTarget, type TargetBake } from "./target.js";

export const local: AmiTarget = {
  name: "local",
  bootsHere: true,

  needs(ami) {
    checkLocalTarget(ami);
  },

  variables: () => LOCAL_VARIABLES,

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
    // Staged: the folder is the host stage's, which Packer bakes; the release stage is written (release-stage.ts).
    const stages = stagesOn(ami, "local", pipeline.keys.get(ami.name));
    return withStandin(
      await renderFolder(pipeline, ami, dir, packer, extra, localTemplate, stages && { stage: stages[0] }),
    );
  },

  async bake(b) {
    const { pipeline, ami, run, docker } = b;
    const { engineSocket } = checkLocalTarget(ami);
    const env = { ...b.env.withheld, [DOCKER_SOCKET_ENV]: engineSocket };
    const stages = stagesOn(ami, "local", pipeline.keys.get(ami.name));
    let ids: string[];
    if (!stages) ids = await exportAndRunPacker(b, env);
    else {
      await bakeHostStage(b, stages[0], env);
      ids = [await releaseOnHostStage(b, stages)];
    }
    const regions = { local: localImageId(ids) };
    // A written release stage installs nothing: its package list is the host stage's.
    if (!stages) await keepPackagesOf(b, regions.local);
    else keepPackagesOfBelow(pipeline.config.dir, "local", stages[0], { name: ami.name, key: stages[1].key });
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

/** What the host container runs in place of an engine of its own: it uses the local engine's. */
function withStandin(folder: RenderedFolder): RenderedFolder {
  for (const [file, text] of Object.entries(ENGINE_STANDIN)) {
    mkdirSync(path.dirname(path.join(folder.dir, "host-standin", file)), { recursive: true });
    writeFileSync(path.join(folder.dir, "host-standin", file), text);
  }
  return folder;
}

/** The local host reaches the engine through its socket, wherever this machine keeps it. */
const LOCAL_VARIABLES = { sensitive: [{ name: "docker_socket", env: DOCKER_SOCKET_ENV }], machine: [] };

/** The local target's part of the template: Packer's docker builder starts the host image with systemd as PID 1. */
export const localTemplate: TargetTemplatePart = (input) => {
  const { config, ami, stage } = input;
  return {
    // A staged bake's release stage is written on the host stage's image: the host stage reads the package list.
    readsPackages: true,
    sourcePartial: "docker",
    sourceRef: "source.docker.ami",
    ...LOCAL_VARIABLES,
    booted: true,
    ansibleUser: "root",
    baseImageId: input.baseImageId ?? "unknown",
    localRepository: localAmiRepository(config, ami.name),
    hostRunFlags: SYSTEMD_RUN_FLAGS,
    standinUnits: STANDIN_UNITS,
    engineSocket: ENGINE_SOCKET_IN_HOST,
    dockerChanges: localImageChanges(
      config.project,
      stage?.node ?? ami.name,
      stage?.key ?? input.key ?? "unknown",
      stage?.inputs ?? input.inputs ?? {},
    ),
  };
};

/** What a local AMI's image (or its host stage's) is committed with: bake's labels, and how it boots. */
function localImageChanges(project: string, node: string, key: string, inputs: Record<string, string>): string[] {
  return [
    `LABEL bake.project=${project}`,
    `LABEL bake.node=${node}`,
    `LABEL bake.key=${key}`,
    `LABEL bake.inputs=${JSON.stringify(canonicalJson(inputs))}`,
    // Started as it was baked, the image boots: systemd as PID 1 (`docker commit` takes no STOPSIGNAL).
    "ENV container=docker",
    'ENTRYPOINT [""]',
    'CMD ["/sbin/init"]',
  ];
}

/** A stage's image: `<project>/<ami>:<stage>-<key12>`. */
function stageRef(pipeline: Pipeline, ami: AmiNode, stage: Stage): string {
  return `${localAmiRepository(pipeline.config, ami.name)}:${stageTag(stage)}`;
}

/**
 * The host stage's image, baked unless an image under its key is there. One bake per stage key
 * on this machine: two bakes that share a host stage (two releases at once) bake it once.
 */
async function bakeHostStage(b: TargetBake, host: Stage, env: Record<string, string | undefined>): Promise<void> {
  const { pipeline, ami, run, docker } = b;
  const ref = stageRef(pipeline, ami, host);
  const release = await acquireLock(
    machineLock(`ami-stage-${pipeline.config.project}-${ami.name}-${shortKey(host.key)}`),
    {
      signal: run.signal,
      onWait: (holder) => run.say(`stage host: waiting for ${ref}: ${holder} is baking it`),
    },
  );
  try {
    const found = await docker.inspectImage(ref);
    if (found?.labels["bake.key"] === host.key && !run.force) {
      run.say(`stage host: ${ref} has this key: reused`);
      return;
    }
    const ids = await exportAndRunPacker(b, env, { name: host.name, folder: b.folder, images: host.images });
    await keepPackagesOf(b, localImageId(ids), host);
  } finally {
    await release();
  }
}

/**
 * The release stage written on the host stage's image, not provisioned (release-stage.ts): its
 * files put into a container of that image (never started) and committed as a new layer, tagged
 * as Packer tags an AMI image. The container and the archive go whatever happens.
 */
async function releaseOnHostStage(b: TargetBake, stages: [Stage, Stage]): Promise<string> {
  const { pipeline, ami, run, docker } = b;
  const [host, release] = stages;
  const content = await releaseContent(b, stages);
  let container: string | undefined;
  try {
    run.say("stage release: writing the release into an image on the host stage's");
    container = await docker.createContainer({ Image: stageRef(pipeline, ami, host) });
    await docker.putFiles(container, content.files, content.links);
    if (run.signal.aborted) throw interruption(run.signal);
    const id = await docker.commitContainer(container, {
      repo: localAmiRepository(pipeline.config, ami.name),
      tag: shortKey(release.key),
      changes: localImageChanges(pipeline.config.project, ami.name, release.key, release.inputs),
    });
    run.say(`stage release: ${localAmiRepository(pipeline.config, ami.name)}:${shortKey(release.key)} (${id})`);
    return id;
  } finally {
    if (container) await docker.removeContainer(container);
    rmSync(content.archive, { force: true });
  }
}

/** The local target's result: the committed image id Packer reported. */
export function localImageId(artifactIds: string[]): string {
  const id = artifactIds.find((a) => /^sha256:[0-9a-f]{64}$/.test(a));
  if (!id) throw new BakeError(`packer reported no image id (artifacts: ${artifactIds.join(", ")})`);
  return id;
}
