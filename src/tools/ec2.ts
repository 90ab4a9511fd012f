/** The only module that talks to EC2 (@aws-sdk/client-ec2, loaded on first use). */
import { createHash } from "node:crypto";
import { createRequire } from "node:module";
import { BakeError } from "../errors.js";

export interface AmiRecord {
  imageId: string;
  name: string;
  created: string;
  tags: Record<string, string>;
}

export interface Ec2Tool {
  /** Resolves credentials from the SDK's default chain; throws NoCredentialsError when there are none. */
  checkCredentials(): Promise<void>;
  /** One cheap call (DescribeRegions) that proves endpoint and credentials work; returns the region count. */
  ping(region: string, timeoutMs: number): Promise<number>;
  /** The newest image matching owners and a name pattern, or undefined. */
  findSourceAmi(region: string, owners: string[], name: string): Promise<AmiRecord | undefined>;
  /** The AMI tagged bake:key=<key> in that region, or undefined. */
  findAmiByKey(region: string, key: string): Promise<AmiRecord | undefined>;
  /** Region names the endpoint knows. */
  regions(region: string): Promise<string[]>;
  /**
   * Copies an AMI into another region, tagged as it is created, under a client token derived from
   * the key (a retried or repeated copy returns the same image); returns the new id (not yet available).
   */
  copyImage(from: { region: string; imageId: string }, toRegion: string, name: string, tags: Record<string, string>): Promise<string>;
  /** The AMI this account owns with exactly that name (a copy whose tags may not be applied yet). */
  findOwnedByName(region: string, name: string): Promise<AmiRecord | undefined>;
  /** Waits until the AMI is available; throws when it fails or the time runs out. */
  waitAvailable(region: string, imageId: string, timeoutMs: number, signal?: AbortSignal): Promise<void>;
  tagImage(region: string, imageId: string, tags: Record<string, string>): Promise<void>;
  /** Adds launch permission for accounts that lack it; returns the accounts it added. */
  shareImage(region: string, imageId: string, accounts: string[]): Promise<string[]>;
  /** AMIs owned by this account and tagged with the project and AMI name. */
  listBakedAmis(region: string, project: string, ami: string): Promise<BakedAmi[]>;
  /**
   * Image ids something in the region can launch, each with what uses it: instances (not
   * terminated), every launch template version (a `resolve:ssm:` image id resolved), launch
   * configurations (Auto Scaling), and SSM parameters of data type aws:ec2:image.
   */
  imagesInUse(region: string): Promise<Map<string, string>>;
  /** Accounts (or "all") that may launch the AMI besides its owner. */
  sharedWith(region: string, imageId: string): Promise<string[]>;
  deregister(region: string, imageId: string): Promise<void>;
  deleteSnapshot(region: string, snapshotId: string): Promise<void>;
  /** Key pairs whose name starts with the prefix (the AWS lease's generations), with their tags. */
  listKeyPairs(region: string, prefix: string): Promise<{ name: string; id: string; tags: Record<string, string> }[]>;
  /** Creates a key pair with tags, atomically by name: false when one with that name exists. */
  createKeyPair(region: string, name: string, tags: Record<string, string>): Promise<boolean>;
  tagKeyPair(region: string, id: string, tags: Record<string, string>): Promise<void>;
  deleteKeyPair(region: string, name: string): Promise<void>;
  /** Snapshots tagged with the project and AMI name that no image of this account uses (left by a prune that stopped halfway). */
  orphanedSnapshots(region: string, project: string, ami: string): Promise<{ snapshotId: string; created: string; key: string }[]>;
}

/** An AMI bake made, with what retention needs to know. */
export interface BakedAmi extends AmiRecord {
  region: string;
  snapshots: string[];
  /** For an AMI found by its name only (no bake tags): the key prefix the name carries. */
  keyInName?: string;
}

export class NoCredentialsError extends BakeError {}

export function ec2Endpoint(env = process.env): string | undefined {
  return env.AWS_ENDPOINT_URL_EC2 || env.AWS_ENDPOINT_URL || undefined;
}

export function connectEc2(): Ec2Tool {
  // bake supports Node 20 (PRODUCT.md); the SDK's notice about its own future support policy
  // would otherwise land in every command's stderr.
  process.env.AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED ??= "true";
  const clients = new Map<string, Promise<any>>();
  // require(), not import(): the bundled CLI runs in a vm.Script, where import() has no loader.
  const load = (pkg: string) => createRequire(import.meta.url)(pkg);
  const client = (region: string) => {
    if (!clients.has(region)) clients.set(region, Promise.resolve().then(() => {
      const sdk = load("@aws-sdk/client-ec2") as typeof import("@aws-sdk/client-ec2");
      return { sdk, ec2: new sdk.EC2Client({ region, ...awsRetry() }) };
    }));
    return clients.get(region)!;
  };
  const translate = (e: any): never => {
    if (e?.name === "CredentialsProviderError" || /Could not load credentials/i.test(e?.message ?? "")) {
      throw new NoCredentialsError("no AWS credentials found (AWS_PROFILE, AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, or an instance role)", { cause: e });
    }
    throw e;
  };
  const describe = async (region: string, input: any): Promise<AmiRecord[]> => {
    const { sdk, ec2 } = await client(region);
    const out = await ec2.send(new sdk.DescribeImagesCommand(input)).catch(translate);
    return (out.Images ?? []).map((i: any) => ({
      imageId: i.ImageId,
      name: i.Name ?? "",
      created: i.CreationDate ?? "",
      tags: Object.fromEntries((i.Tags ?? []).map((t: any) => [t.Key, t.Value])),
    }));
  };
  return {
    async checkCredentials() {
      const { ec2 } = await client(process.env.AWS_REGION || "us-east-1");
      await ec2.config.credentials().catch(translate);
    },
    async ping(region, timeoutMs) {
      const { sdk, ec2 } = await client(region);
      const out = await ec2.send(new sdk.DescribeRegionsCommand({}), { abortSignal: AbortSignal.timeout(timeoutMs) }).catch(translate);
      return (out.Regions ?? []).length;
    },
    async findSourceAmi(region, owners, name) {
      const images = await describe(region, { Owners: owners, Filters: [{ Name: "name", Values: [name] }, { Name: "state", Values: ["available"] }] });
      return newest(images);
    },
    async findAmiByKey(region, key) {
      return newest(await describe(region, { Owners: ["self"], Filters: [{ Name: "tag:bake:key", Values: [key] }] }));
    },
    async regions(region) {
      const { sdk, ec2 } = await client(region);
      const out = await ec2.send(new sdk.DescribeRegionsCommand({ AllRegions: true })).catch(translate);
      return (out.Regions ?? []).map((r: any) => r.RegionName as string);
    },
    async copyImage(from, toRegion, name, tags) {
      const { sdk, ec2 } = await client(toRegion);
      const out = await ec2.send(new sdk.CopyImageCommand({
        SourceRegion: from.region,
        SourceImageId: from.imageId,
        Name: name,
        ClientToken: copyToken(from.imageId, toRegion, name),
        TagSpecifications: ["image", "snapshot"].map((ResourceType) => ({ ResourceType, Tags: Object.entries(tags).map(([Key, Value]) => ({ Key, Value })) })) as any,
      })).catch(translate);
      return out.ImageId as string;
    },
    async findOwnedByName(region, name) {
      return newest(await describe(region, { Owners: ["self"], Filters: [{ Name: "name", Values: [name] }] }));
    },
    async waitAvailable(region, imageId, timeoutMs, signal) {
      const deadline = Date.now() + timeoutMs;
      for (;;) {
        const { sdk, ec2 } = await client(region);
        const state = (await ec2.send(new sdk.DescribeImagesCommand({ ImageIds: [imageId] })).catch(translate)).Images?.[0]?.State;
        if (state === "available") return;
        if (state === "failed" || state === "invalid" || state === "error") throw new BakeError(`${imageId} in ${region} is ${state}`);
        if (Date.now() > deadline) throw new BakeError(`${imageId} in ${region} not available after ${Math.round(timeoutMs / 1000)}s (state ${state ?? "unknown"})`);
        if (signal?.aborted) throw signal.reason;
        await new Promise((r) => setTimeout(r, Number(process.env.BAKE_EC2_POLL_MS ?? 5000)));
      }
    },
    async tagImage(region, imageId, tags) {
      const { sdk, ec2 } = await client(region);
      await ec2.send(new sdk.CreateTagsCommand({ Resources: [imageId], Tags: Object.entries(tags).map(([Key, Value]) => ({ Key, Value })) })).catch(translate);
    },
    async listBakedAmis(region, project, ami) {
      const { sdk, ec2 } = await client(region);
      const baked = new Map<string, BakedAmi>();
      // By bake's tags, and by the names bake gives (a copy whose tags were never applied).
      const queries = [
        { Owners: ["self"], Filters: [{ Name: "tag:bake:project", Values: [project] }, { Name: "tag:bake:ami", Values: [ami] }] },
        { Owners: ["self"], Filters: [{ Name: "name", Values: [`${project}-${ami}-*`] }] },
      ];
      for (const [n, query] of queries.entries()) {
        for await (const page of catching(sdk.paginateDescribeImages({ client: ec2 }, query), translate)) {
          for (const i of page.Images ?? []) {
            const tags = Object.fromEntries((i.Tags ?? []).map((t: any) => [t.Key, t.Value])) as Record<string, string>;
            if (n === 1 && (tags["bake:project"] !== undefined || !bakedName(project, ami, i.Name ?? ""))) continue;
            baked.set(i.ImageId!, {
              imageId: i.ImageId!,
              name: i.Name ?? "",
              created: i.CreationDate ?? "",
              tags,
              region,
              snapshots: (i.BlockDeviceMappings ?? []).map((b: any) => b.Ebs?.SnapshotId).filter(Boolean),
              ...(n === 1 ? { keyInName: bakedName(project, ami, i.Name ?? "") } : {}),
            });
          }
        }
      }
      return [...baked.values()];
    },
    async imagesInUse(region) {
      const { sdk, ec2 } = await client(region);
      const used = new Map<string, string>();
      const use = (imageId: string | undefined, by: string) => {
        if (imageId && !used.has(imageId)) used.set(imageId, by);
      };
      const instances = sdk.paginateDescribeInstances({ client: ec2 }, { Filters: [{ Name: "instance-state-name", Values: ["pending", "running", "stopping", "stopped", "shutting-down"] }] });
      for await (const page of catching(instances, translate)) {
        for (const r of page.Reservations ?? []) for (const i of r.Instances ?? []) use(i.ImageId, `instance ${i.InstanceId}`);
      }
      const ssmNames = new Map<string, string>();
      for await (const page of catching(sdk.paginateDescribeLaunchTemplates({ client: ec2 }, {}), translate)) {
        for (const t of page.LaunchTemplates ?? []) {
          const versions = sdk.paginateDescribeLaunchTemplateVersions({ client: ec2 }, { LaunchTemplateId: t.LaunchTemplateId });
          for await (const vp of catching(versions, translate)) {
            for (const v of vp.LaunchTemplateVersions ?? []) {
              const imageId = v.LaunchTemplateData?.ImageId;
              const by = `launch template ${t.LaunchTemplateName ?? t.LaunchTemplateId} version ${v.VersionNumber}`;
              const ssm = imageId ? /^resolve:ssm:(.+)$/.exec(imageId) : null;
              if (ssm) ssmNames.set(ssm[1], by);
              else use(imageId, by);
            }
          }
        }
      }
      const autoscaling = load("@aws-sdk/client-auto-scaling") as typeof import("@aws-sdk/client-auto-scaling");
      const asg = new autoscaling.AutoScalingClient({ region, ...awsRetry() });
      for await (const page of catching(autoscaling.paginateDescribeLaunchConfigurations({ client: asg }, {}), translate)) {
        for (const c of page.LaunchConfigurations ?? []) use(c.ImageId, `launch configuration ${c.LaunchConfigurationName}`);
      }
      const ssmSdk = load("@aws-sdk/client-ssm") as typeof import("@aws-sdk/client-ssm");
      const ssm = new ssmSdk.SSMClient({ region, ...awsRetry() });
      // Filtered here rather than by a DataType filter, which some SSM-compatible endpoints refuse.
      for await (const page of catching(ssmSdk.paginateDescribeParameters({ client: ssm }, { MaxResults: 50 }), translate)) {
        for (const p of page.Parameters ?? []) if (p.Name && p.DataType === "aws:ec2:image" && !ssmNames.has(p.Name)) ssmNames.set(p.Name, `SSM parameter ${p.Name}`);
      }
      for (const [name, by] of ssmNames) {
        // A launch template's reference may carry a version or label: name:3, name:prod.
        const value = (await ssm.send(new ssmSdk.GetParameterCommand({ Name: name })).catch((e: any) => (e?.name === "ParameterNotFound" ? undefined : translate(e))))?.Parameter?.Value;
        use(value, by.startsWith("SSM") ? by : `${by} (resolve:ssm:${name})`);
      }
      return used;
    },
    async listKeyPairs(region, prefix) {
      const { sdk, ec2 } = await client(region);
      const out = await ec2.send(new sdk.DescribeKeyPairsCommand({})).catch(translate);
      return (out.KeyPairs ?? [])
        .filter((k: any) => k.KeyName?.startsWith(prefix))
        .map((k: any) => ({ name: k.KeyName, id: k.KeyPairId, tags: Object.fromEntries((k.Tags ?? []).map((t: any) => [t.Key, t.Value])) }));
    },
    async createKeyPair(region, name, tags) {
      const { sdk, ec2 } = await client(region);
      try {
        // The private key in the answer is dropped: the pair is a name the account holds, never used to log in.
        await ec2.send(new sdk.CreateKeyPairCommand({ KeyName: name, TagSpecifications: [{ ResourceType: "key-pair", Tags: Object.entries(tags).map(([Key, Value]) => ({ Key, Value })) }] }));
        return true;
      } catch (e: any) {
        if (e?.name === "InvalidKeyPair.Duplicate") return false;
        return translate(e);
      }
    },
    async tagKeyPair(region, id, tags) {
      const { sdk, ec2 } = await client(region);
      await ec2.send(new sdk.CreateTagsCommand({ Resources: [id], Tags: Object.entries(tags).map(([Key, Value]) => ({ Key, Value })) })).catch(translate);
    },
    async deleteKeyPair(region, name) {
      const { sdk, ec2 } = await client(region);
      await ec2.send(new sdk.DeleteKeyPairCommand({ KeyName: name })).catch(translate);
    },
    async orphanedSnapshots(region, project, ami) {
      const { sdk, ec2 } = await client(region);
      const used = new Set<string>();
      for await (const page of catching(sdk.paginateDescribeImages({ client: ec2 }, { Owners: ["self"] }), translate)) {
        for (const i of page.Images ?? []) for (const b of i.BlockDeviceMappings ?? []) if (b.Ebs?.SnapshotId) used.add(b.Ebs.SnapshotId);
      }
      const orphans: { snapshotId: string; created: string; key: string }[] = [];
      const snapshots = sdk.paginateDescribeSnapshots({ client: ec2 }, { OwnerIds: ["self"], Filters: [{ Name: "tag:bake:project", Values: [project] }, { Name: "tag:bake:ami", Values: [ami] }] });
      for await (const page of catching(snapshots, translate)) {
        for (const sn of page.Snapshots ?? []) {
          if (used.has(sn.SnapshotId)) continue;
          orphans.push({ snapshotId: sn.SnapshotId, created: sn.StartTime ? new Date(sn.StartTime).toISOString() : "", key: (sn.Tags ?? []).find((t: any) => t.Key === "bake:key")?.Value ?? "" });
        }
      }
      return orphans;
    },
    async sharedWith(region, imageId) {
      const { sdk, ec2 } = await client(region);
      const out = await ec2.send(new sdk.DescribeImageAttributeCommand({ ImageId: imageId, Attribute: "launchPermission" })).catch(translate);
      return (out.LaunchPermissions ?? []).map((p: any) => p.UserId ?? p.Group ?? p.OrganizationArn ?? p.OrganizationalUnitArn).filter(Boolean);
    },
    async deregister(region, imageId) {
      const { sdk, ec2 } = await client(region);
      await ec2.send(new sdk.DeregisterImageCommand({ ImageId: imageId })).catch(translate);
    },
    async deleteSnapshot(region, snapshotId) {
      const { sdk, ec2 } = await client(region);
      await ec2.send(new sdk.DeleteSnapshotCommand({ SnapshotId: snapshotId })).catch(translate);
    },
    async shareImage(region, imageId, accounts) {
      const { sdk, ec2 } = await client(region);
      const current = await ec2.send(new sdk.DescribeImageAttributeCommand({ ImageId: imageId, Attribute: "launchPermission" })).catch(translate);
      const have = new Set((current.LaunchPermissions ?? []).map((p: any) => p.UserId));
      const missing = accounts.filter((a) => !have.has(a));
      if (missing.length) {
        await ec2.send(new sdk.ModifyImageAttributeCommand({ ImageId: imageId, LaunchPermission: { Add: missing.map((UserId) => ({ UserId })) } })).catch(translate);
      }
      return missing;
    },
  };
}

/**
 * Retries as the SDK's adaptive mode does (exponential back-off with jitter, and client-side rate
 * limiting once the endpoint throttles), with room for a throttled account: 10 attempts unless
 * BAKE_AWS_MAX_ATTEMPTS says otherwise.
 */
export function awsRetry(env = process.env): { retryMode: "adaptive"; maxAttempts: number } {
  const n = Number(env.BAKE_AWS_MAX_ATTEMPTS);
  return { retryMode: "adaptive", maxAttempts: Number.isInteger(n) && n > 0 ? n : 10 };
}

/**
 * The key prefix in a name bake gave an AMI (`<project>-<ami>-<key12>`, Packer's adds
 * `-<timestamp>`), or undefined when the name is not one bake gives that AMI.
 */
export function bakedName(project: string, ami: string, name: string): string | undefined {
  const rest = name.startsWith(`${project}-${ami}-`) ? name.slice(project.length + ami.length + 2) : "";
  return /^([0-9a-f]{12})(-\d+)?$/.exec(rest)?.[1];
}

/** CopyImage's idempotency token (at most 64 characters): the same copy of the same AMI, the same token. */
export function copyToken(sourceImageId: string, toRegion: string, name: string): string {
  return createHash("sha256").update(`${sourceImageId}\0${toRegion}\0${name}`).digest("hex").slice(0, 64);
}

async function* catching(pages: AsyncIterable<any>, translate: (e: unknown) => never): AsyncIterable<any> {
  try {
    yield* pages;
  } catch (e) {
    translate(e);
  }
}

export function newest(images: AmiRecord[]): AmiRecord | undefined {
  return [...images].sort((a, b) => (a.created < b.created ? 1 : a.created > b.created ? -1 : a.imageId < b.imageId ? 1 : -1))[0];
}
