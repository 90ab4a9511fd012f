/** The nightly run: refresh bases from upstream → build what changed → bake AMIs → prune → report. */
import { shortKey } from "../config/model.js";
import path from "node:path";
import { readPipeline, type Tools } from "../state/read.js";
import { projectLock, withLock } from "../files/process-lock.js";
import { readLock, writeLock } from "../config/bake-lock.js";
import type { Target } from "../graph/keys.js";
import { assemblePlan, previousImage } from "../plan/plan.js";
import { executeBuild } from "../images/execute.js";
import type { ImageResult } from "../images/node-image.js";
import { RunLogs } from "../state/logs.js";
import { readManifest, updateManifest } from "../state/manifest.js";
import { gitInfo, readRevision } from "../tools/git.js";
import { aptMirror, debootstrapRelease, type UpstreamCheck } from "./upstream.js";
import { runAmi } from "../ami-bake/run.js";
import { runPrune } from "../prune/run.js";
import { interruption, type BuildFailedError } from "../errors.js";
import { imageDescriber, imagesReplaced, type ImageContents } from "../sbom/record.js";
import { describeDiff, hostPackageChanges, type PackageDiff } from "../sbom/packages.js";

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

async function nightly(options: NightlyOptions, tools: Tools, err: (t: string) => void): Promise<NightlyReport> {
  const report: NightlyReport = {
    dryRun: options.dryRun,
    upstream: [],
    rebuilt: [],
    failed: [],
    skipped: [],
    amis: {},
    pruned: [],
    seconds: {},
  };
  // An interrupt ends the run between phases (and inside them, where the tools stop): it is never
  // recorded as one more failure, so no later phase starts, above all not the prune.
  const stopIfInterrupted = () => {
    if (options.signal.aborted) throw interruption(options.signal);
  };
  const timed = async <T>(phase: string, fn: () => Promise<T>): Promise<T> => {
    stopIfInterrupted();
    err(`nightly: ${phase}`);
    const t = Date.now();
    try {
      return await fn();
    } finally {
      report.seconds[phase] = (Date.now() - t) / 1000;
      stopIfInterrupted();
    }
  };
  const quiet = () => undefined;

  // 1. refresh: what changed upstream
  // Images only (the AMIs bake later, each on its own target): no default local host here.
  const before = await readPipeline({ file: options.file, target: "local", defaultLocalHost: false }, tools);
  await timed("refresh", async () => {
    const lock = readLock(before.config.dir);
    const mirror = aptMirror();
    let lockChanged = false;
    for (const img of before.config.images) {
      if (img.rootfs?.debootstrap) {
        const { digest, url, note } = await debootstrapRelease(img, mirror);
        const pinned = lock.debootstrap[img.name]?.release;
        const changed = Boolean(digest && digest !== pinned);
        report.upstream.push({
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
        report.upstream.push({
          node: img.name,
          kind: "tar",
          changed: false,
          note: "content-addressed: a new tarball is a new key",
        });
      }
    }
    if (lockChanged && !options.dryRun) writeLock(before.config.dir, lock);
  });
  const after = await readPipeline({ file: options.file, target: "local", pull: true, defaultLocalHost: false }, tools);
  for (const img of after.config.images.filter((i) => i.from)) {
    // Before: what the node's current image was built from (its labels); the engine may hold
    // the new upstream image under the tag already, so its local digest says nothing.
    const current = after.state.images.ok
      ? previousImage(after.state.images.value.filter((r) => r.node === img.name))
      : undefined;
    const was = current?.inputs?.from ?? before.keys.get(img.name)?.inputs.from;
    const now = after.keys.get(img.name)?.inputs.from;
    report.upstream.push({
      node: img.name,
      kind: "from",
      before: was?.split("@")[1],
      after: now?.split("@")[1],
      changed: Boolean(now && was !== now),
      note: now ? undefined : (after.keys.get(img.name) as { unknownBecause?: string }).unknownBecause,
    });
  }

  // 2. build: everything whose key changed (with --force, every image)
  const plan = assemblePlan(
    after.nodes.filter((n) => n.kind === "image"),
    after.keys,
    after.state,
    "local",
  );
  const changedBases = new Set(report.upstream.filter((u) => u.changed && u.kind === "debootstrap").map((u) => u.node));
  for (const e of plan) {
    if (e.status === "build" || options.force)
      report.rebuilt.push({ node: e.name, reason: options.force && e.status !== "build" ? "--force" : e.reason });
    else if (options.dryRun && dependsOn(after, e.name, changedBases))
      report.rebuilt.push({ node: e.name, reason: "its base's upstream release changed" });
  }
  let built: ImageResult[] = [];
  let contents: ImageContents[] = [];
  const failedImages = new Set<string>();
  if (!options.dryRun) {
    const logs = new RunLogs(after.config.dir);
    await timed("build", async () => {
      const startedOn = new Date().toISOString();
      const replaced = await imagesReplaced(tools.docker(), after.config.project, plan);
      // Each image's contents are read as it is built, beside the builds still running.
      const describer = imageDescriber(after, tools.docker(), replaced);
      try {
        built = await executeBuild(after, plan, tools.docker(), () => gitInfo(after.config.dir), logs, {
          noCache: options.force,
          push: Boolean(after.config.registry),
          concurrency: 2,
          tags: [],
          signal: options.signal,
          plain: true,
          onImage: describer.add,
          onPartial: (p) => {
            built = p.built;
            for (const f of p.failures) {
              report.failed.push({ node: f.node, error: `${f.message}${f.detail ? `\n${f.detail}` : ""}` });
              failedImages.add(f.node);
            }
            report.skipped.push(...p.skipped);
            for (const s of p.skipped) failedImages.add(s);
          },
        });
      } catch (e) {
        if (!failedImages.size || options.signal.aborted) throw e;
      } finally {
        await logs.close();
      }
      contents = await describer.describe(built, { id: logs.runId, startedOn, finishedOn: new Date().toISOString() });
    });
    for (const r of report.rebuilt) {
      r.action = built.find((b) => b.name === r.node)?.action ?? (failedImages.has(r.node) ? "failed" : undefined);
      const packages = contents.find((c) => c.name === r.node)?.packages;
      if (packages) r.packages = packages;
    }
    const sbomOf = (name: string) => contents.find((c) => c.name === name)?.sbom;
    if (built.length)
      await updateManifest(after.config.dir, {
        revision: readRevision(after.config.dir),
        images: Object.fromEntries(
          built.map((b) => [
            b.name,
            {
              key: b.key,
              id: b.id,
              ...(b.digest ? { digest: b.digest } : {}),
              tags: b.tags,
              ...(sbomOf(b.name) ? { sbom: sbomOf(b.name) } : {}),
            },
          ]),
        ),
        provenance: contents.flatMap((c) => (c.statement ? [c.statement] : [])),
      });
  }

  // 3. bake: every AMI whose images all built
  await timed("bake", async () => {
    for (const ami of after.config.amis) {
      const blocked = [...ami.preload, ...ami.services].filter((n) => failedImages.has(n));
      if (blocked.length) {
        report.skipped.push(ami.name);
        continue;
      }
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
          tools,
          quiet,
          err,
        );
        report.amis[ami.name] = result.regions;
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
        }
      } catch (e) {
        stopIfInterrupted();
        report.failed.push({ node: ami.name, error: (e as BuildFailedError).message });
      }
    }
  });

  // 4. prune (a plan only on a dry run)
  await timed("prune", async () => {
    try {
      const pruned = await runPrune(
        { file: options.file, yes: !options.dryRun, json: false, keepImages: 2, signal: options.signal },
        tools,
        quiet,
        quiet,
      );
      report.pruned = (options.dryRun ? pruned.decisions.filter((d) => d.action === "remove") : pruned.removed).map(
        ({ kind, name, where, id }) => ({ kind, name, where, id }),
      );
      for (const f of pruned.failed)
        report.failed.push({ node: "prune", error: `${f.kind} ${f.id} in ${f.where}: ${f.error}` });
    } catch (e) {
      stopIfInterrupted();
      report.failed.push({ node: "prune", error: (e as Error).message });
    }
  });

  return report;
}

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
