/** `bake prune [--yes]`: retention for AMIs (with their snapshots) and local images; a plan unless --yes. */
import { readPipeline, type Tools } from "../core/read.js";
import { readManifest } from "../build/manifest.js";
import { planAmiRetention, planImageRetention, type PruneDecision } from "../prune/plan.js";
import { NoCredentialsError } from "../tools/ec2.js";

export interface PruneOptions {
  file: string;
  yes: boolean;
  json: boolean;
  keepImages: number;
}

export interface PruneReport {
  decisions: PruneDecision[];
  removed: PruneDecision[];
  notes: string[];
}

export async function pruneCommand(options: PruneOptions, tools: Tools, out: (t: string) => void, err: (t: string) => void): Promise<PruneReport> {
  const pipeline = await readPipeline({ file: options.file, target: "aws", everyImage: true }, tools);
  const { config } = pipeline;
  const manifest = readManifest(config.dir);
  const decisions: PruneDecision[] = [];
  const notes: string[] = [];

  if (config.amis.length) {
    const ec2 = tools.ec2();
    let aws = true;
    try {
      await ec2.checkCredentials();
    } catch (e) {
      if (!(e instanceof NoCredentialsError)) throw e;
      aws = false;
      notes.push("AWS AMIs not looked at: no AWS credentials");
    }
    if (aws) {
      const inUse = new Map<string, Set<string>>();
      for (const ami of config.amis) {
        const current = pipeline.keys.get(ami.name)?.key ?? (manifest.amis[ami.name]?.target === "aws" ? manifest.amis[ami.name].key : undefined);
        for (const region of [ami.region, ...ami.copyTo]) {
          if (!inUse.has(region)) inUse.set(region, await ec2.imagesInUse(region));
          decisions.push(...planAmiRetention(ami.name, region, await ec2.listBakedAmis(region, config.project, ami.name), ami.retention.keep, inUse.get(region)!, current));
        }
      }
    }
  }
  if (pipeline.state.images.ok) {
    const records = pipeline.state.images.value;
    for (const img of config.images) {
      decisions.push(...planImageRetention(img.name, records.filter((r) => r.node === img.name), options.keepImages, pipeline.keys.get(img.name)?.key));
    }
    for (const ami of config.amis) {
      const current = manifest.amis[ami.name]?.target === "local" ? manifest.amis[ami.name].key : undefined;
      decisions.push(...planImageRetention(ami.name, records.filter((r) => r.node === ami.name), ami.retention.keep, current).map((d) => ({ ...d, kind: "ami" as const })));
    }
  } else notes.push(`local images not looked at: ${pipeline.state.images.reason}`);

  const removed: PruneDecision[] = [];
  if (options.yes) {
    const ec2 = config.amis.length ? tools.ec2() : undefined;
    const docker = tools.docker();
    for (const d of decisions.filter((x) => x.action === "remove")) {
      if (d.where === "local") {
        if (await docker.removeUnusedImage(d.id)) removed.push(d);
        else {
          d.action = "keep";
          d.reason = "used by a container";
        }
      } else {
        await ec2!.deregister(d.where, d.id);
        for (const snap of d.snapshots ?? []) await ec2!.deleteSnapshot(d.where, snap);
        removed.push(d);
      }
    }
  }
  const report = { decisions, removed, notes };
  if (options.json) out(JSON.stringify({ dryRun: !options.yes, ...report }, null, 2));
  else {
    out(decisions.map((d) => `${d.action.padEnd(6)} ${d.kind.padEnd(5)} ${d.name.padEnd(16)} ${d.where.padEnd(10)} ${d.id.slice(0, 24).padEnd(24)} ${d.reason}`).join("\n") || "nothing bake made was found");
    for (const n of notes) err(`note: ${n}`);
    const count = decisions.filter((d) => d.action === "remove").length;
    err(options.yes ? `removed ${removed.length}` : `${count} to remove; run bake prune --yes to remove them`);
  }
  return report;
}
