/** Retention, pure: which AMIs and local images to keep, which to remove, and why. */
import type { BakedAmi } from "../tools/ec2.js";
import type { BakeImageRecord } from "../tools/docker.js";

export interface PruneDecision {
  kind: "ami" | "image";
  name: string;
  /** Region for AMIs, "local" for images. */
  where: string;
  id: string;
  key: string;
  created: string;
  action: "keep" | "remove";
  reason: string;
  snapshots?: string[];
}

/**
 * Per AMI name and region: keep the newest `keep`, and never remove the current key, one a
 * running instance or a launch template uses, or one tagged bake:keep.
 */
export function planAmiRetention(name: string, region: string, amis: BakedAmi[], keep: number, inUse: Set<string>, currentKey?: string): PruneDecision[] {
  const newestFirst = [...amis].sort((a, b) => (a.created < b.created ? 1 : a.created > b.created ? -1 : a.imageId < b.imageId ? 1 : -1));
  return newestFirst.map((a, i): PruneDecision => {
    const base = { kind: "ami" as const, name, where: region, id: a.imageId, key: a.tags["bake:key"] ?? "", created: a.created, snapshots: a.snapshots };
    if (i < keep) return { ...base, action: "keep", reason: `one of the newest ${keep}` };
    if (currentKey && a.tags["bake:key"] === currentKey) return { ...base, action: "keep", reason: "carries the current key" };
    if (a.tags["bake:keep"] !== undefined) return { ...base, action: "keep", reason: "tagged bake:keep" };
    if (inUse.has(a.imageId)) return { ...base, action: "keep", reason: "used by an instance or launch template" };
    return { ...base, action: "remove", reason: `older than the newest ${keep}` };
  });
}

/** Local images of one node: keep the current key and the newest `keep` others. */
export function planImageRetention(name: string, images: BakeImageRecord[], keep: number, currentKey?: string): PruneDecision[] {
  const newestFirst = [...images].sort((a, b) => b.created - a.created);
  let kept = 0;
  return newestFirst.map((img): PruneDecision => {
    const base = { kind: "image" as const, name, where: "local", id: img.id, key: img.key, created: new Date(img.created * 1000).toISOString() };
    if (currentKey && img.key === currentKey) return { ...base, action: "keep", reason: "carries the current key" };
    if (kept < keep) {
      kept++;
      return { ...base, action: "keep", reason: `one of the newest ${keep} earlier builds` };
    }
    return { ...base, action: "remove", reason: `older than the newest ${keep} earlier builds` };
  });
}
