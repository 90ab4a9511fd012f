/**
 * `docker context`, read as the docker CLI reads it: which context is current (`--context`, then
 * DOCKER_HOST, then DOCKER_CONTEXT, then config.json's currentContext), and where its engine is
 * (the context store under DOCKER_CONFIG, default ~/.docker: `contexts/meta/<sha256 of the name>/meta.json`
 * and the TLS files beside it in `contexts/tls/<same>/docker/`). A named context becomes the
 * DOCKER_HOST, DOCKER_TLS_VERIFY and DOCKER_CERT_PATH that every other door (and every tool bake
 * starts) already understands, so a context is one more way of naming an engine, not a new one.
 */
import { createHash } from "node:crypto";
import { existsSync, readFileSync } from "node:fs";
import path from "node:path";
import { UsageError } from "../errors.js";
import { dockerConfigFile } from "./docker-credentials.js";

/** The engine a context names, as environment variables; `name` is the context chosen. */
export interface ContextEngine {
  name: string;
  /** Where the choice came from, for messages: `--context`, `DOCKER_CONTEXT` or config.json. */
  from: string;
  env: { DOCKER_HOST: string; DOCKER_TLS_VERIFY?: string; DOCKER_TLS?: string; DOCKER_CERT_PATH?: string };
}

/** The context the docker CLI would use, and what chose it; undefined for the default context. */
export function chosenContext(flag: string | undefined, env = process.env): { name: string; from: string } | undefined {
  if (flag) return flag === "default" ? undefined : { name: flag, from: "--context" };
  if (env.DOCKER_HOST) return undefined;
  if (env.DOCKER_CONTEXT)
    return env.DOCKER_CONTEXT === "default" ? undefined : { name: env.DOCKER_CONTEXT, from: "DOCKER_CONTEXT" };
  const configFile = dockerConfigFile(env);
  if (!existsSync(configFile)) return undefined;
  let current: unknown;
  try {
    current = JSON.parse(readFileSync(configFile, "utf8")).currentContext;
  } catch (e) {
    throw new UsageError(`${configFile} is not valid JSON (${(e as Error).message}): fix it or remove it`);
  }
  return typeof current === "string" && current && current !== "default"
    ? { name: current, from: configFile }
    : undefined;
}

/** Reads a named context from the store: its docker endpoint and its TLS files. */
export function readContext(choice: { name: string; from: string }, env = process.env): ContextEngine {
  const id = createHash("sha256").update(choice.name).digest("hex");
  const store = path.join(path.dirname(dockerConfigFile(env)), "contexts");
  const metaFile = path.join(store, "meta", id, "meta.json");
  if (!existsSync(metaFile))
    throw new UsageError(
      `docker context "${choice.name}" (from ${choice.from}) does not exist: no ${metaFile}; \`docker context ls\` lists the contexts there are`,
    );
  let endpoint: { Host?: unknown; SkipTLSVerify?: unknown } | undefined;
  try {
    endpoint = JSON.parse(readFileSync(metaFile, "utf8"))?.Endpoints?.docker;
  } catch (e) {
    throw new UsageError(`docker context "${choice.name}": ${metaFile} is not valid JSON (${(e as Error).message})`);
  }
  if (typeof endpoint?.Host !== "string" || !endpoint.Host)
    throw new UsageError(
      `docker context "${choice.name}" has no docker endpoint (Endpoints.docker.Host in ${metaFile})`,
    );
  const tlsDir = path.join(store, "tls", id, "docker");
  const tlsFiles = ["ca.pem", "cert.pem", "key.pem"].filter((f) => existsSync(path.join(tlsDir, f)));
  const out: ContextEngine["env"] = { DOCKER_HOST: endpoint.Host };
  // As the CLI: TLS when the context holds TLS files (verified unless SkipTLSVerify); the files are ca, cert, key.
  if (endpoint.Host.startsWith("tcp://") && (tlsFiles.length || endpoint.SkipTLSVerify === true)) {
    out.DOCKER_CERT_PATH = tlsDir;
    if (endpoint.SkipTLSVerify === true) out.DOCKER_TLS = "1";
    else out.DOCKER_TLS_VERIFY = "1";
  }
  return { ...choice, env: out };
}

let applied: ContextEngine | undefined;

/**
 * Puts the chosen context's engine into `env` (DOCKER_HOST and its TLS variables, replacing any
 * the environment held, since a named context decides them all), and says which it chose. The
 * tools bake starts (docker, Packer's docker builder, Ansible's docker connection) then reach the
 * same engine through DOCKER_HOST; DOCKER_CONTEXT is dropped, as DOCKER_HOST now decides.
 */
export function applyDockerContext(flag: string | undefined, env = process.env): ContextEngine | undefined {
  const choice = chosenContext(flag, env);
  if (!choice) return undefined;
  const engine = readContext(choice, env);
  for (const k of ["DOCKER_HOST", "DOCKER_TLS_VERIFY", "DOCKER_TLS", "DOCKER_CERT_PATH", "DOCKER_CONTEXT"])
    delete env[k];
  Object.assign(env, engine.env);
  if (env === process.env) applied = engine;
  return engine;
}

/** The context this process's engine came from, when one was named (for messages). */
export function appliedContext(): string | undefined {
  return applied?.name;
}
