/** `bake ami <ami>`: build what the AMI needs, bake it (or find it by key), tag, copy, share, manifest. */
import path from "node:path";
import { rmSync } from "node:fs";
import { readPipeline, type Tools } from "../core/read.js";
import type { Target } from "../graph/keys.js";
import { BuildFailedError, UsageError } from "../errors.js";
import { assemblePlan } from "../plan/plan.js";
import { executeBuild } from "../build/execute.js";
import { RunLogs } from "../build/logs.js";
import { updateManifest } from "../build/manifest.js";
import { amiNodeOf, exportImages, localImageId, packerEnvironment, reconcileAws, renderFolder, runPacker, type BakeResult } from "../ami/bake-ami.js";
import { DOCKER_SOCKET_ENV, KEY12 } from "../ami/context.js";
import { bootPassEnv, bootTestLocal, checkHostImage, checkLocalTarget } from "../host/local-host.js";
import type { BootReport } from "../host/boot-test.js";
import { packerTool } from "../tools/packer.js";
import { amiIdsByRegion } from "../tools/packer-output.js";
import { gitInfo, readRevision } from "../tools/git.js";
import { NoCredentialsError } from "../tools/ec2.js";

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

export async function amiCommand(options: AmiOptions, tools: Tools, out: (t: string) => void, err: (t: string) => void): Promise<BakeResult> {
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
  const revision = readRevision(pipeline.config.dir);
  const sourceAmi = options.target === "aws" ? keyResult.inputs.source : undefined;
  const logs = new RunLogs(pipeline.config.dir);
  const say = (l: string) => {
    err(`${ami.name}: ${l}`);
    logs.line(ami.name, l);
  };
  const finish = (result: BakeResult, images: Record<string, { key: string; id: string; tags: string[] }> = {}, boot?: BootReport) => {
    const record = { key: result.key, target: result.target, regions: result.regions, inputs: keyResult.inputs, ...(boot ? { boot: { ok: boot.ok, seconds: boot.seconds } } : {}) };
    if (!options.dryRun) updateManifest(pipeline.config.dir, { revision, images, amis: { [ami.name]: record } });
    out(options.json ? JSON.stringify({ ami: ami.name, ...result }, null, 2) : Object.entries(result.regions).map(([r, id]) => `${r}\t${id}`).join("\n"));
    return result;
  };

  try {
    if (entry.status === "cached" && !options.force) {
      say(`${entry.reason}: nothing to bake`);
      if (options.dryRun) return finish({ key, target: options.target, regions: { [options.target === "aws" ? ami.region : "local"]: entry.existing! }, action: "existing" });
      const regions = options.target === "aws" ? await reconcileAws(pipeline, ami, entry.existing!, tools.ec2(), { sourceAmi, revision, signal: options.signal, onLine: say }) : { local: entry.existing! };
      return finish({ key, target: options.target, regions, action: "existing" });
    }

    const dir = path.join(pipeline.config.dir, ".bake", "ami", `${ami.name}-${options.target}-${key.slice(0, KEY12)}`);
    const packer = packerTool();
    const { missing, secrets, withheld } = packerEnvironment(pipeline, ami);
    if (missing.length) throw new UsageError(`${ami.name} is instance-store: set ${missing.join(" and ")} (paths of the x509 certificate and key)`);
    if (options.dryRun) {
      const folder = await renderFolder(pipeline, ami, dir, packer, { sourceAmi, revision });
      say(`dry run: would build ${plan.filter((e) => e.kind === "image" && e.status === "build").map((e) => e.name).join(", ") || "no images"} and bake from ${folder.hclFile}`);
      out(folder.dir);
      return { key, target: options.target, regions: {}, action: "baked" };
    }

    const passEnv = local && options.bootTest !== false ? bootPassEnv(pipeline, ami) : {};
    const docker = tools.docker();
    const images = await executeBuild(pipeline, plan.filter((e) => e.kind === "image"), docker, () => gitInfo(pipeline.config.dir), logs, {
      noCache: false,
      push: false,
      concurrency: 2,
      tags: [],
      signal: options.signal,
      plain: Boolean(process.env.CI) || !process.stderr.isTTY,
    });
    const state = pipeline.state.images.ok ? pipeline.state.images.value : [];
    for (const r of images) if (!state.some((s) => s.id === r.id)) state.push({ id: r.id, tags: r.tags, node: r.name, key: r.key, created: Date.now() / 1000 });
    if (local) await checkHostImage(pipeline, ami, docker);
    rmSync(dir, { recursive: true, force: true });
    const folder = await renderFolder(pipeline, ami, dir, packer, { sourceAmi, revision });
    say("exporting the shipped images");
    await exportImages(pipeline, ami, dir, docker, options.signal);
    say(`packer build ${folder.dir}`);
    const ids = await runPacker(ami, folder, packer, { projectDir: pipeline.config.dir, env: { ...withheld, ...(local ? { [DOCKER_SOCKET_ENV]: local.engineSocket } : {}) }, secrets, force: options.force, signal: options.signal, onLine: say, onRaw: (l) => logs.line(`${ami.name}.packer`, l) });
    let regions: Record<string, string>;
    if (options.target === "aws") {
      const baked = amiIdsByRegion(ids.join(","))[ami.region];
      if (!baked) throw new BuildFailedError(ami.name, `${ami.name}: packer reported no AMI in ${ami.region} (artifacts: ${ids.join(", ")})`);
      regions = await reconcileAws(pipeline, ami, baked, tools.ec2(), { sourceAmi, revision, signal: options.signal, onLine: say });
    } else {
      regions = { local: localImageId(ids) };
    }
    const boot = local && options.bootTest !== false ? await bootTestLocal(pipeline, ami, regions.local, docker, { ...local, passEnv, signal: options.signal, onLine: say }) : undefined;
    return finish({ key, target: options.target, regions, action: "baked" }, Object.fromEntries(images.map((r) => [r.name, { key: r.key, id: r.id, tags: r.tags }])), boot);
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
