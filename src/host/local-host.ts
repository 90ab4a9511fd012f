/**
 * The local target's host, around the Packer run: what must hold before it (the AMI names a host
 * image, that image has systemd, the engine is on a unix socket, pass_env values are there for
 * the boot test) and the boot test after it, whose failure leaves nothing tagged.
 */
import type { AmiNode } from "../config/model.js";
import { imageRepository, KEY_TAG_LENGTH, localAmiRepository, shippedImages } from "../config/model.js";
import { knownKeys, type Pipeline } from "../state/read.js";
import { BootTestFailedError, ConfigError, interruption, UsageError } from "../errors.js";
import { dockerEndpoint, type DockerTool } from "../tools/docker.js";
import { passEnvValues, servicesOf } from "../up/services.js";
import { amiGossTest, bootTest, type BootReport } from "./boot-test.js";

/** What a local bake needs before anything builds; throws a config or usage error (exit 2) otherwise. */
export function checkLocalTarget(ami: AmiNode, env = process.env): { engineSocket: string } {
  if (!ami.local) {
    throw new ConfigError(
      ami.position,
      `AMI "${ami.name}" has no local: image for --target local`,
      `add local: { image: <an image with systemd> } to amis.${ami.name}: the local host boots with systemd as PID 1`,
    );
  }
  const endpoint = dockerEndpoint(env);
  if (!endpoint.startsWith("unix://"))
    throw new UsageError(
      `--target local mounts the engine's socket into the host; DOCKER_HOST=${endpoint} is not a unix socket`,
    );
  return { engineSocket: endpoint.slice("unix://".length) };
}

/** The pass_env values the boot test hands the host, as user-data would: all must be set (exit 2). */
export function bootPassEnv(pipeline: Pipeline, ami: AmiNode, env = process.env): Record<string, string> {
  const keys = knownKeys(pipeline);
  return passEnvValues(pipeline.config, servicesOf(pipeline.config, ami.services, keys), env);
}

/** The host image, once built, boots with systemd: config error at `local.image` otherwise. */
export async function checkHostImage(pipeline: Pipeline, ami: AmiNode, docker: DockerTool): Promise<void> {
  const host = ami.local!;
  const ref = `${imageRepository(pipeline.config, host.image)}:${pipeline.keys.get(host.image)!.key!.slice(0, KEY_TAG_LENGTH)}`;
  for (const p of ["/sbin/init", "/lib/systemd/systemd"]) {
    if (!(await docker.imageHasPath(ref, p))) {
      throw new ConfigError(
        host.position,
        `local image "${host.image}" has no systemd (${p} is missing): the local host boots with systemd as PID 1`,
        `install systemd-sysv in ${host.image}'s Dockerfile, or include it in its debootstrap spec`,
      );
    }
  }
}

export interface BootOptions {
  engineSocket: string;
  passEnv: Record<string, string>;
  signal: AbortSignal;
  onLine: (l: string) => void;
}

/** The images a host must hold after its loader ran: each by its key tag, with its key. */
export function shippedRefs(pipeline: Pipeline, ami: AmiNode): { ref: string; key: string }[] {
  const keys = knownKeys(pipeline);
  return shippedImages(ami).map((n) => ({
    ref: `${imageRepository(pipeline.config, n)}:${keys.get(n)!.slice(0, KEY_TAG_LENGTH)}`,
    key: keys.get(n)!,
  }));
}

/** Boots a local machine image as a host and runs every check, the AMI's test: spec last. */
export async function bootLocal(
  pipeline: Pipeline,
  ami: AmiNode,
  imageId: string,
  docker: DockerTool,
  options: BootOptions,
): Promise<BootReport> {
  const keys = knownKeys(pipeline);
  return bootTest({
    docker,
    image: imageId,
    project: pipeline.config.project,
    ami: ami.name,
    shipped: shippedRefs(pipeline, ami),
    services: servicesOf(pipeline.config, ami.services, keys),
    passEnv: options.passEnv,
    runtimeEnv: ami.runtimeEnv,
    engineSocket: options.engineSocket,
    ...amiGossTest(pipeline.config.dir, ami),
    signal: options.signal,
    onLine: options.onLine,
  });
}

/** Boots the baked image; on failure removes its key tag (nothing is left tagged) and throws (exit 1). */
export async function bootTestLocal(
  pipeline: Pipeline,
  ami: AmiNode,
  imageId: string,
  docker: DockerTool,
  options: BootOptions,
): Promise<BootReport> {
  const report = await bootLocal(pipeline, ami, imageId, docker, options);
  if (report.ok && !options.signal.aborted) return report;
  await docker.removeImage(
    `${localAmiRepository(pipeline.config, ami.name)}:${pipeline.keys.get(ami.name)!.key!.slice(0, KEY_TAG_LENGTH)}`,
  );
  if (options.signal.aborted) throw interruption(options.signal);
  throw new BootTestFailedError(ami.name, report.checks);
}
