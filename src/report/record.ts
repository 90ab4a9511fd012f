/**
 * What a run did, kept beside its logs as `.bake/logs/<run>/run.json`: every node of the plan with
 * what was planned and why, what happened (built, pulled, cached, failed, or not reached), its key,
 * time, image id, package changes and log file. The run's report (report.html) and the CI job
 * summary are drawn from it, and `bake report` draws them again from it later. It holds what the
 * terminal showed, already redacted; secrets never reach it.
 */
import { existsSync, readdirSync, readFileSync } from "node:fs";
import path from "node:path";
import { UsageError } from "../errors.js";
import type { PlanEntry, Status } from "../plan/plan.js";
import type { PackageDiff } from "../sbom/package-diff.js";

export type Outcome = "built" | "pulled" | "cached" | "failed" | "not reached";

export interface ReportNode {
  name: string;
  kind: "image" | "ami";
  layer: string;
  deps: string[];
  key?: string;
  /** What the plan said before the run, and why. */
  planned: Status;
  reason: string;
  outcome: Outcome;
  seconds?: number;
  id?: string;
  tags?: string[];
  packages?: PackageDiff & { since: string };
  failure?: { message: string; detail: string };
  /** An AMI: its id in each region (or the local image, the VM disk), and the stages it was baked on. */
  regions?: Record<string, string>;
  stages?: { name: string; key: string }[];
  /** An AMI's boot test and goss checks, passed or not, with what each saw. */
  checks?: Check[];
  /** The node's log, a file name in the run's folder, when the run wrote one. */
  log?: string;
}

export interface Check {
  name: string;
  ok: boolean;
  detail: string;
}

/** What a nightly run adds to its record: each upstream it checked, and what its prune removed. */
export interface NightlyParts {
  upstream: { node: string; kind: string; changed: boolean; note?: string }[];
  pruned: { kind: string; name: string; where: string; id: string }[];
  phases: Record<string, number>;
}

export interface RunRecord {
  format: 1;
  run: string;
  command: string;
  project: string;
  started: string;
  ended: string;
  exit: number;
  nodes: ReportNode[];
  nightly?: NightlyParts;
}

export interface NodeResult {
  name: string;
  key?: string;
  action: "built" | "pulled" | "cached";
  seconds: number;
  id: string;
  tags: string[];
  packages?: PackageDiff & { since: string };
  regions?: Record<string, string>;
  stages?: { name: string; key: string }[];
  checks?: Check[];
}

/** The record of a run, from its plan and what came of it: pure. */
export function runRecord(input: {
  run: string;
  command: string;
  project: string;
  started: Date;
  ended: Date;
  exit: number;
  plan: PlanEntry[];
  results: NodeResult[];
  failures: { node: string; message: string; detail: string; checks?: Check[] }[];
  logs: string[];
  nightly?: NightlyParts;
}): RunRecord {
  const result = new Map(input.results.map((r) => [r.name, r]));
  const failure = new Map(input.failures.map((f) => [f.node, f]));
  const logs = new Set(input.logs);
  return {
    format: 1,
    run: input.run,
    command: input.command,
    project: input.project,
    started: input.started.toISOString(),
    ended: input.ended.toISOString(),
    exit: input.exit,
    nodes: input.plan.map((e) => {
      const r = result.get(e.name);
      const f = failure.get(e.name);
      const outcome: Outcome = f ? "failed" : r ? r.action : e.status === "cached" ? "cached" : "not reached";
      return {
        name: e.name,
        kind: e.kind,
        layer: e.layer,
        deps: e.deps,
        ...(e.key ? { key: e.key } : {}),
        planned: e.status,
        reason: e.reason,
        outcome,
        ...(r ? { seconds: Math.round(r.seconds * 10) / 10, id: r.id, tags: r.tags } : {}),
        ...(r?.packages ? { packages: r.packages } : {}),
        ...(f ? { failure: { message: f.message, detail: f.detail } } : {}),
        ...(r?.regions ? { regions: r.regions } : {}),
        ...(r?.stages?.length ? { stages: r.stages } : {}),
        ...((r?.checks ?? f?.checks) ? { checks: r?.checks ?? f?.checks } : {}),
        ...(logs.has(`${e.name}.log`) ? { log: `${e.name}.log` } : {}),
      };
    }),
    ...(input.nightly ? { nightly: input.nightly } : {}),
  };
}

/** A run that is worth a report: something was built, pulled or failed (a no-op run leaves none). */
export function worthReporting(record: RunRecord): boolean {
  return (
    record.exit !== 0 ||
    record.nodes.some((n) => n.outcome === "built" || n.outcome === "pulled") ||
    Boolean(record.nightly?.pruned.length)
  );
}

/** The folder of a run under `.bake/logs`: the one named, else the latest with a record. */
export function runFolder(projectDir: string, run?: string): string {
  const root = path.join(projectDir, ".bake", "logs");
  if (run) {
    if (!/^[\w.-]+$/.test(run) || !existsSync(path.join(root, run, "run.json")))
      throw new UsageError(`no run ${run} with a record under ${root}: \`bake report\` without a run opens the latest`);
    return path.join(root, run);
  }
  const runs = existsSync(root)
    ? readdirSync(root)
        .filter((d) => existsSync(path.join(root, d, "run.json")))
        .sort()
    : [];
  if (!runs.length)
    throw new UsageError(
      `no run with a record under ${root}: a bake build, ami or nightly that builds something writes one`,
    );
  return path.join(root, runs.at(-1)!);
}

export function readRunRecord(folder: string): RunRecord {
  const file = path.join(folder, "run.json");
  const record = JSON.parse(readFileSync(file, "utf8")) as RunRecord;
  if (record?.format !== 1 || !Array.isArray(record.nodes))
    throw new UsageError(`${file} is not a run record this bake reads (format ${String(record?.format)})`);
  return record;
}
