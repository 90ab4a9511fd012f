/**
 * The only door to the Docker engine: the verbs bake uses, behind one narrow interface. The verbs
 * live by concern beside it (docker-images.ts, docker-builds.ts, docker-image-files.ts,
 * docker-registry.ts, docker-containers.ts) over
 * one shared connection (docker-engine.ts).
 */
import { BakeError } from "../errors.js";
import { connectEngine } from "./docker-engine.js";
import { imageVerbs, type ImageVerbs } from "./docker-images.js";
import { buildVerbs, type BuildVerbs } from "./docker-builds.js";
import { imageFileVerbs, type ImageFileVerbs } from "./docker-image-files.js";
import { registryVerbs, type RegistryVerbs } from "./docker-registry.js";
import { containerVerbs, type ContainerVerbs } from "./docker-containers.js";

export {
  LABEL,
  BuildStreamError,
  dockerEndpoint,
  engineTarget,
  engineTransport,
  engineTls,
  engineClient,
  loadDockerode,
  toRecord,
  repositoryOf,
  describeDockerError,
  type BakeImageRecord,
} from "./docker-engine.js";
export { applyDockerContext, appliedContext } from "./docker-context.js";
export type { ImageVerbs } from "./docker-images.js";
export { buildQuery, type BuildRequest, type BuildVerbs, type SessionBuildRequest } from "./docker-builds.js";
export type { ImageFileVerbs } from "./docker-image-files.js";
export { demuxBuffer, type ContainerRecord, type ContainerVerbs } from "./docker-containers.js";
export type { RegistryVerbs } from "./docker-registry.js";

/** The door to the engine: its own verbs and those of images, builds, image files, registries and containers, declared beside their code. */
export interface DockerTool extends ImageVerbs, BuildVerbs, ImageFileVerbs, RegistryVerbs, ContainerVerbs {
  /** Where the engine is, for messages. */
  readonly endpoint: string;
  ping(): Promise<{ version: string; apiVersion: string }>;
  /** Throws the connection error when the engine does not answer. */
  reachable(): Promise<void>;
}

export function connectDocker(options: { timeoutMs?: number } = {}): DockerTool {
  const engine = connectEngine(options);
  const { dockerode, quick, endpoint } = engine;
  const images = imageVerbs(engine);
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
    ...images,
    ...buildVerbs(engine, images),
    ...imageFileVerbs(engine),
    ...registryVerbs(engine),
    ...containerVerbs(engine),
  };
}
