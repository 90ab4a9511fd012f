/**
 * The only module that runs e2fsprogs: mkfs.ext4 fills a disk image from a folder (no loop device
 * or mount needed), debugfs reads files out of it and writes files into it, so a VM disk is made
 * and changed without root's mount privileges.
 */
import { mkdtempSync, rmSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { BakeError } from "../errors.js";
import { run } from "./exec.js";

/** The root file system's label: the kernel finds it as /dev/vda either way. */
export const ROOT_LABEL = "bake-root";

/** mkfs.ext4's arguments: a `size` image file at `disk` holding the folder's files. */
export function mkfsArgs(folder: string, disk: string, size: string): string[] {
  return ["-q", "-F", "-t", "ext4", "-L", ROOT_LABEL, "-d", folder, disk, size];
}

export async function makeExt4(folder: string, disk: string, size: string, signal?: AbortSignal): Promise<void> {
  await run("mkfs.ext4", mkfsArgs(folder, disk, size), {
    signal,
    notInstalled: "mkfs.ext4 is not installed (e2fsprogs): run make setup",
  });
}

/** debugfs answers every request on stderr with its banner; anything else there is an error. */
function debugfsErrors(stderr: string): string[] {
  return stderr.split("\n").filter((l) => l.trim() && !/^debugfs \d/.test(l));
}

async function debugfs(disk: string, args: string[]): Promise<{ stdout: string; errors: string[] }> {
  const r = await run("debugfs", [...args, disk], {
    notInstalled: "debugfs is not installed (e2fsprogs): run make setup",
  });
  return { stdout: r.stdout, errors: debugfsErrors(r.stderr) };
}

/** Where a symbolic link in the image points (relative to its folder, as stored), or undefined. */
export async function readLink(disk: string, file: string): Promise<string | undefined> {
  const { stdout } = await debugfs(disk, ["-R", `stat ${file}`]);
  if (!/Type: symlink/.test(stdout)) return undefined;
  return /Fast link dest: "([^"]+)"/.exec(stdout)?.[1];
}

/** Copies a file out of the image; follows one symbolic link at `file` (as /vmlinuz is). */
export async function copyOut(disk: string, file: string, out: string): Promise<string> {
  const link = await readLink(disk, file);
  const target = link ? path.posix.resolve(path.posix.dirname(file), link) : file;
  const { errors } = await debugfs(disk, ["-R", `dump -p ${target} ${out}`]);
  if (errors.length) throw new BakeError(`cannot read ${target} from ${disk}: ${errors.join("; ")}`);
  return target;
}

/** A file to put into the image: its content, or the local file that holds it (an archive too large to hold in memory). */
export type DiskFile = { path: string; mode: number } & ({ content: string | Buffer } | { from: string });

/** A symbolic link to put into the image (`systemctl enable` leaves these). */
export interface DiskLink {
  path: string;
  target: string;
}

/**
 * debugfs requests that put files and links into the image, owned by root, with their folders
 * (each created with mode 0755 unless it exists; debugfs answers "exists" for those, which is fine).
 */
export function writeRequests(
  files: { path: string; local: string; mode: number }[],
  folderMode: Record<string, number> = {},
  links: DiskLink[] = [],
): string[] {
  const lines: string[] = [];
  const folders = new Set<string>();
  for (const f of [...files, ...links]) {
    const parts = path.posix.dirname(f.path).split("/").filter(Boolean);
    for (let i = 1; i <= parts.length; i++) folders.add(`/${parts.slice(0, i).join("/")}`);
  }
  for (const d of [...folders].sort()) {
    lines.push(`mkdir ${d}`);
    if (folderMode[d] !== undefined)
      lines.push(`set_inode_field ${d} mode 040${folderMode[d].toString(8).padStart(3, "0")}`);
  }
  for (const f of files) {
    lines.push(
      `rm ${f.path}`,
      `write ${f.local} ${f.path}`,
      `set_inode_field ${f.path} mode 0100${f.mode.toString(8).padStart(3, "0")}`,
      `set_inode_field ${f.path} uid 0`,
      `set_inode_field ${f.path} gid 0`,
    );
  }
  for (const l of links) lines.push(`rm ${l.path}`, `symlink ${l.path} ${l.target}`);
  return lines;
}

/** Writes files and links into the image (replacing any at their paths), then reads each back to check it. */
export async function writeFiles(
  disk: string,
  files: DiskFile[],
  folderMode: Record<string, number> = {},
  links: DiskLink[] = [],
): Promise<void> {
  const work = mkdtempSync(path.join(tmpdir(), "bake-ext4-"));
  try {
    const staged = files.map((f, i) => {
      if ("from" in f) return { path: f.path, local: f.from, mode: f.mode, size: statSync(f.from).size };
      const local = path.join(work, `f${i}`);
      writeFileSync(local, f.content, { mode: 0o600 });
      return { path: f.path, local, mode: f.mode, size: Buffer.byteLength(f.content) };
    });
    const requests = path.join(work, "requests");
    writeFileSync(requests, `${writeRequests(staged, folderMode, links).join("\n")}\n`);
    await debugfs(disk, ["-w", "-f", requests]);
    for (const f of staged) {
      const { stdout } = await debugfs(disk, ["-R", `stat ${f.path}`]);
      const size = /Size: (\d+)/.exec(stdout)?.[1];
      if (size === undefined || Number(size) !== f.size)
        throw new BakeError(`writing ${f.path} into ${disk} failed (debugfs left ${size ?? "no"} bytes)`);
    }
    for (const l of links)
      if ((await readLink(disk, l.path)) !== l.target) throw new BakeError(`linking ${l.path} in ${disk} failed`);
  } finally {
    rmSync(work, { recursive: true, force: true });
  }
}
