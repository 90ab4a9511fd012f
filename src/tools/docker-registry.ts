/** The Docker engine's registry traffic: push, pull, and the registry's digest of a reference. */
import { BakeError } from "../errors.js";
import { dockerConfigFile, refusedMessage, REFUSED, registryAuth, registryOf } from "./docker-credentials.js";
import { pushDigest, streamError, type StreamMessage } from "./docker-stream.js";
import type { EngineConnection } from "./docker-engine.js";

/** The engine's verbs for registries (part of DockerTool). */
export interface RegistryVerbs {
  /** Pushes repo:tag; returns the manifest digest. */
  push(repo: string, tag: string, signal?: AbortSignal, onLine?: (line: string) => void): Promise<string>;
  /** Pulls a reference; returns false when the registry does not have it. */
  pull(ref: string, signal?: AbortSignal, onLine?: (line: string) => void): Promise<boolean>;
  /** The registry's manifest digest for a reference, without pulling (the engine asks the registry). */
  distributionDigest(ref: string): Promise<string | undefined>;
}

export function registryVerbs({ dockerode, follow }: EngineConnection): RegistryVerbs {
  return {
    async push(repo, tag, signal, onLine) {
      const auth = await registryAuth(registryOf(repo));
      const stream: NodeJS.ReadableStream = await (dockerode().longDocker.getImage(`${repo}:${tag}`) as any).push({
        tag,
        authconfig: auth ?? { serveraddress: registryOf(repo) },
        abortSignal: signal,
      } as any);
      const messages: StreamMessage[] = [];
      await follow(
        stream,
        (m) => {
          messages.push(m);
          if (m.status && onLine) onLine(`${m.id ? `${m.id}: ` : ""}${m.status}`);
        },
        signal,
      );
      const error = streamError(messages);
      if (error && REFUSED.test(error))
        throw new BakeError(
          refusedMessage(`pushing ${repo}:${tag}`, error, registryOf(repo), Boolean(auth), dockerConfigFile()),
        );
      if (error) throw new BakeError(`pushing ${repo}:${tag} failed: ${error}`);
      const digest = pushDigest(messages);
      if (!digest) throw new BakeError(`pushing ${repo}:${tag} reported no digest`);
      return digest;
    },
    async pull(ref, signal, onLine) {
      const auth = await registryAuth(registryOf(ref));
      let stream: NodeJS.ReadableStream;
      try {
        stream = await dockerode().longDocker.pull(ref, { authconfig: auth, abortSignal: signal } as any);
      } catch (e: any) {
        if (e?.statusCode === 404) return false;
        const reason = String(e?.json?.message ?? e?.message ?? e);
        if (REFUSED.test(reason))
          throw new BakeError(
            refusedMessage(`pulling ${ref}`, reason, registryOf(ref), Boolean(auth), dockerConfigFile()),
          );
        throw e;
      }
      const messages: StreamMessage[] = [];
      await follow(
        stream,
        (m) => {
          messages.push(m);
          if (m.status && onLine && !m.progress) onLine(`${m.id ? `${m.id}: ` : ""}${m.status}`);
        },
        signal,
      );
      const error = streamError(messages);
      if (error) {
        if (/not found|manifest unknown/i.test(error)) return false;
        if (REFUSED.test(error))
          throw new BakeError(
            refusedMessage(`pulling ${ref}`, error, registryOf(ref), Boolean(auth), dockerConfigFile()),
          );
        throw new BakeError(`pulling ${ref} failed: ${error}`);
      }
      return true;
    },
    async distributionDigest(ref) {
      try {
        const info: any = await (dockerode().docker.getImage(ref) as any).distribution({
          authconfig: await registryAuth(registryOf(ref)),
        });
        return info?.Descriptor?.digest;
      } catch (e: any) {
        if (e?.statusCode === 404 || e?.statusCode === 401 || e?.statusCode === 403) return undefined;
        throw e;
      }
    },
  };
}

/**
 * Whether a registry answers its API at /v2/, as a client first asks: its HTTP status (200, or 401
 * when it wants credentials), or why it could not be reached. Plain HTTP for loopback hosts, as
 * the engine allows them; HTTPS for every other.
 */
export async function probeRegistry(
  host: string,
  timeoutMs = 3000,
): Promise<{ status: number } | { status: "unreachable"; why: string }> {
  const scheme = /^(127\.|localhost[:]?|\[::1\])/.test(host) ? "http" : "https";
  try {
    const res = await fetch(`${scheme}://${host}/v2/`, { signal: AbortSignal.timeout(timeoutMs) });
    await res.body?.cancel();
    return { status: res.status };
  } catch (e: any) {
    return { status: "unreachable", why: String(e?.cause?.code ?? e?.name ?? e) };
  }
}
