/** Real-engine helpers: a busybox rootfs tarball (fast base), image lookups, cleanup. */
import { execa } from "execa";
import { existsSync, mkdirSync, mkdtempSync, rmSync, copyFileSync, symlinkSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { createRequire } from "node:module";
import type Docker from "dockerode";
import { createServer, request } from "node:http";
import { connect, createServer as createNetServer, type AddressInfo, type Socket } from "node:net";
import { ROOT } from "./bake.js";

export const docker: Docker = new (createRequire(import.meta.url)("dockerode"))();

const CACHE = path.join(ROOT, ".bake", "test-cache");

/** A rootfs tarball holding busybox and its applets: imports and runs in about a second. */
export async function busyboxRootfs(): Promise<string> {
  const tar = path.join(CACHE, "busybox-rootfs.tar");
  if (existsSync(tar)) return tar;
  mkdirSync(CACHE, { recursive: true });
  const dir = mkdtempSync(path.join(tmpdir(), "bake-busybox-"));
  for (const d of ["bin", "tmp", "etc", "root"]) mkdirSync(path.join(dir, d));
  copyFileSync("/bin/busybox", path.join(dir, "bin/busybox"));
  const { stdout } = await execa("/bin/busybox", ["--list"]);
  for (const applet of stdout.split("\n").filter((a) => a && a !== "busybox"))
    symlinkSync("busybox", path.join(dir, "bin", applet));
  const partial = `${tar}.${process.pid}`;
  await execa("tar", [
    "--numeric-owner",
    "--owner=0",
    "--group=0",
    "--mtime=@0",
    "--sort=name",
    "-C",
    dir,
    "-cf",
    partial,
    ".",
  ]);
  await execa("mv", [partial, tar]);
  rmSync(dir, { recursive: true, force: true });
  return tar;
}

/** An image made from the busybox rootfs with `docker import`, for tests that need a plain base. */
export async function busyboxImage(ref = "bake-test/busybox:latest"): Promise<string> {
  const existing = await docker
    .getImage(ref)
    .inspect()
    .catch(() => undefined);
  if (existing) return existing.Id;
  await execa("sh", ["-c", `docker import - ${ref} < "${await busyboxRootfs()}"`]);
  return (await docker.getImage(ref).inspect()).Id;
}

export async function imagesOfProject(project: string): Promise<Docker.ImageInfo[]> {
  return docker.listImages({ filters: JSON.stringify({ label: [`bake.project=${project}`] }) });
}

/**
 * Removes every image labelled with the project (tests use a project name of their own). A few
 * passes: a parent goes only after its children, and an image only once the container a tool
 * ran from it (Packer's) is gone.
 */
export async function removeProject(project: string): Promise<void> {
  for (let pass = 0; pass < 5; pass++) {
    const left = await imagesOfProject(project);
    if (!left.length) return;
    if (pass) await new Promise((r) => setTimeout(r, 500));
    for (const img of left)
      await docker
        .getImage(img.Id)
        .remove({ force: true })
        .catch(() => undefined);
  }
}

/**
 * A clean runner's build cache, for one project only: BuildKit's records of the steps whose
 * description holds `marker` (a string unique to the test), and every record built on them,
 * removed children first. Other tests' records stay: the engine is shared.
 */
export async function forgetBuildSteps(marker: string): Promise<number> {
  const records = async (): Promise<{ ID: string; Parent?: string; Description: string }[]> =>
    ((await docker.df()) as any).BuildCache ?? [];
  let removed = 0;
  for (let pass = 0; pass < 10; pass++) {
    const all = await records();
    const ours = new Set(all.filter((r) => r.Description.includes(marker)).map((r) => r.ID));
    for (let grew = true; grew;) {
      grew = false;
      for (const r of all)
        if (r.Parent && ours.has(r.Parent) && !ours.has(r.ID)) {
          ours.add(r.ID);
          grew = true;
        }
    }
    if (!ours.size) return removed;
    // The leaves first: a record that others are built on is kept until they are gone.
    const leaves = [...ours].filter((id) => !all.some((r) => r.Parent === id));
    for (const id of leaves) {
      const res: any = await docker.pruneBuilder({ filters: JSON.stringify({ id: [id] }) } as any);
      removed += res?.CachesDeleted?.length ?? 0;
    }
  }
  throw new Error(`build cache records of ${marker} are still there after 10 passes`);
}

export function uniqueProject(prefix: string): string {
  return `${prefix}-${process.pid}-${Math.floor(Math.random() * 1e6)}`;
}

/**
 * The containers that are this test's: those labelled with the project (or a project named after
 * it, `<project>-…`), and those without a bake project made from one of its images, as a classic
 * build's step containers and Packer's build container are. scripts/test.mjs runs other test
 * files beside this one, whose builds make short-lived containers from images of their own.
 */
export async function containerCount(project: string): Promise<number> {
  const ours = (owner: string | undefined) => owner === project || !!owner?.startsWith(`${project}-`);
  const images = new Set(
    (await docker.listImages({ all: true, filters: JSON.stringify({ label: ["bake.project"] }) }))
      .filter((i) => ours(i.Labels?.["bake.project"]))
      .map((i) => i.Id),
  );
  const all = await docker.listContainers({ all: true });
  return all.filter((c) => {
    const owner = c.Labels?.["bake.project"];
    return ours(owner) || (owner === undefined && images.has(c.ImageID));
  }).length;
}

/**
 * The number of the project's containers (see containerCount) once it has come back down to
 * `expected` (the engine removes a cancelled build's container shortly after the request ends),
 * or after about ten seconds.
 */
export async function containerCountSettling(expected: number, project: string): Promise<number> {
  let count = await containerCount(project);
  for (let i = 0; i < 50 && count > expected; i++) {
    await new Promise((r) => setTimeout(r, 200));
    count = await containerCount(project);
  }
  return count;
}

/** The parent tags (`bake-parent/<host>/<pid>:<id>`) a bake process left on the engine. */
export async function parentTagsOf(pid: number): Promise<string[]> {
  const images = await docker.listImages({ filters: JSON.stringify({ reference: [`bake-parent/*/${pid}`] }) });
  return images.flatMap((i) => i.RepoTags ?? []).filter((t) => t.includes(`/${pid}:`));
}

/**
 * A proxy before the engine that passes builds but refuses sessions, as docker-socket-proxy does
 * by default: bake behind it builds with the classic builder. `host` is its DOCKER_HOST.
 */
export async function sessionRefusingProxy(): Promise<{ host: string; close: () => void }> {
  const proxy = createServer((req, res) => {
    if (/\/session$/.test(req.url!.split("?")[0]))
      return void res
        .writeHead(403, { "Content-Type": "application/json" })
        .end('{"message":"sessions are not allowed"}');
    const upstream = request(
      { socketPath: "/var/run/docker.sock", method: req.method, path: req.url, headers: req.headers },
      (r) => {
        res.writeHead(r.statusCode!, r.headers);
        r.pipe(res);
      },
    );
    upstream.on("error", (e) => res.destroy(e));
    req.pipe(upstream);
  });
  await new Promise<void>((resolve) => proxy.listen(0, "127.0.0.1", resolve));
  return { host: `tcp://127.0.0.1:${(proxy.address() as AddressInfo).port}`, close: () => proxy.close() };
}

/**
 * The engine's socket behind one that can be cut, as when the engine stops: `cut()` drops every
 * connection and removes the socket (new ones fail ENOENT, as with a stopped dockerd); `restore()`
 * listens again. `host` is its DOCKER_HOST. Cutting it stops no other test's use of the engine.
 */
export async function cuttableEngine(): Promise<{
  host: string;
  cut: () => Promise<void>;
  restore: () => Promise<void>;
  close: () => Promise<void>;
}> {
  const dir = mkdtempSync(path.join(tmpdir(), "bake-engine-"));
  const socketPath = path.join(dir, "docker.sock");
  const open = new Set<Socket>();
  const server = createNetServer((client) => {
    const engine = connect("/var/run/docker.sock");
    for (const s of [client, engine]) {
      open.add(s);
      s.on("close", () => open.delete(s));
      s.on("error", () => undefined);
    }
    client.pipe(engine).pipe(client);
    client.on("close", () => engine.destroy());
    engine.on("close", () => client.destroy());
  });
  const listen = () => new Promise<void>((resolve) => server.listen(socketPath, resolve));
  const cut = async () => {
    const closed = new Promise<void>((resolve) => server.close(() => resolve()));
    for (const s of open) s.destroy();
    await closed;
  };
  await listen();
  return {
    host: `unix://${socketPath}`,
    cut,
    restore: listen,
    close: async () => {
      if (server.listening) await cut();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}
