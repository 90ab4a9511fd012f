/**
 * The only door to the Docker engine: the verbs bake uses, behind one narrow interface. The verbs
 * live by concern beside it (docker-images.ts, docker-registry.ts, docker-containers.ts) over
 * one shared connection (docker-engine.ts).
 */
import { BakeError } from "../errors.js";
import { connectEngine } from "./docker-engine.js";
import { imageVerbs, type ImageVerbs } from "./docker-images.js";
import { registryVerbs, type RegistryVerbs } from "./docker-registry.js";
import { containerVerbs, type ContainerVerbs } from "./docker-containers.js";

export { LABEL, BuildStreamError, dockerEndpoint, engineTarget, engineClient, loadDockerode, toRecord, repositoryOf, describeDockerError, type BakeImageRecord } from "./docker-engine.js";
export { buildQuery, type BuildRequest, type ImageVerbs, type SessionBuildRequest } from "./docker-images.js";
export { demuxBuffer, type ContainerRecord, type ContainerVerbs } from "./docker-containers.js";
export type { RegistryVerbs } from "./docker-registry.js";

/** The door to the engine: its own verbs and those of images, registries and containers, declared beside their code. */
export interface DockerTool extends ImageVerbs, RegistryVerbs, ContainerVerbs {
  /** Where the engine is, for messages. */
  readonly endpoint: string;
  ping(): Promise<{ version: string; apiVersion: string }>;
  /** Throws the connection error when the engine does not answer. */
  reachable(): Promise<void>;
}

export function connectDocker(options: { timeoutMs?: number } = {}): DockerTool {
  const engine = connectEngine(options);
  const { dockerode, quick, endpoint } = engine;
  return {
    endpoint,
    async ping() {
      const v = await dockerode().docker.version();
      return { version: v.Version, apiVersion: v.ApiVersion };
    },
    async reachable() {
      if (!quick) {
        await dockerode().docker.ping();
        return;
      }
      const res = await quick("GET", "/_ping");
      if (res.status !== 200) throw new BakeError(`docker engine at ${endpoint}: /_ping answered HTTP ${res.status}`);
    },
    ...imageVerbs(engine),
    ...registryVerbs(engine),
    ...containerVerbs(engine),
  };
}
