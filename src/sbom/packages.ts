/**
 * Package lists: what a package manager's database in an image says is installed. dpkg's and
 * apk's files are copied out of a created (never started) container, so an image without a shell
 * reads the same way; rpm's database (SQLite or Berkeley DB) is listed by the image's own rpm,
 * the one program run, without a network. Lists are kept by image id under `.bake/packages/`
 * (an image id names exactly one set of files); an AMI's host list by the AMI's key.
 */
import { existsSync, mkdirSync, readFileSync } from "node:fs";
import path from "node:path";
import { writeJsonFile } from "../files/json-file.js";
import type { DockerTool } from "../tools/docker.js";
import { BakeError } from "../errors.js";

export type PackageType = "deb" | "apk" | "rpm";

export interface InstalledPackage {
  type: PackageType;
  name: string;
  version: string;
  arch?: string;
  /** The source package (dpkg, rpm) or origin (apk) it was built from, when it differs from the name. */
  source?: string;
  license?: string;
}

export interface PackageList {
  /** The image whose databases were read. */
  image: string;
  /** Which databases held the list; empty when the image has none bake reads. */
  managers: ("dpkg" | "apk" | "rpm")[];
  /** From the image's os-release: `debian` and `12`, `alpine` and `3.20.1`. */
  distro?: { id: string; versionId?: string; name?: string };
  packages: InstalledPackage[];
  /** Said when the list is empty or incomplete, and why. */
  note?: string;
}

export const DPKG_STATUS = "/var/lib/dpkg/status";
export const APK_INSTALLED = "/lib/apk/db/installed";
const RPM_DATABASES = ["/var/lib/rpm/rpmdb.sqlite", "/var/lib/rpm/Packages", "/usr/lib/sysimage/rpm/rpmdb.sqlite"];
const RPM_PROGRAMS = ["/usr/bin/rpm", "/bin/rpm"];
/** Where the files read from an image hold the output of the image's own `rpm` (packageListFrom). */
export const RPM_QUERY = "rpm -qa";
/** name, [epoch:]version-release, arch, source rpm, license: one package a line. */
const RPM_QUERY_FORMAT =
  "%{NAME}\\t%|EPOCH?{%{EPOCH}:}:{}|%{VERSION}-%{RELEASE}\\t%{ARCH}\\t%{SOURCERPM}\\t%{LICENSE}\\n";

/** The arguments of the image's own rpm that list what its database holds. */
export function rpmQueryArgs(): string[] {
  return ["-qa", "--qf", RPM_QUERY_FORMAT];
}

/** `rpm -qa` in rpmQueryArgs' format; the gpg-pubkey entries are keys, not packages. */
export function parseRpmQuery(text: string): InstalledPackage[] {
  return text
    .split("\n")
    .map((l) => l.split("\t"))
    .filter((f) => f.length >= 3 && f[0] && f[0] !== "gpg-pubkey")
    .map(([name, version, arch, srpm, license]) => {
      const source = /^(.+)-[^-]+-[^-]+\.src\.rpm$/.exec(srpm ?? "")?.[1];
      return {
        type: "rpm" as const,
        name,
        version,
        ...(arch && arch !== "(none)" ? { arch } : {}),
        ...(source && source !== name ? { source } : {}),
        ...(license && license !== "(none)" ? { license } : {}),
      };
    });
}
const OS_RELEASE = ["/etc/os-release", "/usr/lib/os-release"];

/** Splits a Debian control file (or apk's database) into paragraphs of fields; continuation lines are folded in. */
function paragraphs(text: string, separator: RegExp): Record<string, string>[] {
  const out: Record<string, string>[] = [];
  for (const block of text.split(/\n\s*\n/)) {
    const fields: Record<string, string> = {};
    let last: string | undefined;
    for (const line of block.split("\n")) {
      if (/^\s/.test(line) && last) fields[last] += `\n${line.trim()}`;
      else {
        const m = separator.exec(line);
        if (m) fields[(last = m[1])] = m[2];
      }
    }
    if (Object.keys(fields).length) out.push(fields);
  }
  return out;
}

/** The states (the third word of `Status:`) in which a package's files are all in place. */
const DPKG_INSTALLED = new Set(["installed", "triggers-awaited", "triggers-pending"]);

/** dpkg's status file: every package whose files are installed (not half-installed, unpacked or removed ones). */
export function parseDpkgStatus(text: string): InstalledPackage[] {
  return paragraphs(text, /^([A-Za-z0-9-]+):\s?(.*)$/)
    .filter((p) => p.Package && p.Version && DPKG_INSTALLED.has((p.Status ?? "").trim().split(/\s+/)[2]))
    .map((p) => {
      const source = p.Source?.split(" ")[0];
      return {
        type: "deb" as const,
        name: p.Package,
        version: p.Version,
        ...(p.Architecture ? { arch: p.Architecture } : {}),
        ...(source && source !== p.Package ? { source } : {}),
      };
    });
}

/** apk's installed database: `P:` name, `V:` version, `A:` arch, `o:` origin, `L:` license. */
export function parseApkInstalled(text: string): InstalledPackage[] {
  return paragraphs(text, /^([A-Za-z]):(.*)$/)
    .filter((p) => p.P && p.V)
    .map((p) => ({
      type: "apk" as const,
      name: p.P,
      version: p.V,
      ...(p.A ? { arch: p.A } : {}),
      ...(p.o && p.o !== p.P ? { source: p.o } : {}),
      ...(p.L ? { license: p.L } : {}),
    }));
}

export function parseOsRelease(text: string): PackageList["distro"] {
  const fields: Record<string, string> = {};
  for (const line of text.split("\n")) {
    const m = /^([A-Z_]+)=(.*)$/.exec(line.trim());
    if (m) fields[m[1]] = m[2].replace(/^(["'])(.*)\1$/, "$2");
  }
  return fields.ID
    ? {
        id: fields.ID,
        ...(fields.VERSION_ID ? { versionId: fields.VERSION_ID } : {}),
        ...(fields.PRETTY_NAME ? { name: fields.PRETTY_NAME } : {}),
      }
    : undefined;
}

/** A package list from the files read out of an image (pure: the reading is done by the caller). */
export function packageListFrom(image: string, files: Map<string, Buffer>): PackageList {
  const managers: PackageList["managers"] = [];
  const packages: InstalledPackage[] = [];
  const dpkg = files.get(DPKG_STATUS);
  if (dpkg) {
    managers.push("dpkg");
    packages.push(...parseDpkgStatus(dpkg.toString("utf8")));
  }
  const apk = files.get(APK_INSTALLED);
  if (apk) {
    managers.push("apk");
    packages.push(...parseApkInstalled(apk.toString("utf8")));
  }
  const rpmQuery = files.get(RPM_QUERY);
  if (rpmQuery) {
    managers.push("rpm");
    packages.push(...parseRpmQuery(rpmQuery.toString("utf8")));
  }
  packages.sort(
    (a, b) =>
      a.type.localeCompare(b.type) || a.name.localeCompare(b.name) || (a.arch ?? "").localeCompare(b.arch ?? ""),
  );
  const release = OS_RELEASE.map((p) => files.get(p)).find(Boolean);
  const distro = release ? parseOsRelease(release.toString("utf8")) : undefined;
  const rpmUnread = RPM_DATABASES.some((p) => files.has(p)) && !rpmQuery;
  const note = rpmUnread
    ? "an rpm database without an rpm program to read it: its rpm packages are not listed"
    : managers.length
      ? undefined
      : "no package database (dpkg, apk or rpm) in the image: files that no package manager installed are not listed";
  return { image, managers, ...(distro ? { distro } : {}), packages, ...(note ? { note } : {}) };
}

export function packagesFolder(dir: string): string {
  return path.join(dir, ".bake", "packages");
}

/** The image's package list: read once per image id, then from `.bake/packages/`. */
export async function imagePackages(docker: ImageReader, dir: string, imageId: string): Promise<PackageList> {
  const file = path.join(packagesFolder(dir), `${imageId.replace(/^sha256:/, "")}.json`);
  if (existsSync(file)) {
    try {
      return JSON.parse(readFileSync(file, "utf8")) as PackageList;
    } catch {
      // A damaged file is read again from the image below.
    }
  }
  let files: Map<string, Buffer>;
  try {
    files = await docker.readImageFiles(
      imageId,
      [DPKG_STATUS, APK_INSTALLED, ...OS_RELEASE],
      [...RPM_DATABASES, ...RPM_PROGRAMS],
    );
  } catch (e) {
    // What the image holds cannot stop a build or its manifest: the list says why it is empty.
    return {
      image: imageId,
      managers: [],
      packages: [],
      note: `its package databases could not be read: ${(e as Error).message.split("\n")[0]}`,
    };
  }
  // rpm's database (SQLite or Berkeley DB) is read by the image's own rpm, the one program run,
  // bounded in time; an rpm that fails or hangs leaves a list that says so (kept only in memory,
  // so that a later run tries again).
  const rpm = RPM_DATABASES.some((p) => files.has(p)) ? RPM_PROGRAMS.find((p) => files.has(p)) : undefined;
  let rpmFailure: string | undefined;
  if (rpm) {
    try {
      files.set(RPM_QUERY, Buffer.from(await runOnce(docker, imageId, rpm, rpmQueryArgs(), rpmTimeoutMs())));
    } catch (e) {
      rpmFailure = (e as Error).message.split("\n")[0];
    }
  }
  const list = packageListFrom(imageId, files);
  if (rpmFailure)
    return {
      ...list,
      note: `the image's rpm could not list its packages (${rpmFailure}): its rpm packages are not listed`,
    };
  mkdirSync(path.dirname(file), { recursive: true });
  writeJsonFile(file, list);
  return list;
}

/** How long an image's own rpm may take to list its database: BAKE_RPM_TIMEOUT_SECONDS, default 120. */
function rpmTimeoutMs(env = process.env): number {
  const seconds = Number(env.BAKE_RPM_TIMEOUT_SECONDS);
  return 1000 * (Number.isFinite(seconds) && seconds > 0 ? seconds : 120);
}

export type ImageReader = Pick<
  DockerTool,
  "readImageFiles" | "createContainer" | "startContainer" | "waitContainer" | "containerLogs" | "removeContainer"
>;

/** Runs one program of the image, without a network, and returns what it printed; fails on a non-zero exit. */
async function runOnce(
  docker: ImageReader,
  image: string,
  program: string,
  args: string[],
  timeoutMs: number,
): Promise<string> {
  const id = await docker.createContainer({
    Image: image,
    Entrypoint: [program],
    Cmd: args,
    NetworkDisabled: true,
    User: "0",
  });
  let timer: NodeJS.Timeout | undefined;
  try {
    await docker.startContainer(id);
    const timedOut = new Promise<never>((_, reject) => {
      timer = setTimeout(
        () =>
          reject(
            new BakeError(
              `${program} ${args[0]} in image ${image.slice(0, 19)} did not finish within ${timeoutMs / 1000} s`,
            ),
          ),
        timeoutMs,
      );
    });
    const code = await Promise.race([docker.waitContainer(id), timedOut]);
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    await docker.containerLogs(id, { follow: false }, (stream, chunk) => (stream === "stdout" ? out : err).push(chunk));
    if (code !== 0)
      throw new BakeError(
        `${program} ${args[0]} in image ${image.slice(0, 19)} exited ${code}: ${Buffer.concat(err).toString("utf8").trim().slice(-500)}`,
      );
    return Buffer.concat(out).toString("utf8");
  } finally {
    clearTimeout(timer);
    await docker.removeContainer(id);
  }
}
