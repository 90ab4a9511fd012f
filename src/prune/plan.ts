/** Retention, pure: which AMIs and local images to keep, which to remove, and why. */
import { shortKey } from "../config/model.js";
import type { BakedAmi } from "../tools/ec2.js";
import type { BakeImageRecord } from "../tools/docker.js";

export interface PruneDecision {
  kind: "ami" | "image" | "snapshot" | "leftover" | "vm";
  name: string;
  /** Region for AMIs, "local" for images and leftovers. */
  where: string;
  id: string;
  key: string;
  created: string;
  action: "keep" | "remove";
  reason: string;
  snapshots?: string[];
  /** Said beside the decision: an AMI about to go that other accounts may launch. */
  warning?: string;
  /** Set when the removal was tried and failed. */
  error?: string;
}

/** Keys of which some copy, in any region, carries bake:keep: every copy of such a key is kept. */
export function keysMarkedKeep(amis: BakedAmi[]): Map<string, string> {
  const marked = new Map<string, string>();
  for (const a of amis)
    if (a.tags["bake:keep"] !== undefined && a.tags["bake:key"] && !marked.has(a.tags["bake:key"]))
      marked.set(a.tags["bake:key"], `${a.imageId} in ${a.region}`);
  return marked;
}

/**
 * Per AMI name and region: keep the newest `keep`, and never remove the current key, a key of
 * which any copy is tagged bake:keep, or an AMI something in the region can launch.
 */
export function planAmiRetention(
  name: string,
  region: string,
  amis: BakedAmi[],
  keep: number,
  inUse: Map<string, string>,
  currentKey?: string,
  keptKeys: Map<string, string> = keysMarkedKeep(amis),
): PruneDecision[] {
  const newestFirst = [...amis].sort((a, b) =>
    a.created < b.created ? 1 : a.created > b.created ? -1 : a.imageId < b.imageId ? 1 : -1,
  );
  return newestFirst.map((a, i): PruneDecision => {
    const base = amiDecision(name, region, a);
    if (i < keep) return { ...base, action: "keep", reason: `one of the newest ${keep}` };
    // An AMI without bake's tags (a copy whose tagging never ran) is known by the key in its name.
    if (
      currentKey &&
      (a.tags["bake:key"] === currentKey || (!a.tags["bake:key"] && a.keyInName === shortKey(currentKey)))
    )
      return { ...base, action: "keep", reason: "carries the current key" };
    if (a.tags["bake:keep"] !== undefined) return { ...base, action: "keep", reason: "tagged bake:keep" };
    const marked = keptKeys.get(a.tags["bake:key"] ?? "");
    if (marked) return { ...base, action: "keep", reason: `a copy of its key is tagged bake:keep (${marked})` };
    if (inUse.has(a.imageId)) return { ...base, action: "keep", reason: `used by ${inUse.get(a.imageId)}` };
    return { ...base, action: "remove", reason: `older than the newest ${keep}` };
  });
}

/** What a decision on an AMI says of it (its action and reason apart). */
function amiDecision(name: string, region: string, a: BakedAmi) {
  return {
    kind: "ami" as const,
    name,
    where: region,
    id: a.imageId,
    key: a.tags["bake:key"] ?? "",
    created: a.created,
    snapshots: a.snapshots,
  };
}

/** What a decision on a local image says of it. */
function localImage(name: string, img: BakeImageRecord) {
  return {
    kind: "image" as const,
    name,
    where: "local",
    id: img.id,
    key: img.key,
    created: new Date(img.created * 1000).toISOString(),
  };
}

/** Local images of one node: keep the current key and the newest `keep` others. */
export function planImageRetention(
  name: string,
  images: BakeImageRecord[],
  keep: number,
  currentKey?: string,
): PruneDecision[] {
  const newestFirst = [...images].sort((a, b) => b.created - a.created);
  let kept = 0;
  return newestFirst.map((img): PruneDecision => {
    const base = localImage(name, img);
    if (currentKey && img.key === currentKey) return { ...base, action: "keep", reason: "carries the current key" };
    if (kept < keep) {
      kept++;
      return { ...base, action: "keep", reason: `one of the newest ${keep} earlier builds` };
    }
    return { ...base, action: "remove", reason: `older than the newest ${keep} earlier builds` };
  });
}

/**
 * The images of an AMI's stage below the AMI (the local target's `<ami>@host`): a stage goes only
 * when neither the current bake nor any AMI image kept was built on it (`keptOn`: the stage keys
 * the kept AMI images were built on, with which AMI image).
 */
export function planStageRetention(
  name: string,
  stages: BakeImageRecord[],
  keptOn: Map<string, string>,
  currentKey?: string,
): PruneDecision[] {
  return [...stages]
    .sort((a, b) => b.created - a.created)
    .map((img): PruneDecision => {
      const base = localImage(name, img);
      if (currentKey && img.key === currentKey) return { ...base, action: "keep", reason: "carries the current key" };
      const on = keptOn.get(img.key);
      if (on) return { ...base, action: "keep", reason: `the kept AMI image ${on} was built on it` };
      return { ...base, action: "remove", reason: "no AMI image kept was built on it" };
    });
}

/**
 * The AMIs of an AMI's host stage on aws (`<ami>@host`, in the AMI's region): one goes only when
 * neither the current bake, nor an AMI kept (`keptOn`: host stage AMI id → the kept AMI baked on
 * it, from its bake:source-ami), nor anything that launches AMIs in the region uses it.
 */
export function planAwsStageRetention(
  name: string,
  region: string,
  stages: BakedAmi[],
  keptOn: Map<string, string>,
  inUse: Map<string, string>,
  currentKey?: string,
): PruneDecision[] {
  return [...stages]
    .sort((a, b) => (a.created < b.created ? 1 : a.created > b.created ? -1 : 0))
    .map((a): PruneDecision => {
      const base = amiDecision(name, region, a);
      if (currentKey && a.tags["bake:key"] === currentKey)
        return { ...base, action: "keep", reason: "carries the current key" };
      const on = keptOn.get(a.imageId);
      if (on) return { ...base, action: "keep", reason: `the kept AMI ${on} was baked on it` };
      if (a.tags["bake:keep"] !== undefined) return { ...base, action: "keep", reason: "tagged bake:keep" };
      if (inUse.has(a.imageId)) return { ...base, action: "keep", reason: `used by ${inUse.get(a.imageId)}` };
      return { ...base, action: "remove", reason: "no AMI kept was baked on it" };
    });
}

/** A vm target's disk folder under .bake/vm/ (vm.json's key and time; no key: a bake that did not finish). */
export interface VmDiskFolder {
  path: string;
  key?: string;
  created: string;
  bytes: number;
  /** A bake of this key runs now. */
  inUse: boolean;
}

/** VM disks of one AMI: keep the current key and the newest `keep`; a folder without a record goes unless a bake holds it. */
export function planVmRetention(
  name: string,
  disks: VmDiskFolder[],
  keep: number,
  currentKey?: string,
): PruneDecision[] {
  let kept = 0;
  return vmDecisions(name, disks, currentKey, (d, size) => {
    if (kept < keep) {
      kept++;
      return ["keep", `one of the newest ${keep}`];
    }
    return ["remove", `older than the newest ${keep} (${size})`];
  });
}

/** The host stage disks of one AMI (`<ami>@host`): the current stage's stays, and each one a kept disk stands on. */
export function planVmStageRetention(
  name: string,
  disks: VmDiskFolder[],
  keptOn: Map<string, string>,
  currentKey?: string,
): PruneDecision[] {
  return vmDecisions(name, disks, currentKey, (d, size) => {
    const on = keptOn.get(d.key!);
    return on ? ["keep", `the kept disk ${on} stands on it`] : ["remove", `no kept disk stands on it (${size})`];
  });
}

/**
 * VM disk folders, newest first: one a bake uses stays, one without a record (a bake that did not
 * finish) goes, the current key stays; `otherwise` decides the rest.
 */
function vmDecisions(
  name: string,
  disks: VmDiskFolder[],
  currentKey: string | undefined,
  otherwise: (d: VmDiskFolder, size: string) => [PruneDecision["action"], string],
): PruneDecision[] {
  const newestFirst = [...disks].sort((a, b) => (a.created < b.created ? 1 : a.created > b.created ? -1 : 0));
  return newestFirst.map((d): PruneDecision => {
    const size = `${(d.bytes / 2 ** 20).toFixed(0)} MiB`;
    const base = { kind: "vm" as const, name, where: "local", id: d.path, key: d.key ?? "", created: d.created };
    if (d.inUse) return { ...base, action: "keep", reason: `a bake is using it (${size})` };
    if (!d.key) return { ...base, action: "remove", reason: `left by a bake that did not finish (${size})` };
    if (currentKey && d.key === currentKey) return { ...base, action: "keep", reason: "carries the current key" };
    const [action, reason] = otherwise(d, size);
    return { ...base, action, reason };
  });
}

/** What bake leaves on this machine that no run needs once its run is over. */
export interface LeftoverState {
  /** `bake-parent/<host>/<pid>:<id>` tags, with whether the bake that made it still runs (undefined: not this machine's). */
  parentTags: { ref: string; ownerRunning: boolean | undefined }[];
  /** `.bake/ami/<ami>-<target>-<key12>` folders (each holds a `docker save` archive), with whether a bake holds it. */
  amiFolders: { path: string; bytes: number; inUse: boolean }[];
  /** `.bake/logs/<run-id>` folder names; run ids sort by time. */
  logRuns: string[];
  /**
   * Boot tests' namespaces on the engine (the host container and what its services started, which
   * hold pass_env values), with whether the bake that owns them still runs: `undefined` when this
   * machine cannot tell (an owner on another host).
   */
  bootTests?: { namespace: string; containers: number; ownerRunning: boolean | undefined }[];
  /** `.bake/vm/<ami>-<key12>/boot-*` copies (their disk holds the runtime env file), with whether a bake holds the folder. */
  bootCopies?: { path: string; inUse: boolean }[];
}

export const KEEP_LOG_RUNS = 10;

/** Leftovers: parent tags of runs that ended without removing them, AMI folders no bake holds, all but the newest logs. */
export function planLeftovers(state: LeftoverState, keepLogRuns = KEEP_LOG_RUNS): PruneDecision[] {
  const leftover = (name: string, id: string, remove: boolean, reason: string): PruneDecision => ({
    kind: "leftover",
    key: "",
    created: "",
    name,
    where: "local",
    id,
    action: remove ? "remove" : "keep",
    reason,
  });
  const decisions: PruneDecision[] = [];
  for (const t of state.parentTags)
    decisions.push(
      leftover(
        "parent tag",
        t.ref,
        t.ownerRunning === false,
        t.ownerRunning === false
          ? "left by a build that did not finish"
          : t.ownerRunning
            ? "its build is running"
            : "made on another machine (or by an older bake): its build may be running",
      ),
    );
  for (const f of state.amiFolders) {
    const size = `${(f.bytes / 2 ** 20).toFixed(0)} MiB`;
    decisions.push(
      leftover(
        "ami folder",
        f.path,
        !f.inUse,
        f.inUse ? `a bake is using it (${size})` : `rendered folder and image archive of an earlier bake (${size})`,
      ),
    );
  }
  for (const b of state.bootTests ?? []) {
    const what = `${b.containers} container${b.containers === 1 ? "" : "s"}`;
    decisions.push(
      leftover(
        "boot test",
        b.namespace,
        b.ownerRunning === false,
        b.ownerRunning === false
          ? `left by a boot test that did not finish (${what}, holding secrets)`
          : b.ownerRunning
            ? `its boot test is running (${what})`
            : `its owner is on another machine (${what})`,
      ),
    );
  }
  for (const c of state.bootCopies ?? [])
    decisions.push(
      leftover(
        "boot copy",
        c.path,
        !c.inUse,
        c.inUse ? "its VM bake is running" : "a VM boot test's disk left by a bake that did not finish (holds secrets)",
      ),
    );
  const newestFirst = [...state.logRuns].sort().reverse();
  newestFirst.forEach((run, i) => {
    if (i >= keepLogRuns) decisions.push(leftover("logs", run, true, `older than the newest ${keepLogRuns} runs`));
  });
  return decisions;
}
