/** An AMI's run, as `bake ami` and the nightly ask for it: build what it needs, bake it (or find it by key), tag, copy, share, manifest. */
import { readPipeline, requireEngine, type Pipeline, type Tools } from "../state/read.js";
import type { Target } from "../graph/keys.js";
import { BootTestFailedError, BuildFailedError, exitCodeFor, UsageError } from "../errors.js";
import { assemblePlan, type PlanEntry } from "../plan/plan.js";
import { RunLogs } from "../state/logs.js";
import { readManifest, updateManifest } from "../state/manifest.js";
import { reportRun } from "../report/write.js";
import { hostPackageChanges } from "../sbom/host-packages.js";
import { amiNodeOf, amiWorkDir, requireVariables } from "../ami/bake-ami.js";
import { bakeOnce } from "./once.js";
import type { BootReport } from "../host/boot-test.js";
import { packerTool, type PackerTool } from "../tools/packer.js";
import { readRevision } from "../tools/git.js";
import { imagesReplaced } from "../sbom/record.js";
import { recordAmiContents, stagesBelow, toolVersions, type BakedContents } from "../sbom/ami-record.js";
import type { ImageResult } from "../images/node-build.js";
import { targetOf } from "../targets/index.js";
import type { AmiTarget } from "../targets/target.js";
import type { AmiNode } from "../config/model.js";
import type { KeyResult } from "../graph/keys.js";

export interface BakeResult {
  key: string;
  target: Target;
  regions: Record<string, string>;
  action: "existing" | "baked";
  /** What the run's report holds besides (never printed with --json): the boot test, the stages below. */
  boot?: BootReport;
  stages?: { name: string; key: string }[];
}

export interface AmiOptions {
  file: string;
  ami: string;
  target: Target;
  force: boolean;
  dryRun: boolean;
  json: boolean;
  /** --no-boot-test: skip booting a local or vm bake (the boot test runs by default). */
  bootTest?: boolean;
  signal: AbortSignal;
}

/** What one AMI run reads and settles before it decides anything. */
interface AmiRun {
  options: AmiOptions;
  tools: Tools;
  pipeline: Pipeline;
  ami: AmiNode;
  keyResult: KeyResult;
  key: string;
  target: AmiTarget;
  plan: PlanEntry[];
  revision: string | undefined;
  sourceAmi: string | undefined;
  logs: RunLogs;
  say: (l: string) => void;
  err: (t: string) => void;
  out: (t: string) => void;
}

export async function runAmi(
  options: AmiOptions,
  tools: Tools,
  out: (t: string) => void,
  err: (t: string) => void,
): Promise<BakeResult> {
  const run = await readAmiRun(options, tools, out, err);
  const { pipeline, ami, plan, logs } = run;
  const entry = plan.find((e) => e.name === ami.name)!;
  const started = new Date();
  const previous = readManifest(pipeline.config.dir).amis[ami.name];
  try {
    const result = await bakeOrFind(run, entry);
    reportAmi(run, started, 0, {
      ...result,
      previousKey: previous?.target === options.target ? previous.key : undefined,
    });
    const stages = stagesBelow(pipeline, ami);
    return {
      ...result.result,
      ...(result.boot ? { boot: result.boot } : {}),
      ...(stages.length && result.result.action === "baked" ? { stages } : {}),
    };
  } catch (e) {
    reportAmi(run, started, exitCodeFor(e), { failure: e });
    throw e;
  } finally {
    await logs.close();
  }
}

/** The AMI found by its key and made whole, or baked (with the images it ships built first); the manifest records it. */
async function bakeOrFind(
  run: AmiRun,
  entry: PlanEntry,
): Promise<{ result: BakeResult; built?: ImageResult[]; boot?: BootReport }> {
  const { options, tools, pipeline, ami, key, target, plan, logs } = run;
  if (entry.status === "cached" && !options.force) {
    run.say(`${entry.reason}: nothing to bake`);
    const regions = options.dryRun
      ? { [options.target === "aws" ? ami.region : options.target]: entry.existing! }
      : await target.whole(pipeline, ami, entry.existing!, tools, {
          sourceAmi: run.sourceAmi,
          revision: run.revision,
          signal: options.signal,
          onLine: run.say,
        });
    return { result: await finish(run, { key, target: options.target, regions, action: "existing" }) };
  }
  const dir = amiWorkDir(pipeline.config.dir, ami.name, options.target, key);
  const packer = packerTool();
  requireVariables(ami, target.variables(ami).sensitive);
  if (options.dryRun) return { result: await dryRun(run, dir, packer) };
  const startedOn = new Date().toISOString();
  // The provenance's tool versions, read while the bake runs (ansible-playbook --version starts
  // Python: most of a second, at the end of a release-only bake otherwise). It never rejects.
  const versions = toolVersions(tools.docker(), packer);
  const replaced = await imagesReplaced(tools.docker(), pipeline.config.project, plan);
  const baked = await bakeOnce(pipeline, ami, tools, {
    target: options.target,
    key,
    dir,
    plan,
    packer,
    force: options.force,
    bootTest: options.bootTest !== false,
    sourceAmi: run.sourceAmi,
    revision: run.revision,
    signal: options.signal,
    logs,
    say: run.say,
  });
  const result = await finish(
    run,
    { key, target: options.target, regions: baked.regions, action: baked.action },
    {
      built: baked.built,
      boot: baked.boot,
      replaced,
      startedOn: baked.action === "baked" ? startedOn : undefined,
      versions,
    },
  );
  return { result, built: baked.built, boot: baked.boot };
}

/**
 * The run's record and report beside its logs (not on a dry run; not when nothing was built):
 * the images built, the AMI with its ids, stages, checks and host package changes, or the failure.
 */
function reportAmi(
  run: AmiRun,
  started: Date,
  exit: number,
  how: { result?: BakeResult; built?: ImageResult[]; boot?: BootReport; previousKey?: string; failure?: unknown },
): void {
  const { pipeline, ami, options } = run;
  if (options.dryRun) return;
  const { result, failure } = how;
  const packages =
    result?.action === "baked"
      ? hostPackageChanges(pipeline.config.dir, ami.name, options.target, how.previousKey, result.key)
      : undefined;
  const r = reportRun({
    folder: run.logs.dir,
    run: run.logs.runId,
    command: "ami",
    project: pipeline.config.project,
    started,
    exit,
    plan: run.plan,
    results: [
      ...(how.built ?? []),
      ...(result
        ? [
            {
              name: ami.name,
              action: result.action === "baked" ? ("built" as const) : ("cached" as const),
              seconds: (Date.now() - started.getTime()) / 1000,
              id: Object.values(result.regions)[0] ?? "",
              tags: [],
              regions: result.regions,
              stages: stagesBelow(pipeline, ami),
              ...(how.boot ? { checks: how.boot.checks } : {}),
              ...(packages ? { packages } : {}),
            },
          ]
        : []),
    ],
    failures:
      failure instanceof BuildFailedError
        ? [
            {
              node: failure.node,
              message: failure.message,
              detail: failure.detail,
              ...(failure instanceof BootTestFailedError ? { checks: failure.checks } : {}),
            },
          ]
        : [],
  });
  if (r.report) run.err(`report: ${r.report}`);
  if (r.unwritten) run.err(`warning: ${r.unwritten}`);
}

/** The pipeline read for the AMI, its key known (or the reason it is not), and the target ready. */
async function readAmiRun(
  options: AmiOptions,
  tools: Tools,
  out: (t: string) => void,
  err: (t: string) => void,
): Promise<AmiRun> {
  const pipeline = await readPipeline({ file: options.file, target: options.target, nodes: [options.ami] }, tools);
  const ami = amiNodeOf(pipeline, options.ami);
  const keyResult = pipeline.keys.get(ami.name)!;
  const target = targetOf(options.target);
  // First: on AWS, without credentials the key is unknown too, and the credentials are the fault.
  await target.ready?.(pipeline, ami, tools);
  if (!keyResult.key)
    throw new UsageError(`${ami.name}: key unknown: ${(keyResult as { unknownBecause?: string }).unknownBecause}`);
  requireEngine(pipeline);
  const plan = assemblePlan(pipeline.nodes, pipeline.keys, pipeline.state, options.target);
  target.needs(ami);
  const logs = new RunLogs(pipeline.config.dir);
  return {
    options,
    tools,
    pipeline,
    ami,
    keyResult,
    key: keyResult.key,
    target,
    plan,
    revision: readRevision(pipeline.config.dir),
    sourceAmi: options.target === "aws" ? keyResult.inputs.source : undefined,
    logs,
    say: (l: string) => {
      err(`${ami.name}: ${l}`);
      logs.line(ami.name, l);
    },
    err,
    out,
  };
}

/** A dry run renders the folder and says what it would build and bake from. */
async function dryRun(run: AmiRun, dir: string, packer: PackerTool): Promise<BakeResult> {
  const { pipeline, ami, plan, options } = run;
  const folder = await run.target.render(pipeline, ami, dir, packer, {
    sourceAmi: run.sourceAmi,
    revision: run.revision,
  });
  const building = plan.filter((e) => e.kind === "image" && e.status === "build").map((e) => e.name);
  run.say(`dry run: would build ${building.join(", ") || "no images"} and bake from ${folder.hclFile}`);
  run.out(folder.dir);
  return { key: run.key, target: options.target, regions: {}, action: "baked" };
}

/** The run's result: the manifest's record (not on a dry run), then the regions (or --json) on stdout. */
async function finish(run: AmiRun, result: BakeResult, baked: BakedRecord = {}): Promise<BakeResult> {
  if (!run.options.dryRun) await recordAmi(run, result, baked);
  run.out(
    run.options.json
      ? JSON.stringify({ ami: run.ami.name, ...result }, null, 2)
      : Object.entries(result.regions)
          .map(([r, id]) => `${r}\t${id}`)
          .join("\n"),
  );
  return result;
}

/** What a bake hands its record: its contents, and the boot test's report. */
interface BakedRecord extends BakedContents {
  boot?: BootReport;
}

/** The manifest's record of the AMI: key, regions, inputs, stages, boot test, SBOM, and the images it ships. */
async function recordAmi(run: AmiRun, result: BakeResult, baked: BakedRecord): Promise<void> {
  const { pipeline, ami, key, tools, logs } = run;
  const { boot } = baked;
  // A staged bake: what the AMI was baked on, bottom first.
  const stages = stagesBelow(pipeline, ami);
  const record = {
    key: result.key,
    target: result.target,
    regions: result.regions,
    inputs: run.keyResult.inputs,
    ...run.target.recorded?.(pipeline, ami, key),
    ...(stages.length ? { stages } : {}),
    ...(boot ? { boot: { ok: boot.ok, seconds: boot.seconds } } : {}),
  };
  const contents = await recordAmiContents(
    pipeline,
    ami,
    key,
    result.regions,
    baked,
    { docker: tools.docker(), packer: packerTool() },
    logs.runId,
    run.say,
  );
  await updateManifest(pipeline.config.dir, {
    revision: run.revision,
    images: contents.images,
    amis: { [ami.name]: { ...record, ...(contents.sbom ? { sbom: contents.sbom } : {}) } },
    provenance: contents.statements,
  });
}
