/** The Docker engine's containers and networks: what `bake up`, the host boot test and exec use. */
import { createReadStream, statSync } from "node:fs";
import { pipeline } from "node:stream/promises";
import tar from "tar-stream";
import type { EngineConnection } from "./docker-engine.js";

export interface ContainerRecord {
  id: string;
  name: string;
  image: string;
  state: string;
  status: string;
  labels: Record<string, string>;
  ports: { ip?: string; publicPort?: number; privatePort: number; type: string }[];
}

/** A file to put into a container: its content, or the local file that holds it (streamed). */
export type ContainerFile = { path: string; mode: number } & ({ content: string | Buffer } | { from: string });

/** The engine's verbs for networks and containers (part of DockerTool). */
export interface ContainerVerbs {
  ensureNetwork(name: string, labels: Record<string, string>): Promise<void>;
  removeNetwork(name: string): Promise<boolean>;
  /** Removes every network carrying all of these labels; returns their names. */
  removeNetworks(labels: Record<string, string>): Promise<string[]>;
  /** Containers (running or not) carrying every one of these labels. */
  listContainers(labels: Record<string, string>): Promise<ContainerRecord[]>;
  inspectContainer(idOrName: string): Promise<any | undefined>;
  createContainer(options: Record<string, unknown>): Promise<string>;
  startContainer(id: string): Promise<void>;
  removeContainer(id: string): Promise<void>;
  /** Demultiplexed logs; with follow, resolves when the container stops or the signal aborts. */
  containerLogs(
    id: string,
    options: { follow: boolean; tail?: number; signal?: AbortSignal },
    write: (stream: "stdout" | "stderr", chunk: Buffer) => void,
  ): Promise<void>;
  /** Runs a command in a running container, streaming its output; returns its exit code. */
  exec(id: string, cmd: string[], write: (stream: "stdout" | "stderr", chunk: Buffer) => void): Promise<number>;
  /** Writes files into a container (created or running), from memory: nothing lands on this machine's disk. */
  /** Files (their content, or the local file that holds it) and symbolic links into a container, owned by root. */
  putFiles(id: string, files: ContainerFile[], links?: { path: string; target: string }[]): Promise<void>;
  /** The container's file system as a new image, tagged `repo:tag`, with Dockerfile-style `changes`; its id. */
  commitContainer(id: string, to: { repo: string; tag: string; changes: string[] }): Promise<string>;
  /** Waits for a container to stop; returns its exit code. */
  waitContainer(id: string): Promise<number>;
}

export function containerVerbs({ dockerode }: EngineConnection): ContainerVerbs {
  return {
    async ensureNetwork(name, labels) {
      const { docker } = dockerode();
      const found = await docker.listNetworks({ filters: JSON.stringify({ name: [name] }) });
      if (found.some((n) => n.Name === name)) return;
      await docker.createNetwork({ Name: name, Labels: labels, CheckDuplicate: true } as any);
    },
    async removeNetwork(name) {
      const { docker } = dockerode();
      try {
        await docker.getNetwork(name).remove();
        return true;
      } catch (e: any) {
        if (e?.statusCode === 404) return false;
        throw e;
      }
    },
    async removeNetworks(labels) {
      const { docker } = dockerode();
      const found = await docker.listNetworks({
        filters: JSON.stringify({ label: Object.entries(labels).map(([k, v]) => `${k}=${v}`) }),
      });
      for (const n of found)
        await docker
          .getNetwork(n.Id)
          .remove()
          .catch((e: any) => {
            if (e?.statusCode !== 404) throw e;
          });
      return found.map((n) => n.Name);
    },
    async listContainers(labels) {
      const filters = JSON.stringify({ label: Object.entries(labels).map(([k, v]) => `${k}=${v}`) });
      const list = await dockerode().docker.listContainers({ all: true, filters });
      return list.map((c) => ({
        id: c.Id,
        name: (c.Names?.[0] ?? "").replace(/^\//, ""),
        image: c.Image,
        state: c.State,
        status: c.Status,
        labels: c.Labels ?? {},
        ports: (c.Ports ?? []).map((p) => ({
          ip: p.IP,
          publicPort: p.PublicPort,
          privatePort: p.PrivatePort,
          type: p.Type,
        })),
      }));
    },
    async inspectContainer(idOrName) {
      try {
        return await dockerode().docker.getContainer(idOrName).inspect();
      } catch (e: any) {
        if (e?.statusCode === 404) return undefined;
        throw e;
      }
    },
    async createContainer(options) {
      return (await dockerode().docker.createContainer(options as any)).id;
    },
    async startContainer(id) {
      await dockerode().docker.getContainer(id).start();
    },
    async removeContainer(id) {
      await dockerode()
        .docker.getContainer(id)
        .remove({ force: true, v: true })
        .catch((e: any) => {
          if (e?.statusCode !== 404) throw e;
        });
    },
    async containerLogs(id, options, write) {
      const { longDocker } = dockerode();
      const container = longDocker.getContainer(id);
      const info = await container.inspect();
      const tty = Boolean(info.Config?.Tty);
      // Without follow the engine answers with the whole log at once; an abortSignal would make
      // dockerode treat the answer as a stream that never ends.
      const opts = {
        stdout: true,
        stderr: true,
        follow: options.follow,
        tail: options.tail ?? "all",
        ...(options.follow ? { abortSignal: options.signal } : {}),
      } as any;
      const data: any = await container.logs(opts);
      if (!options.follow) {
        demuxBuffer(Buffer.isBuffer(data) ? data : Buffer.from(data), tty, write);
        return;
      }
      await new Promise<void>((resolve, reject) => {
        const out = { write: (c: Buffer) => write("stdout", c) };
        const err = { write: (c: Buffer) => write("stderr", c) };
        if (tty) data.on("data", (c: Buffer) => write("stdout", c));
        else longDocker.modem.demuxStream(data, out as any, err as any);
        data.on("end", resolve);
        data.on("error", (e: Error) => (options.signal?.aborted ? resolve() : reject(e)));
        options.signal?.addEventListener("abort", () => {
          data.destroy?.();
          resolve();
        });
      });
    },
    async exec(id, cmd, write) {
      const { longDocker } = dockerode();
      const exec = await longDocker.getContainer(id).exec({ Cmd: cmd, AttachStdout: true, AttachStderr: true });
      const stream: any = await exec.start({ hijack: true, stdin: false } as any);
      await new Promise<void>((resolve, reject) => {
        longDocker.modem.demuxStream(
          stream,
          { write: (c: Buffer) => write("stdout", c) } as any,
          { write: (c: Buffer) => write("stderr", c) } as any,
        );
        stream.on("end", resolve);
        stream.on("error", reject);
      });
      return (await exec.inspect()).ExitCode ?? 0;
    },
    async waitContainer(id) {
      const { longDocker } = dockerode();
      return ((await longDocker.getContainer(id).wait()) as { StatusCode: number }).StatusCode;
    },
    async putFiles(id, files, links = []) {
      const pack = tar.pack();
      const name = (p: string) => p.replace(/^\/+/, "");
      const sent = dockerode()
        .docker.getContainer(id)
        .putArchive(pack as unknown as NodeJS.ReadableStream, { path: "/" });
      for (const f of files) {
        const header = { name: name(f.path), mode: f.mode, uid: 0, gid: 0 };
        if ("content" in f) pack.entry(header, f.content);
        else
          await pipeline(
            createReadStream(f.from),
            pack.entry({ ...header, size: statSync(f.from).size }) as unknown as NodeJS.WritableStream,
          );
      }
      for (const l of links)
        pack.entry({ name: name(l.path), type: "symlink", linkname: l.target, mode: 0o777, uid: 0, gid: 0 });
      pack.finalize();
      await sent;
    },
    async commitContainer(id, to) {
      const { longDocker } = dockerode();
      const made = (await longDocker.getContainer(id).commit({ repo: to.repo, tag: to.tag, changes: to.changes })) as {
        Id: string;
      };
      return made.Id;
    },
  };
}

/** Splits a non-streamed log buffer (8-byte frame headers unless the container has a TTY). */
export function demuxBuffer(
  buf: Buffer,
  tty: boolean,
  write: (stream: "stdout" | "stderr", chunk: Buffer) => void,
): void {
  if (tty) {
    write("stdout", buf);
    return;
  }
  let at = 0;
  while (at + 8 <= buf.length) {
    const kind = buf[at];
    const size = buf.readUInt32BE(at + 4);
    write(kind === 2 ? "stderr" : "stdout", buf.subarray(at + 8, at + 8 + size));
    at += 8 + size;
  }
}
