/**
 * The aws target: Packer's amazon-ebs or amazon-instance builder on an EC2 instance. One bake of a
 * key at a time across machines (the account's lease, ami/lease.ts); an AMI found by its key is
 * made whole (tags, copies to copy_to regions, launch permissions) before it is returned.
 */
import { copyFileSync, mkdirSync } from "node:fs";
import path from "node:path";
import type { AmiNode } from "../config/model.js";
import { KEY_TAG_LENGTH } from "../config/model.js";
import { BuildFailedError, UsageError } from "../errors.js";
import { knownKeys, type Pipeline } from "../state/read.js";
import { ec2Endpoint, NoCredentialsError, type Ec2Tool } from "../tools/ec2.js";
import { amiIdsByRegion } from "../tools/packer-output.js";
import { GOSS_DIR, GOSS_ENV, requireGoss } from "../tools/goss.js";
import { renderFolder, type RenderedFolder } from "../ami/bake-ami.js";
import { stagesOn, type Stage } from "../graph/stages.js";
import type { PackerTool } from "../tools/packer.js";
import {
  amiTags,
  AWS_CONNECTION_ENV,
  EC2_AMI_TOOLS_ENV,
  GOSS_FOLDER,
  gossCommand,
  type PackerVariable,
  type TargetTemplatePart,
} from "../ami/context.js";
import { acquireLease, leasePrefix } from "../ami/lease.js";
import {
  exportAndRunPacker,
  imagesOf,
  keepPackagesOf,
  type AmiTarget,
  type Reconciling,
  type TargetBake,
} from "./target.js";

export const aws: AmiTarget = {
  name: "aws",
  bootsHere: false,

  needs() {},

  variables: awsVariables,

  async ready(pipeline, ami, tools) {
    const ec2 = tools.ec2();
    try {
      await ec2.checkCredentials();
    } catch (e) {
      if (e instanceof NoCredentialsError)
        throw new UsageError(
          `${e.message}: bake ami on the aws target needs them; use --target local to bake a local image instead`,
        );
      throw e;
    }
    let known: string[];
    try {
      known = await ec2.regions(ami.region);
    } catch (e) {
      throw new UsageError(`AWS: cannot list regions from ${ami.region}: ${(e as Error).message}`);
    }
    const unknown = [ami.region, ...ami.copyTo].filter((r) => !known.includes(r));
    if (unknown.length)
      throw new UsageError(
        `${pipeline.config.file}: unknown AWS region${unknown.length > 1 ? "s" : ""} ${unknown.join(", ")} (known: ${known.slice(0, 8).join(", ")}…)`,
      );
  },

  async find(_pipeline, ami, key, tools) {
    return (await tools.ec2().findAmiByKey(ami.region, key))?.imageId;
  },

  whole(pipeline, ami, found, tools, options) {
    return reconcileAws(pipeline, ami, found, tools.ec2(), options);
  },

  hold(pipeline, ami, key, tools, options) {
    return acquireLease(
      tools.ec2(),
      ami.region,
      leasePrefix(pipeline.config.project, ami.name, key.slice(0, KEY_TAG_LENGTH)),
      { signal: options.signal, onWait: options.say, onLost: options.say },
    );
  },

  render(pipeline, ami, dir, packer, extra) {
    // Staged: the folder is the host stage's; the release stage's is rendered once the AMI it
    // starts from is known (bake below).
    return awsFolder(pipeline, ami, dir, packer, extra, stagesOn(ami, "aws", pipeline.keys.get(ami.name))?.[0]);
  },

  async bake(b) {
    const { pipeline, ami, run } = b;
    const env = {
      ...b.env.withheld,
      [AWS_CONNECTION_ENV.ec2Endpoint]: ec2Endpoint() ?? "",
      ...(ami.test ? { [GOSS_ENV]: requireGoss() } : {}),
    };
    const stages = stagesOn(ami, "aws", pipeline.keys.get(ami.name));
    let ids: string[];
    let sourceAmi = run.sourceAmi;
    let packagesDir = run.dir;
    if (!stages) ids = await exportAndRunPacker(b, env);
    else {
      // The release stage: an instance of the host stage's AMI, on which bake's release
      // provisioning loads the release layers and writes the contracts; no engine, no playbook.
      const [host, release] = stages;
      sourceAmi = await awsHostStage(b, host, env);
      const folder = await awsFolder(
        pipeline,
        ami,
        path.join(run.dir, RELEASE_FOLDER),
        run.packer,
        { sourceAmi, revision: run.revision },
        release,
      );
      packagesDir = folder.dir;
      ids = await exportAndRunPacker(b, env, {
        name: release.name,
        folder,
        images: release.images,
        below: host.images,
      });
    }
    const baked = bakedIn(ami, ids);
    await keepPackagesOf(b, `${ami.region}:${baked}`, undefined, packagesDir);
    const regions = await reconcileAws(pipeline, ami, baked, b.tools.ec2(), {
      sourceAmi,
      revision: run.revision,
      signal: run.signal,
      onLine: run.say,
    });
    return { regions, action: "baked", images: imagesOf(b.built), built: b.built };
  },
};

/** Where a staged bake renders its release stage: a folder inside the host stage's. */
const RELEASE_FOLDER = "release";

/** The folder Packer runs in on aws (the AMI's, or a stage's); the goss spec travels in it to run on the instance, last. */
async function awsFolder(
  pipeline: Pipeline,
  ami: AmiNode,
  dir: string,
  packer: PackerTool,
  extra: { sourceAmi?: string; revision?: string },
  stage?: Stage,
): Promise<RenderedFolder> {
  const folder = await renderFolder(pipeline, ami, dir, packer, extra, awsTemplate, stage && { stage });
  if (ami.test && stage?.name !== "host") {
    mkdirSync(path.join(dir, GOSS_FOLDER), { recursive: true });
    copyFileSync(ami.test.spec, path.join(dir, GOSS_FOLDER, "goss.yaml"));
    if (ami.test.vars) copyFileSync(ami.test.vars, path.join(dir, GOSS_FOLDER, "vars.yaml"));
  }
  return folder;
}

/** The AMI Packer made in the AMI's region. */
function bakedIn(ami: AmiNode, ids: string[]): string {
  const baked = amiIdsByRegion(ids.join(","))[ami.region];
  if (!baked)
    throw new BuildFailedError(
      ami.name,
      `${ami.name}: packer reported no AMI in ${ami.region} (artifacts: ${ids.join(", ")})`,
    );
  return baked;
}

/**
 * The host stage's AMI in the AMI's region: the one tagged with its key, else baked by Packer from
 * the source and tagged. One bake per stage key across machines (a lease of its own in the account).
 */
async function awsHostStage(b: TargetBake, host: Stage, env: Record<string, string | undefined>): Promise<string> {
  const { pipeline, ami, run } = b;
  const ec2 = b.tools.ec2();
  const lease = await acquireLease(
    ec2,
    ami.region,
    leasePrefix(pipeline.config.project, host.node, host.key.slice(0, KEY_TAG_LENGTH)),
    { signal: run.signal, onWait: run.say, onLost: run.say },
  );
  try {
    const found = run.force ? undefined : await ec2.findAmiByKey(ami.region, host.key);
    if (found) {
      run.say(`stage host: ${found.imageId} in ${ami.region} has this key: reused`);
      return found.imageId;
    }
    const id = bakedIn(
      ami,
      await exportAndRunPacker(b, env, { name: host.name, folder: b.folder, images: host.images }),
    );
    await ec2.tagImage(
      ami.region,
      id,
      amiTags({
        config: pipeline.config,
        ami,
        key: run.key,
        imageKeys: knownKeys(pipeline),
        sourceAmi: run.sourceAmi,
        revision: run.revision,
        stage: host,
      }),
    );
    run.say(`stage host: ${id} in ${ami.region}`);
    return id;
  } finally {
    await lease.release();
  }
}

/**
 * Makes the AMI whole on EC2: its tags in the home region, a tagged copy in every copy_to region
 * (found by key, else CopyImage and wait), and launch permission for share_with accounts.
 */
export async function reconcileAws(
  pipeline: Pipeline,
  ami: AmiNode,
  home: string,
  ec2: Ec2Tool,
  options: Reconciling,
): Promise<Record<string, string>> {
  const key = pipeline.keys.get(ami.name)!.key!;
  const imageKeys = knownKeys(pipeline);
  const tags = amiTags({
    config: pipeline.config,
    ami,
    key,
    imageKeys,
    sourceAmi: options.sourceAmi,
    revision: options.revision,
  });
  const regions: Record<string, string> = { [ami.region]: home };
  await ec2.tagImage(ami.region, home, tags);
  for (const region of ami.copyTo) {
    // A copy carries its tags from creation; one an earlier run started under this name (before
    // copies were tagged at creation) is found by name. Either may still be pending: wait for it.
    const name = `${pipeline.config.project}-${ami.name}-${key.slice(0, KEY_TAG_LENGTH)}`;
    const existing = (await ec2.findAmiByKey(region, key)) ?? (await ec2.findOwnedByName(region, name));
    let copy = existing?.imageId;
    if (!copy) {
      options.onLine(`copying ${home} to ${region}`);
      copy = await ec2.copyImage({ region: ami.region, imageId: home }, region, name, tags);
    }
    await ec2.waitAvailable(region, copy, 60 * 60_000, options.signal);
    if (!existing || existing.tags["bake:key"] !== key) await ec2.tagImage(region, copy, tags);
    regions[region] = copy;
  }
  if (ami.shareWith.length) {
    for (const [region, id] of Object.entries(regions)) {
      const added = await ec2.shareImage(region, id, ami.shareWith);
      if (added.length) options.onLine(`shared ${id} in ${region} with ${added.join(", ")}`);
    }
  }
  return regions;
}

const X509_REQUIRED = "an instance-store AMI: paths of the x509 certificate and key";

/**
 * Where Packer reaches EC2 and the instance (README: Running bake ami in CI against AWS), where an
 * instance-store bake finds the EC2 AMI tools and its x509 pair, and the goss binary it uploads.
 */
function awsVariables(ami: AmiNode): { sensitive: PackerVariable[]; machine: PackerVariable[] } {
  const instanceStore = ami.builder === "instance-store";
  return {
    sensitive: [
      ...(instanceStore
        ? [
            { name: "x509_cert_path", env: "BAKE_X509_CERT", required: X509_REQUIRED },
            { name: "x509_key_path", env: "BAKE_X509_KEY", required: X509_REQUIRED },
          ]
        : []),
      ...(ami.test ? [{ name: "goss_binary", env: GOSS_ENV }] : []),
    ],
    machine: [
      { name: "ec2_endpoint", env: AWS_CONNECTION_ENV.ec2Endpoint },
      { name: "ssh_host", env: AWS_CONNECTION_ENV.sshHost },
      { name: "ssh_port", env: AWS_CONNECTION_ENV.sshPort },
      ...(instanceStore
        ? [
            { name: "ec2_ami_tools_url", env: EC2_AMI_TOOLS_ENV.url },
            { name: "ec2_ami_tools_sha256", env: EC2_AMI_TOOLS_ENV.sha256 },
          ]
        : []),
    ],
  };
}

/**
 * The aws target's part of the template: Packer's amazon builders launch an instance from the
 * source AMI; the AMI's test runs on it last, before the snapshot (a failure registers no AMI).
 */
export const awsTemplate: TargetTemplatePart = (input, keyTag) => {
  const { config, ami, stage } = input;
  return {
    sourcePartial: ami.builder === "instance-store" ? "amazon-instance" : "amazon-ebs",
    sourceRef: ami.builder === "instance-store" ? "source.amazon-instance.ami" : "source.amazon-ebs.ami",
    ...awsVariables(ami),
    instanceStore: ami.builder === "instance-store",
    booted: false,
    ansibleUser: "admin",
    ...(ami.test && stage?.name !== "host"
      ? {
          gossTest: {
            dir: GOSS_DIR,
            binary: `${GOSS_DIR}/goss`,
            command: gossCommand(config.project, ami.name, ami.test),
          },
        }
      : {}),
    region: ami.region,
    instanceType: ami.instanceType,
    sshUsername: "admin",
    amiNameValue: `${config.project}-${ami.name}-${keyTag}-{{timestamp}}`,
    sourceAmi: input.sourceAmi,
    sourceOwners: ami.source.owners,
    sourceName: ami.source.name,
    bundle: ami.bundle,
    tags: amiTags(input),
  };
};
