/** An AMI's run, as `bake ami` and the nightly ask for it: build what it needs, bake it (or find it by key), tag, copy, share, manifest. */
import { readPipeline, type Tools } from "../state/read.js";
import type { Target } from "../graph/keys.js";
import { UsageError } from "../errors.js";
import { assemblePlan } from "../plan/plan.js";
import { RunLogs } from "../state/logs.js";
import { updateManifest } from "../state/manifest.js";
import { amiNodeOf, amiWorkDir, packerEnvironment, reconcileAws, renderFolder, type BakeResult } from "./bake-ami.js";
import { bakeOnce } from "./execute.js";
import path from "node:path";
import { checkLocalTarget } from "../host/local-host.js";
import { checkVmTarget } from "../host/vm-host.js";
import { findVmDisk } from "../state/vm-record.js";
import type { BootReport } from "../host/boot-test.js";
import { packerTool } from "../tools/packer.js";
import { readRevision } from "../tools/git.js";
import { NoCredentialsError } from "../tools/ec2.js";
import { imagesReplaced, recordAmiContents } from "../sbom/record.js";
import type { ImageResult } from "../images/execute.js";

export interface AmiOptions {
  file: string;
  ami: string;
  target: Target;
  force: boolean;
  dryRun: boolean;
  json: boolean;
  /** --no-boot-test: skip booting a local bake (the boot test runs by default). */
  bootTest?: boolean;
  signal: AbortSignal;
}

export async function runAmi(options: AmiOptions, tools: Tools, out: (t: string) => void, err: (t: string) => void): Promise<BakeResult> {
  const pipeline = await readPipeline({ file: options.file, target: options.target, nodes: [options.ami] }, tools);
  const ami = amiNodeOf(pipeline, options.ami);
  const keyResult = pipeline.keys.get(ami.name)!;
  if (options.target === "aws") await checkAws(pipeline.config.file, ami.region, ami.copyTo, keyResult, tools);
  if (!keyResult.key) throw new UsageError(`${ami.name}: key unknown: ${(keyResult as { unknownBecause?: string }).unknownBecause}`);
  if (!pipeline.state.images.ok) throw new UsageError(`${pipeline.state.images.reason}: start it with make services`);
  const key = keyResult.key;
  const plan = assemblePlan(pipeline.nodes, pipeline.keys, pipeline.state, options.target);
  const entry = plan.find((e) => e.name === ami.name)!;
  const local = options.target === "local" ? checkLocalTarget(ami) : undefined;
  if (options.target === "vm") checkVmTarget(ami);
  const revision = readRevision(pipeline.config.dir);
  const sourceAmi = options.target === "aws" ? keyResult.inputs.source : undefined;
  const logs = new RunLogs(pipeline.config.dir);
  const say = (l: string) => {
    err(`${ami.name}: ${l}`);
    logs.line(ami.name, l);
  };
  const finish = async (result: BakeResult, baked: { built?: ImageResult[]; boot?: BootReport; replaced?: Map<string, string>; startedOn?: string } = {}) => {
    const { boot } = baked;
    const disk = options.target === "vm" ? findVmDisk(pipeline.config.dir, ami.name, key) : undefined;
    const vm = disk ? { vm: { path: path.relative(pipeline.config.dir, path.join(disk.dir, disk.disk)), format: disk.format, bytes: disk.bytes } } : {};
    const record = { key: result.key, target: result.target, regions: result.regions, inputs: keyResult.inputs, ...vm, ...(boot ? { boot: { ok: boot.ok, seconds: boot.seconds } } : {}) };
    if (!options.dryRun) {
      const contents = await recordAmiContents(pipeline, ami, key, result.regions, baked, { docker: tools.docker(), packer: packerTool() }, logs.runId, say);
      await updateManifest(pipeline.config.dir, { revision, images: contents.images, amis: { [ami.name]: { ...record, ...(contents.sbom ? { sbom: contents.sbom } : {}) } }, provenance: contents.statements });
    }
    out(options.json ? JSON.stringify({ ami: ami.name, ...result }, null, 2) : Object.entries(result.regions).map(([r, id]) => `${r}\t${id}`).join("\n"));
    return result;
  };

  try {
    if (entry.status === "cached" && !options.force) {
      say(`${entry.reason}: nothing to bake`);
      if (options.dryRun) return await finish({ key, target: options.target, regions: { [options.target === "aws" ? ami.region : options.target]: entry.existing! }, action: "existing" });
      const regions = options.target === "aws" ? await reconcileAws(pipeline, ami, entry.existing!, tools.ec2(), { sourceAmi, revision, signal: options.signal, onLine: say }) : { [options.target]: entry.existing! };
      return await finish({ key, target: options.target, regions, action: "existing" });
    }

    const dir = amiWorkDir(pipeline.config.dir, ami.name, options.target, key);
    const packer = packerTool();
    const { missing } = packerEnvironment(pipeline, ami);
    if (missing.length) throw new UsageError(`${ami.name} is instance-store: set ${missing.join(" and ")} (paths of the x509 certificate and key)`);
    if (options.dryRun) {
      const folder = await renderFolder(pipeline, ami, dir, packer, { sourceAmi, revision });
      say(`dry run: would build ${plan.filter((e) => e.kind === "image" && e.status === "build").map((e) => e.name).join(", ") || "no images"} and bake from ${folder.hclFile}`);
      out(folder.dir);
      return { key, target: options.target, regions: {}, action: "baked" };
    }

    const startedOn = new Date().toISOString();
    const replaced = await imagesReplaced(tools.docker(), pipeline.config.project, plan);
    const baked = await bakeOnce(pipeline, ami, tools, { target: options.target, key, dir, plan, packer, force: options.force, bootTest: options.bootTest !== false, local, sourceAmi, revision, signal: options.signal, logs, say });
    return await finish({ key, target: options.target, regions: baked.regions, action: baked.action }, { built: baked.built, boot: baked.boot, replaced, startedOn: baked.action === "baked" ? startedOn : undefined });
  } finally {
    await logs.close();
  }
}

async function checkAws(file: string, region: string, copyTo: string[], keyResult: { key?: string; unknownBecause?: string } & Record<string, unknown>, tools: Tools): Promise<void> {
  const ec2 = tools.ec2();
  try {
    await ec2.checkCredentials();
  } catch (e) {
    if (e instanceof NoCredentialsError) throw new UsageError(`${e.message}: bake ami on the aws target needs them; use --target local to bake a local image instead`);
    throw e;
  }
  let known: string[];
  try {
    known = await ec2.regions(region);
  } catch (e) {
    throw new UsageError(`AWS: cannot list regions from ${region}: ${(e as Error).message}`);
  }
  const unknown = [region, ...copyTo].filter((r) => !known.includes(r));
  if (unknown.length) throw new UsageError(`${file}: unknown AWS region${unknown.length > 1 ? "s" : ""} ${unknown.join(", ")} (known: ${known.slice(0, 8).join(", ")}…)`);
}
