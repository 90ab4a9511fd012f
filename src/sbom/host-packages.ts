/**
 * An AMI's host package list: read from the package databases a bake downloads from the host
 * (rpm's list made by the host's own rpm), kept under `.bake/packages/` by the AMI's key, and
 * compared with the list of the key the manifest recorded before.
 */
import { createReadStream, mkdirSync, readFileSync } from "node:fs";
import path from "node:path";
import { tarEntries } from "../tools/tar.js";
import { writeJsonFile } from "../files/json-file.js";
import { RPM_QUERY, packageListFrom, packagesFolder, type PackageList } from "./packages.js";
import { diffPackages, type PackageDiff } from "./package-diff.js";

/** An AMI's host list, as the bake that made it read it, with when that was. */
export interface HostPackageList extends PackageList {
  created: string;
}

/** Where an AMI's host list is kept: one file per AMI, target and key. */
export function hostPackagesFile(dir: string, ami: string, target: string, key: string): string {
  return path.join(packagesFolder(dir), `ami-${ami}-${target}-${key}.json`);
}

/** In the archive of a host's databases: what the host's own rpm listed, where it has one. */
export const HOST_RPM_QUERY = "/bake-rpm-qa";

/** The files of the archive the last provisioners download (paths as on the host). */
export async function archiveFiles(file: string): Promise<Map<string, Buffer>> {
  const entries = await tarEntries(createReadStream(file));
  const files = new Map(
    entries.filter((e) => e.type === "file").map((e) => [`/${e.name.replace(/^\.?\/+/, "")}`, e.content]),
  );
  const rpm = files.get(HOST_RPM_QUERY);
  if (rpm) files.set(RPM_QUERY, rpm);
  files.delete(HOST_RPM_QUERY);
  return files;
}

/** Reads the host's package databases a bake downloaded and keeps the list by the AMI's key. */
export async function keepHostPackages(
  dir: string,
  ami: string,
  target: string,
  key: string,
  archive: string,
  hostId: string,
): Promise<HostPackageList> {
  const list: HostPackageList = {
    ...packageListFrom(hostId, await archiveFiles(archive)),
    created: new Date().toISOString(),
  };
  const file = hostPackagesFile(dir, ami, target, key);
  mkdirSync(path.dirname(file), { recursive: true });
  writeJsonFile(file, list);
  return list;
}

/**
 * A stage written on the stage below without booting (the vm target's release stage) installs no
 * package: its host list is the stage below's, kept again under the AMI's key. False without one.
 */
export function keepPackagesOfBelow(
  dir: string,
  target: string,
  below: { node: string; key: string },
  ami: { name: string; key: string },
): boolean {
  const list = readHostPackages(dir, below.node, target, below.key);
  if (!list) return false;
  writeJsonFile(hostPackagesFile(dir, ami.name, target, ami.key), list);
  return true;
}

export function readHostPackages(dir: string, ami: string, target: string, key: string): HostPackageList | undefined {
  try {
    return JSON.parse(readFileSync(hostPackagesFile(dir, ami, target, key), "utf8")) as HostPackageList;
  } catch {
    return undefined;
  }
}

/** What changed in an AMI's host packages since the bake the manifest recorded before this one (both lists kept by key). */
export function hostPackageChanges(
  dir: string,
  ami: string,
  target: string,
  beforeKey: string | undefined,
  afterKey: string,
): (PackageDiff & { since: string }) | undefined {
  const was = beforeKey && beforeKey !== afterKey ? readHostPackages(dir, ami, target, beforeKey) : undefined;
  const now = readHostPackages(dir, ami, target, afterKey);
  return was && now ? { since: was.image, ...diffPackages(was.packages, now.packages) } : undefined;
}
