/** What changed between two package lists, and how a person reads it on one line. */
import type { InstalledPackage, PackageType } from "./packages.js";

export interface PackageChange {
  name: string;
  type: PackageType;
  before: string;
  after: string;
}

export interface PackageDiff {
  added: { name: string; type: PackageType; version: string }[];
  removed: { name: string; type: PackageType; version: string }[];
  changed: PackageChange[];
}

/** What changed between two package lists, by package type, name and architecture. */
export function diffPackages(before: InstalledPackage[], after: InstalledPackage[]): PackageDiff {
  const id = (p: InstalledPackage) => `${p.type}/${p.name}/${p.arch ?? ""}`;
  const was = new Map(before.map((p) => [id(p), p]));
  const now = new Map(after.map((p) => [id(p), p]));
  const diff: PackageDiff = { added: [], removed: [], changed: [] };
  for (const [k, p] of now) {
    const old = was.get(k);
    if (!old) diff.added.push({ name: p.name, type: p.type, version: p.version });
    else if (old.version !== p.version)
      diff.changed.push({ name: p.name, type: p.type, before: old.version, after: p.version });
  }
  for (const [k, p] of was) if (!now.has(k)) diff.removed.push({ name: p.name, type: p.type, version: p.version });
  return diff;
}

export function diffIsEmpty(d: PackageDiff): boolean {
  return !d.added.length && !d.removed.length && !d.changed.length;
}

/** `openssl 3.0.13-1~deb12u1 → 3.0.15-1~deb12u1, +libfoo 1.2, -libbar 1.0`: a diff on one line for people. */
export function describeDiff(d: PackageDiff): string {
  if (diffIsEmpty(d)) return "no package changes";
  return [
    ...d.changed.map((c) => `${c.name} ${c.before} → ${c.after}`),
    ...d.added.map((a) => `+${a.name} ${a.version}`),
    ...d.removed.map((r) => `-${r.name} ${r.version}`),
  ].join(", ");
}
