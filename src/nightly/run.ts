/** The nightly run: refresh bases from upstream → build what changed → bake AMIs → prune → report. */
import { shortKey } from "../config/model.js";
import path from "node:path";
import { readPipeline, type Pipeline, type Tools } from "../state/read.js";
import { projectLock, withLock } from "../files/process-lock.js";
import { readLock, writeLock } from "../config/bake-lock.js";
import type { Target } from "../graph/keys.js";
import { assemblePlan, previousImage, type PlanEntry } from "../plan/plan.js";
import { readManifest } from "../state/manifest.js";
import { buildAndRecord } from "../image-build/run.js";
import { aptMirror, debootstrapRelease, type UpstreamCheck } from "./upstream.js";
import { runAmi } from "../ami-bake/run.js";
import { runPrune } from "../prune/run.js";
import { BootTestFailedError, BuildFailedError, interruption } from "../errors.js";
import { RunLogs } from "../state/logs.js";
import { reportRun } from "../report/write.js";
import type { NodeResult } from "../report/record.js";
import { describeDiff, type PackageDiff } from "../sbom/package-diff.js";
import { hostPackageChanges } from "../sbom/host-packages.js";

export interface NightlyOptions {
  file: string;
  target: Target;
  dryRun: boolean;
  force: boolean;
  json: boolean;
  signal: AbortSignal;
}

export interface NightlyReport {
  dryRun: boolean;
  upstream: UpstreamCheck[];
  /** packages: for a node that built and replaced an earlier image, what changed in its packages. */
  rebuilt: { node: string; reason: string; action?: string; packages?: PackageDiff & { since: string } }[];
  failed: { node: string; error: string }[];
  skipped: string[];
  amis: Record<string, Record<string, string>>;
  pruned: { kind: string; name: string; where: string; id: string }[];
  seconds: Record<string, number>;
}

/** One nightly run per project at a time: a second one waits, then finds the first one's work done. */
export async function runNightly(
  options: NightlyOptions,
  tools: Tools,
  err: (t: string) => void,
): Promise<NightlyReport> {
  const lock = projectLock(path.dirname(path.resolve(options.file)), "nightly");
  return withLock(lock, () => nightly(options, tools, err), {
    signal: options.signal,
    onWait: (holder) => err(`nightly: waiting for ${holder}`),
  });
}

/** What every phase of one nightly run shares. */
interface NightlyRun {
  options: NightlyOptions;
  tools: Tools;
  err: (t: string) => void;
  report: NightlyReport;
  /** Images that failed or were not attempted: the AMIs that ship them are not baked. */
  failedImages: Set<string>;
  /** The run's log folder (the build's step logs, the record and report). */
  logs: RunLogs;
  started: Date;
  /** What the run's record is drawn from: the images built, the AMIs baked or found, the failures. */
  results: NodeResult[];
  failures: BuildFailedError[];
}

async function nightly(options: NightlyOptions, tools: Tools, err: (t: string) => void): Promise<NightlyReport> {
  const run: NightlyRun = {
    options,
    tools,
    err,
    report: {
      dryRun: options.dryRun,
      upstream: [],
      rebuilt: [],
      failed: [],
      skipped: [],
      amis: {},
      pruned: [],
      seconds: {},
    },
    failedImages: new Set(),
    logs: new RunLogs(path.dirname(path.resolve(options.file))),
    started: new Date(),
    results: [],
    failures: [],
  };
  // Images only (the AMIs bake later, each on its own target): no default local host here.
  const before = await readPipeline({ file: options.file, target: "local", defaultLocalHost: false }, tools);
  await timed(run, "refresh", () => refreshPins(run, before));
  const after = await readPipeline({ file: options.file, target: "local", pull: true, defaultLocalHost: false }, tools);
  upstreamImages(run, before, after);
  const plan = assemblePlan(
    after.nodes.filter((n) => n.kind === "image"),
    after.keys,
    after.state,
    "local",
  );
  planRebuilt(run, after, plan);
  if (!options.dryRun) await timed(run, "build", () => buildImages(run, after, plan));
  await timed(run, "bake", () => bakeAmis(run, after));
  await timed(run, "prune", () => prune(run));
  if (!options.dryRun) reportNightly(run, after, plan);
  return run.report;
}

/**
 * The run's record and report beside its logs: every image of the plan and every AMI with what
 * came of it, the upstreams checked, the phases' times and what was pruned.
 */
function reportNightly(run: NightlyRun, after: Pipeline, plan: PlanEntry[]): void {
  const { report } = run;
  const baked = new Map(run.results.map((r) => [r.name, r]));
  const amiEntries: PlanEntry[] = after.config.amis.map((ami) => {
    const r = baked.get(ami.name);
    return {
      name: ami.name,
      kind: "ami",
      layer: "ami",
      key: r?.key ?? null,
      status: r?.action === "cached" ? "cached" : "build",
      reason: r
        ? r.action === "cached"
          ? "an AMI carries its key"
          : "its key has no AMI"
        : report.skipped.includes(ami.name)
          ? "an image it ships did not build"
          : "not baked",
      deps: [...new Set([...ami.preload, ...ami.services])],
    };
  });
  const r = reportRun({
    folder: run.logs.dir,
    run: run.logs.runId,
    command: "nightly",
    project: after.config.project,
    started: run.started,
    exit: report.failed.length ? 1 : 0,
    plan: [...plan, ...amiEntries],
    results: run.results,
    failures: run.failures.map((f) => ({
      node: f.node,
      message: f.message,
      detail: f.detail,
      ...(f instanceof BootTestFailedError ? { checks: f.checks } : {}),
    })),
    nightly: { upstream: report.upstream, pruned: report.pruned, phases: report.seconds },
  });
  if (r.report) run.err(`report: ${r.report}`);
  if (r.unwritten) run.err(`warning: ${r.unwritten}`);
}

/**
 * An interrupt ends the run between phases (and inside them, where the tools stop): it is never
 * recorded as one more failure, so no later phase starts, above all not the prune.
 */
function stopIfInterrupted(run: NightlyRun): void {
  if (run.options.signal.aborted) throw interruption(run.options.signal);
}

/** A phase, announced as it starts and ends with its time and the run's so far (plain lines: they read the same in CI). */
async function timed<T>(run: NightlyRun, phase: string, fn: () => Promise<T>): Promise<T> {
  stopIfInterrupted(run);
  run.err(`nightly: ${phase}`);
  const t = Date.now();
  try {
    return await fn();
  } finally {
    run.report.seconds[phase] = (Date.now() - t) / 1000;
    run.err(
      `nightly: ${phase} ended after ${run.report.seconds[phase].toFixed(1)} s (${((Date.now() - run.started.getTime()) / 1000).toFixed(0)} s in all)`,
    );
    stopIfInterrupted(run);
  }
}

/** 1. refresh: each debootstrap base's upstream release, pinned anew in bake.lock when it moved. */
async function refreshPins(run: NightlyRun, before: Pipeline): Promise<void> {
  const lock = readLock(before.config.dir);
  const mirror = aptMirror();
  let lockChanged = false;
  for (const img of before.config.images) {
    if (img.rootfs?.debootstrap) {
      const { digest, url, note } = await debootstrapRelease(img, mirror);
      const pinned = lock.debootstrap[img.name]?.release;
      const changed = Boolean(digest && digest !== pinned);
      run.report.upstream.push({
        node: img.name,
        kind: "debootstrap",
        before: pinned,
        after: digest,
        changed,
        note: note ?? (changed && !pinned ? "first pin" : undefined),
      });
      if (changed && digest && url) {
        lock.debootstrap[img.name] = { release: digest, url };
        lockChanged = true;
      }
    } else if (img.rootfs?.tar) {
      run.report.upstream.push({
        node: img.name,
        kind: "tar",
        changed: false,
        note: "content-addressed: a new tarball is a new key",
      });
    }
  }
  if (lockChanged && !run.options.dryRun) writeLock(before.config.dir, lock);
}

/** Each upstream (`from:`) image: the digest its current image was built from, and the one pulled now. */
function upstreamImages(run: NightlyRun, before: Pipeline, after: Pipeline): void {
  for (const img of after.config.images.filter((i) => i.from)) {
    // Before: what the node's current image was built from (its labels); the engine may hold
    // the new upstream image under the tag already, so its local digest says nothing.
    const current = after.state.images.ok
      ? previousImage(after.state.images.value.filter((r) => r.node === img.name))
      : undefined;
    const was = current?.inputs?.from ?? before.keys.get(img.name)?.inputs.from;
    const now = after.keys.get(img.name)?.inputs.from;
    run.report.upstream.push({
      node: img.name,
      kind: "from",
      before: was?.split("@")[1],
      after: now?.split("@")[1],
      changed: Boolean(now && was !== now),
      note: now ? undefined : (after.keys.get(img.name) as { unknownBecause?: string }).unknownBecause,
    });
  }
}

/** 2. What builds: everything whose key changed (with --force, every image); a dry run adds what a new base moves. */
function planRebuilt(run: NightlyRun, after: Pipeline, plan: PlanEntry[]): void {
  const { report, options } = run;
  const changedBases = new Set(report.upstream.filter((u) => u.changed && u.kind === "debootstrap").map((u) => u.node));
  for (const e of plan) {
    if (e.status === "build" || options.force)
      report.rebuilt.push({ node: e.name, reason: options.force && e.status !== "build" ? "--force" : e.reason });
    else if (options.dryRun && dependsOn(after, e.name, changedBases))
      report.rebuilt.push({ node: e.name, reason: "its base's upstream release changed" });
  }
}

/** The build, recorded; a node that fails is reported and the others go on. */
async function buildImages(run: NightlyRun, after: Pipeline, plan: PlanEntry[]): Promise<void> {
  const { report, options } = run;
  const build = await buildAndRecord(after, plan, run.tools.docker(), {
    noCache: options.force,
    push: Boolean(after.config.registry),
    concurrency: 2,
    tags: [],
    signal: options.signal,
    // As bake build: listr's live view on a terminal, plain lines in CI.
    plain: Boolean(process.env.CI) || !process.stderr.isTTY,
    keepGoing: true,
    logs: run.logs,
  });
  run.failures.push(...build.failures);
  run.results.push(
    ...build.results.map((r) => ({ ...r, packages: build.contents.find((c) => c.name === r.name)?.packages })),
  );
  for (const f of build.failures) {
    report.failed.push({ node: f.node, error: `${f.message}${f.detail ? `\n${f.detail}` : ""}` });
    run.failedImages.add(f.node);
  }
  report.skipped.push(...build.skipped);
  for (const s of build.skipped) run.failedImages.add(s);
  for (const r of report.rebuilt) {
    r.action =
      build.results.find((b) => b.name === r.node)?.action ?? (run.failedImages.has(r.node) ? "failed" : undefined);
    const packages = build.contents.find((c) => c.name === r.node)?.packages;
    if (packages) r.packages = packages;
  }
}

/** 3. bake: every AMI whose images all built. */
async function bakeAmis(run: NightlyRun, after: Pipeline): Promise<void> {
  const { report, options } = run;
  for (const [i, ami] of after.config.amis.entries()) {
    if ([...ami.preload, ...ami.services].some((n) => run.failedImages.has(n))) {
      report.skipped.push(ami.name);
      run.err(`nightly: bake ${ami.name}: not attempted, an image it ships did not build`);
      continue;
    }
    run.err(`nightly: bake ${ami.name} (${i + 1} of ${after.config.amis.length}) on ${options.target}`);
    const t = Date.now();
    try {
      const before = readManifest(after.config.dir).amis[ami.name];
      const result = await runAmi(
        {
          file: options.file,
          ami: ami.name,
          target: options.target,
          force: false,
          dryRun: options.dryRun,
          json: false,
          signal: options.signal,
        },
        run.tools,
        quiet,
        run.err,
      );
      report.amis[ami.name] = result.regions;
      const amiResult: NodeResult = {
        name: ami.name,
        key: result.key,
        action: result.action === "baked" ? "built" : "cached",
        seconds: (Date.now() - t) / 1000,
        id: Object.values(result.regions)[0] ?? "",
        tags: [],
        regions: result.regions,
        ...(result.stages ? { stages: result.stages } : {}),
        ...(result.boot ? { checks: result.boot.checks } : {}),
      };
      run.results.push(amiResult);
      if (result.action === "baked" && !options.dryRun) {
        const packages = hostPackageChanges(
          after.config.dir,
          ami.name,
          options.target,
          before?.target === options.target ? before.key : undefined,
          result.key,
        );
        report.rebuilt.push({
          node: ami.name,
          reason: `baked key ${shortKey(result.key)}`,
          action: "baked",
          ...(packages ? { packages } : {}),
        });
        if (packages) amiResult.packages = packages;
      }
    } catch (e) {
      stopIfInterrupted(run);
      report.failed.push({ node: ami.name, error: (e as BuildFailedError).message });
      run.failures.push(
        e instanceof BuildFailedError ? e : new BuildFailedError(ami.name, (e as Error).message ?? String(e)),
      );
    }
  }
}

/** 4. prune (a plan only on a dry run). */
async function prune(run: NightlyRun): Promise<void> {
  const { report, options } = run;
  try {
    const pruned = await runPrune(
      { file: options.file, yes: !options.dryRun, json: false, keepImages: 2, signal: options.signal },
      run.tools,
    );
    report.pruned = (options.dryRun ? pruned.decisions.filter((d) => d.action === "remove") : pruned.removed).map(
      ({ kind, name, where, id }) => ({ kind, name, where, id }),
    );
    for (const f of pruned.failed)
      report.failed.push({ node: "prune", error: `${f.kind} ${f.id} in ${f.where}: ${f.error}` });
  } catch (e) {
    stopIfInterrupted(run);
    report.failed.push({ node: "prune", error: (e as Error).message });
  }
}

const quiet = () => undefined;

function dependsOn(
  p: { graph: { byName: Map<string, { deps: string[] }> } },
  name: string,
  bases: Set<string>,
): boolean {
  if (bases.has(name)) return true;
  return (p.graph.byName.get(name)?.deps ?? []).some((d) => dependsOn(p, d, bases));
}

export function humanReport(r: NightlyReport): string {
  const lines = [`nightly${r.dryRun ? " (dry run)" : ""}:`];
  lines.push("  upstream:");
  for (const u of r.upstream)
    lines.push(
      `    ${u.node.padEnd(16)} ${u.kind.padEnd(11)} ${u.changed ? "changed" : "unchanged"}${u.note ? ` (${u.note})` : ""}`,
    );
  lines.push(r.rebuilt.length ? "  rebuilt:" : "  rebuilt: nothing");
  for (const b of r.rebuilt) {
    lines.push(`    ${b.node.padEnd(16)} ${(b.action ?? (r.dryRun ? "would build" : "")).padEnd(11)} ${b.reason}`);
    if (b.packages) lines.push(`    ${"".padEnd(16)} packages: ${describeDiff(b.packages)}`);
  }
  for (const [ami, regions] of Object.entries(r.amis))
    lines.push(
      `  ami ${ami}: ${Object.entries(regions)
        .map(([k, v]) => `${k} ${v}`)
        .join(", ")}`,
    );
  lines.push(
    `  pruned: ${r.pruned.length ? r.pruned.map((p) => `${p.name} ${p.id.slice(0, 19)}`).join(", ") : "nothing"}`,
  );
  for (const f of r.failed) lines.push(`  FAILED ${f.node}: ${f.error.split("\n")[0]}`);
  if (r.skipped.length) lines.push(`  not attempted (a dependency failed): ${r.skipped.join(", ")}`);
  lines.push(
    `  seconds: ${Object.entries(r.seconds)
      .map(([k, v]) => `${k} ${v.toFixed(1)}`)
      .join(", ")}`,
  );
  return lines.join("\n");
}
