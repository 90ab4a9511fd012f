/**
 * Execute step of `bake ami` once the plan says bake: one bake per key at a time (the machine's
 * lock, and on AWS the account's lease), then build what the AMI ships, export it, run Packer,
 * reconcile on EC2 or boot-test the local host.
 */
import { rmSync } from "node:fs";
import path from "node:path";
import type { AmiNode } from "../config/model.js";
import type { Pipeline, Tools } from "../state/read.js";
import { BuildFailedError } from "../errors.js";
import type { Target } from "../graph/keys.js";
import type { PlanEntry } from "../plan/plan.js";
import { executeBuild } from "../images/execute.js";
import type { RunLogs } from "../state/logs.js";
import { amiBakeLock, exportImages, localImageId, packerEnvironment, reconcileAws, renderFolder, runPacker } from "./bake-ami.js";
import { AWS_CONNECTION_ENV, DOCKER_SOCKET_ENV, KEY12, PRELOAD_ARCHIVE } from "./context.js";
import { ec2Endpoint } from "../tools/ec2.js";
import { acquireLease, leasePrefix } from "./lease.js";
import { bootPassEnv, bootTestLocal, checkHostImage } from "../host/local-host.js";
import type { BootReport } from "../host/boot-test.js";
import type { PackerTool } from "../tools/packer.js";
import { amiIdsByRegion } from "../tools/packer-output.js";
import { gitInfo } from "../tools/git.js";
import { withLock } from "../state/process-lock.js";
import { GOSS_ENV, requireGoss } from "../tools/goss.js";

export interface BakeRun {
  target: Target;
  key: string;
  dir: string;
  plan: PlanEntry[];
  packer: PackerTool;
  force: boolean;
  bootTest: boolean;
  local?: { engineSocket: string };
  sourceAmi?: string;
  revision?: string;
  signal: AbortSignal;
  logs: RunLogs;
  say: (line: string) => void;
}

export interface BakeOutcome {
  regions: Record<string, string>;
  /** "existing": another bake finished this key while this one waited for it. */
  action: "baked" | "existing";
  images: Record<string, { key: string; id: string; tags: string[] }>;
  boot?: BootReport;
}

/** Holds the key's lock (and lease), looks again for the key, and bakes only when it is still missing. */
export async function bakeOnce(pipeline: Pipeline, ami: AmiNode, tools: Tools, run: BakeRun): Promise<BakeOutcome> {
  const key12 = run.key.slice(0, KEY12);
  return withLock(amiBakeLock(pipeline.config.project, run.dir), async () => {
    const lease = run.target === "aws"
      ? await acquireLease(tools.ec2(), ami.region, leasePrefix(pipeline.config.project, ami.name, key12), { signal: run.signal, onWait: run.say, onLost: run.say })
      : undefined;
    try {
      const meanwhile = run.force ? undefined : await findBaked(pipeline, ami, run.key, run.target, tools);
      if (meanwhile) {
        run.say(`another bake finished key ${key12} while this one waited: ${meanwhile}`);
        const regions = run.target === "aws" ? await reconcileAws(pipeline, ami, meanwhile, tools.ec2(), { sourceAmi: run.sourceAmi, revision: run.revision, signal: run.signal, onLine: run.say }) : { local: meanwhile };
        return { regions, action: "existing", images: {} };
      }
      return await bake(pipeline, ami, tools, run);
    } finally {
      await lease?.release().catch((e: Error) => run.say(`the AWS lease ${lease.name} was not released (it expires by itself): ${e.message}`));
    }
  }, { signal: run.signal, onWait: (holder) => run.say(`waiting for key ${key12}: ${holder} is baking it`) });
}

async function findBaked(pipeline: Pipeline, ami: AmiNode, key: string, target: Target, tools: Tools): Promise<string | undefined> {
  if (target === "aws") return (await tools.ec2().findAmiByKey(ami.region, key))?.imageId;
  return (await tools.docker().listBakeImages(pipeline.config.project)).find((r) => r.node === ami.name && r.key === key)?.id;
}

async function bake(pipeline: Pipeline, ami: AmiNode, tools: Tools, run: BakeRun): Promise<BakeOutcome> {
  const { local, say, logs } = run;
  // The AMI's test runs after the Packer run (or as its last step): without goss, stop now.
  if (ami.test) requireGoss();
  const { secrets, withheld } = packerEnvironment(pipeline, ami);
  const passEnv = local && run.bootTest ? bootPassEnv(pipeline, ami) : {};
  const docker = tools.docker();
  const images = await executeBuild(pipeline, run.plan.filter((e) => e.kind === "image"), docker, () => gitInfo(pipeline.config.dir), logs, {
    noCache: false,
    push: false,
    concurrency: 2,
    tags: [],
    signal: run.signal,
    plain: Boolean(process.env.CI) || !process.stderr.isTTY,
  });
  const state = pipeline.state.images.ok ? pipeline.state.images.value : [];
  for (const r of images) if (!state.some((s) => s.id === r.id)) state.push({ id: r.id, tags: r.tags, node: r.name, key: r.key, created: Date.now() / 1000 });
  if (local) await checkHostImage(pipeline, ami, docker);
  rmSync(run.dir, { recursive: true, force: true });
  const folder = await renderFolder(pipeline, ami, run.dir, run.packer, { sourceAmi: run.sourceAmi, revision: run.revision });
  let ids: string[];
  try {
    say("exporting the shipped images");
    await exportImages(pipeline, ami, run.dir, docker, run.signal);
    say(`packer build ${folder.dir}`);
    ids = await runPacker(ami, folder, run.packer, { projectDir: pipeline.config.dir, env: { ...withheld, ...(local ? { [DOCKER_SOCKET_ENV]: local.engineSocket } : { [AWS_CONNECTION_ENV.ec2Endpoint]: ec2Endpoint() ?? "" }), ...(ami.test && !local ? { [GOSS_ENV]: requireGoss() } : {}) }, secrets, force: run.force, signal: run.signal, onLine: say, onRaw: (l) => logs.line(`${ami.name}.packer`, l) });
  } finally {
    // The archive is the size of every shipped image: it is not kept past the Packer run.
    rmSync(path.join(run.dir, PRELOAD_ARCHIVE), { force: true });
  }
  let regions: Record<string, string>;
  if (run.target === "aws") {
    const baked = amiIdsByRegion(ids.join(","))[ami.region];
    if (!baked) throw new BuildFailedError(ami.name, `${ami.name}: packer reported no AMI in ${ami.region} (artifacts: ${ids.join(", ")})`);
    regions = await reconcileAws(pipeline, ami, baked, tools.ec2(), { sourceAmi: run.sourceAmi, revision: run.revision, signal: run.signal, onLine: say });
  } else {
    regions = { local: localImageId(ids) };
  }
  const boot = local && run.bootTest ? await bootTestLocal(pipeline, ami, regions.local, docker, { ...local, passEnv, signal: run.signal, onLine: say }) : undefined;
  return { regions, action: "baked", images: Object.fromEntries(images.map((r) => [r.name, { key: r.key, id: r.id, tags: r.tags }])), boot };
}
