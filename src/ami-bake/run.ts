/** An AMI's run, as `bake ami` and the nightly ask for it: build what it needs, bake it (or find it by key), tag, copy, share, manifest. */
import { readPipeline, type Tools } from "../state/read.js";
import type { Target } from "../graph/keys.js";
import { UsageError } from "../errors.js";
import { assemblePlan } from "../plan/plan.js";
import { RunLogs } from "../state/logs.js";
import { updateManifest } from "../state/manifest.js";
import { amiNodeOf, amiWorkDir, packerEnvironment } from "../ami/bake-ami.js";
import { bakeOnce } from "./once.js";
import type { BootReport } from "../host/boot-test.js";
import { packerTool } from "../tools/packer.js";
import { readRevision } from "../tools/git.js";
import { imagesReplaced, recordAmiContents, stagesBelow } from "../sbom/record.js";
import type { ImageResult } from "../images/node-image.js";
import { targetOf } from "../targets/index.js";

export interface BakeResult {
  key: string;
  target: Target;
  regions: Record<string, string>;
  action: "existing" | "baked";
}

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

export async function runAmi(
  options: AmiOptions,
  tools: Tools,
  out: (t: string) => void,
  err: (t: string) => void,
): Promise<BakeResult> {
  const pipeline = await readPipeline({ file: options.file, target: options.target, nodes: [options.ami] }, tools);
  const ami = amiNodeOf(pipeline, options.ami);
  const keyResult = pipeline.keys.get(ami.name)!;
  const target = targetOf(options.target);
  // First: on AWS, without credentials the key is unknown too, and the credentials are the fault.
  await target.ready?.(pipeline, ami, tools);
  if (!keyResult.key)
    throw new UsageError(`${ami.name}: key unknown: ${(keyResult as { unknownBecause?: string }).unknownBecause}`);
  if (!pipeline.state.images.ok) throw new UsageError(`${pipeline.state.images.reason}: start it with make services`);
  const key = keyResult.key;
  const plan = assemblePlan(pipeline.nodes, pipeline.keys, pipeline.state, options.target);
  const entry = plan.find((e) => e.name === ami.name)!;
  target.needs(ami);
  const revision = readRevision(pipeline.config.dir);
  const sourceAmi = options.target === "aws" ? keyResult.inputs.source : undefined;
  const logs = new RunLogs(pipeline.config.dir);
  const say = (l: string) => {
    err(`${ami.name}: ${l}`);
    logs.line(ami.name, l);
  };
  const finish = async (
    result: BakeResult,
    baked: { built?: ImageResult[]; boot?: BootReport; replaced?: Map<string, string>; startedOn?: string } = {},
  ) => {
    const { boot } = baked;
    const record = {
      key: result.key,
      target: result.target,
      regions: result.regions,
      inputs: keyResult.inputs,
      ...target.recorded?.(pipeline, ami, key),
      // A staged bake: what the AMI was baked on, bottom first.
      ...(stagesBelow(pipeline, ami).length ? { stages: stagesBelow(pipeline, ami) } : {}),
      ...(boot ? { boot: { ok: boot.ok, seconds: boot.seconds } } : {}),
    };
    if (!options.dryRun) {
      const contents = await recordAmiContents(
        pipeline,
        ami,
        key,
        result.regions,
        baked,
        { docker: tools.docker(), packer: packerTool() },
        logs.runId,
        say,
      );
      await updateManifest(pipeline.config.dir, {
        revision,
        images: contents.images,
        amis: { [ami.name]: { ...record, ...(contents.sbom ? { sbom: contents.sbom } : {}) } },
        provenance: contents.statements,
      });
    }
    out(
      options.json
        ? JSON.stringify({ ami: ami.name, ...result }, null, 2)
        : Object.entries(result.regions)
            .map(([r, id]) => `${r}\t${id}`)
            .join("\n"),
    );
    return result;
  };

  try {
    if (entry.status === "cached" && !options.force) {
      say(`${entry.reason}: nothing to bake`);
      if (options.dryRun)
        return await finish({
          key,
          target: options.target,
          regions: { [options.target === "aws" ? ami.region : options.target]: entry.existing! },
          action: "existing",
        });
      const regions = await target.whole(pipeline, ami, entry.existing!, tools, {
        sourceAmi,
        revision,
        signal: options.signal,
        onLine: say,
      });
      return await finish({ key, target: options.target, regions, action: "existing" });
    }

    const dir = amiWorkDir(pipeline.config.dir, ami.name, options.target, key);
    const packer = packerTool();
    const { missing } = packerEnvironment(pipeline, ami, target.variables(ami).sensitive);
    if (missing.length)
      throw new UsageError(
        `${ami.name} is instance-store: set ${missing.join(" and ")} (paths of the x509 certificate and key)`,
      );
    if (options.dryRun) {
      const folder = await target.render(pipeline, ami, dir, packer, { sourceAmi, revision });
      say(
        `dry run: would build ${
          plan
            .filter((e) => e.kind === "image" && e.status === "build")
            .map((e) => e.name)
            .join(", ") || "no images"
        } and bake from ${folder.hclFile}`,
      );
      out(folder.dir);
      return { key, target: options.target, regions: {}, action: "baked" };
    }

    const startedOn = new Date().toISOString();
    const replaced = await imagesReplaced(tools.docker(), pipeline.config.project, plan);
    const baked = await bakeOnce(pipeline, ami, tools, {
      target: options.target,
      key,
      dir,
      plan,
      packer,
      force: options.force,
      bootTest: options.bootTest !== false,
      sourceAmi,
      revision,
      signal: options.signal,
      logs,
      say,
    });
    return await finish(
      { key, target: options.target, regions: baked.regions, action: baked.action },
      { built: baked.built, boot: baked.boot, replaced, startedOn: baked.action === "baked" ? startedOn : undefined },
    );
  } finally {
    await logs.close();
  }
}
