/**
 * Registry credentials found the way the docker CLI finds them in its config file
 * (`$DOCKER_CONFIG/config.json`, by default `~/.docker/config.json`): the registry's own
 * credential helper (`credHelpers`), else the default store (`credsStore`), else its `auths`
 * entry. A helper is the program `docker-credential-<name>`, asked with `get` and the registry
 * on stdin (github.com/docker/docker-credential-helpers); ECR, GCR and desktop keychains work so.
 * What a helper answers is never logged.
 */
import { readFileSync } from "node:fs";
import { homedir } from "node:os";
import path from "node:path";
import { BakeError } from "../errors.js";
import { run } from "./exec.js";

export interface RegistryAuth {
  username?: string;
  password?: string;
  identitytoken?: string;
  serveraddress: string;
}

interface AuthEntry {
  auth?: string;
  username?: string;
  password?: string;
  identitytoken?: string;
}

export interface DockerConfig {
  auths?: Record<string, AuthEntry>;
  credsStore?: string;
  credHelpers?: Record<string, string>;
}

/** Docker Hub's key in config.json; every other registry is keyed by its host[:port]. */
export const DOCKER_HUB = "https://index.docker.io/v1/";
const HUB_HOSTS = new Set(["docker.io", "index.docker.io", "registry-1.docker.io"]);

/** The registry an image reference lives in, as config.json keys it (`debian:12` → Docker Hub). */
export function registryOf(ref: string): string {
  const slash = ref.indexOf("/");
  if (slash < 0) return DOCKER_HUB;
  const first = ref.slice(0, slash);
  if (HUB_HOSTS.has(first)) return DOCKER_HUB;
  return first.includes(".") || first.includes(":") || first === "localhost" ? first : DOCKER_HUB;
}

/** `https://host:5000/v1/` → `host:5000`, as the CLI compares config keys. */
const hostnameOf = (key: string) => key.replace(/^https?:\/\//, "").split("/")[0];

/** Where the credentials for `registry` are: a helper to ask, an `auths` entry, or none. */
export function credentialSource(
  config: DockerConfig,
  registry: string,
): { helper: string; from: "credHelpers" | "credsStore" } | { entry: AuthEntry } | undefined {
  const host = hostnameOf(registry);
  const helper = Object.entries(config.credHelpers ?? {}).find(([k]) => k === registry || hostnameOf(k) === host)?.[1];
  if (helper) return { helper, from: "credHelpers" };
  if (config.credsStore) return { helper: config.credsStore, from: "credsStore" };
  const auths = config.auths ?? {};
  const entry = auths[registry] ?? Object.entries(auths).find(([k]) => hostnameOf(k) === host)?.[1];
  return entry ? { entry } : undefined;
}

export function entryAuth(entry: AuthEntry, registry: string): RegistryAuth | undefined {
  if (entry.identitytoken) return { identitytoken: entry.identitytoken, serveraddress: registry };
  if (entry.auth) {
    const decoded = Buffer.from(entry.auth, "base64").toString("utf8");
    const colon = decoded.indexOf(":");
    return { username: decoded.slice(0, colon), password: decoded.slice(colon + 1), serveraddress: registry };
  }
  if (entry.username) return { username: entry.username, password: entry.password, serveraddress: registry };
  return undefined;
}

/**
 * A helper's answer to `get`: `{"ServerURL","Username","Secret"}`; the user name `<token>`
 * marks an identity token. Undefined when the answer holds neither.
 */
export function helperAuth(stdout: string, registry: string): RegistryAuth | undefined {
  let answer: { Username?: string; Secret?: string };
  try {
    answer = JSON.parse(stdout);
  } catch {
    // The text may hold a secret: it is not repeated.
    throw new BakeError("its answer to `get` is not JSON");
  }
  if (!answer.Username && !answer.Secret) return undefined;
  if (answer.Username === "<token>") return { identitytoken: answer.Secret, serveraddress: registry };
  return { username: answer.Username, password: answer.Secret, serveraddress: registry };
}

/** The helpers' "nothing stored" answer (docker-credential-helpers' ErrCredentialsNotFound). */
const NOT_FOUND = /credentials not found in native keychain/i;

export const dockerConfigFile = (env: NodeJS.ProcessEnv = process.env) =>
  path.join(env.DOCKER_CONFIG || path.join(homedir(), ".docker"), "config.json");

/** How a registry says no to a push or pull for want of (good) credentials. */
export const REFUSED = /no basic auth credentials|unauthorized|authentication required|access denied|denied:/i;

/** A registry's refusal, with where bake looked for credentials and what it found there. */
export function refusedMessage(action: string, reason: string, registry: string, found: boolean, file: string): string {
  const login = registry === DOCKER_HUB ? "docker login" : `docker login ${registry}`;
  const advice = found
    ? `it refused the credentials bake found for it in ${file}`
    : `${file} holds no credentials for it: ${login}, or name a credential helper for it (credHelpers)`;
  return `${action} failed: the registry refused it (${reason.trim()}); ${advice}`;
}

const asked = new Map<string, Promise<RegistryAuth | undefined>>();

/** Credentials for a registry (host[:port], or DOCKER_HUB); a helper is asked once per run. */
export function registryAuth(
  registry: string,
  env: NodeJS.ProcessEnv = process.env,
): Promise<RegistryAuth | undefined> {
  const file = dockerConfigFile(env);
  const memo = `${file}\n${registry}`;
  if (!asked.has(memo)) asked.set(memo, lookUp(file, registry, env));
  return asked.get(memo)!;
}

async function lookUp(file: string, registry: string, env: NodeJS.ProcessEnv): Promise<RegistryAuth | undefined> {
  let config: DockerConfig;
  try {
    config = JSON.parse(readFileSync(file, "utf8"));
  } catch {
    return undefined;
  }
  const source = credentialSource(config, registry);
  if (!source) return undefined;
  if ("entry" in source) return entryAuth(source.entry, registry);
  const program = `docker-credential-${source.helper}`;
  const where = `${source.from} in ${file}`;
  const answer = await run(program, ["get"], {
    input: registry,
    env,
    timeoutMs: 60_000,
    reject: false,
    notInstalled: `${program} (named by ${where}) is not installed`,
  });
  if (answer.exitCode !== 0) {
    if (NOT_FOUND.test(answer.stdout) || NOT_FOUND.test(answer.stderr)) return undefined;
    const said = (answer.stderr || answer.stdout).trim().split("\n")[0] ?? "";
    throw new BakeError(
      `${program} (named by ${where}) failed for ${registry} (${answer.timedOut ? "no answer within 60 s" : `exit ${answer.exitCode}`})${said ? `: ${said}` : ""}`,
    );
  }
  try {
    return helperAuth(answer.stdout, registry);
  } catch (e) {
    throw new BakeError(`${program} (named by ${where}) for ${registry}: ${(e as Error).message}`);
  }
}
