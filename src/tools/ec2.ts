/** The only module that talks to EC2 (@aws-sdk/client-ec2, loaded on first use). */
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
  /** Copies an AMI into another region; returns the new id (not yet available). */
  copyImage(from: { region: string; imageId: string }, toRegion: string, name: string): Promise<string>;
  /** Waits until the AMI is available; throws when it fails or the time runs out. */
  waitAvailable(region: string, imageId: string, timeoutMs: number, signal?: AbortSignal): Promise<void>;
  tagImage(region: string, imageId: string, tags: Record<string, string>): Promise<void>;
  /** Adds launch permission for accounts that lack it; returns the accounts it added. */
  shareImage(region: string, imageId: string, accounts: string[]): Promise<string[]>;
  /** AMIs owned by this account and tagged with the project and AMI name. */
  listBakedAmis(region: string, project: string, ami: string): Promise<BakedAmi[]>;
  /** Image ids used by instances (not terminated) and by any launch template version. */
  imagesInUse(region: string): Promise<Set<string>>;
  deregister(region: string, imageId: string): Promise<void>;
  deleteSnapshot(region: string, snapshotId: string): Promise<void>;
}

/** An AMI bake made, with what retention needs to know. */
export interface BakedAmi extends AmiRecord {
  region: string;
  snapshots: string[];
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
  const client = (region: string) => {
    // require(), not import(): the bundled CLI runs in a vm.Script, where import() has no loader.
    if (!clients.has(region)) clients.set(region, Promise.resolve().then(() => {
      const sdk = createRequire(import.meta.url)("@aws-sdk/client-ec2") as typeof import("@aws-sdk/client-ec2");
      return { sdk, ec2: new sdk.EC2Client({ region, maxAttempts: 2 }) };
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
    async copyImage(from, toRegion, name) {
      const { sdk, ec2 } = await client(toRegion);
      const out = await ec2.send(new sdk.CopyImageCommand({ SourceRegion: from.region, SourceImageId: from.imageId, Name: name })).catch(translate);
      return out.ImageId as string;
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
      const out = await ec2.send(new sdk.DescribeImagesCommand({ Owners: ["self"], Filters: [{ Name: "tag:bake:project", Values: [project] }, { Name: "tag:bake:ami", Values: [ami] }] })).catch(translate);
      return (out.Images ?? []).map((i: any) => ({
        imageId: i.ImageId,
        name: i.Name ?? "",
        created: i.CreationDate ?? "",
        tags: Object.fromEntries((i.Tags ?? []).map((t: any) => [t.Key, t.Value])),
        region,
        snapshots: (i.BlockDeviceMappings ?? []).map((b: any) => b.Ebs?.SnapshotId).filter(Boolean),
      }));
    },
    async imagesInUse(region) {
      const { sdk, ec2 } = await client(region);
      const used = new Set<string>();
      let token: string | undefined;
      do {
        const out = await ec2.send(new sdk.DescribeInstancesCommand({ NextToken: token, Filters: [{ Name: "instance-state-name", Values: ["pending", "running", "stopping", "stopped", "shutting-down"] }] })).catch(translate);
        for (const r of out.Reservations ?? []) for (const i of r.Instances ?? []) if (i.ImageId) used.add(i.ImageId);
        token = out.NextToken;
      } while (token);
      const templates = await ec2.send(new sdk.DescribeLaunchTemplatesCommand({})).catch(translate);
      for (const t of templates.LaunchTemplates ?? []) {
        const versions = await ec2.send(new sdk.DescribeLaunchTemplateVersionsCommand({ LaunchTemplateId: t.LaunchTemplateId })).catch(translate);
        for (const v of versions.LaunchTemplateVersions ?? []) if (v.LaunchTemplateData?.ImageId) used.add(v.LaunchTemplateData.ImageId);
      }
      return used;
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

export function newest(images: AmiRecord[]): AmiRecord | undefined {
  return [...images].sort((a, b) => (a.created < b.created ? 1 : a.created > b.created ? -1 : a.imageId < b.imageId ? 1 : -1))[0];
}
