/** EC2's AMIs and their snapshots: find, copy, wait, tag, share, list what bake made, remove. */
import { createHash } from "node:crypto";
import { BakeError } from "../errors.js";
import { catching, tagList, tagRecord, type AmiRecord, type Ec2Connection } from "./ec2-client.js";

/** An AMI bake made, with what retention needs to know. */
export interface BakedAmi extends AmiRecord {
  region: string;
  snapshots: string[];
  /** For an AMI found by its name only (no bake tags): the key prefix the name carries. */
  keyInName?: string;
}

/** The AMI verbs (part of Ec2Tool). */
export interface AmiVerbs {
  /** The newest image matching owners and a name pattern, or undefined. */
  findSourceAmi(region: string, owners: string[], name: string): Promise<AmiRecord | undefined>;
  /** The AMI tagged bake:key=<key> in that region, or undefined. */
  findAmiByKey(region: string, key: string): Promise<AmiRecord | undefined>;
  /**
   * Copies an AMI into another region, tagged as it is created, under a client token derived from
   * the key (a retried or repeated copy returns the same image); returns the new id (not yet available).
   */
  copyImage(
    from: { region: string; imageId: string },
    toRegion: string,
    name: string,
    tags: Record<string, string>,
  ): Promise<string>;
  /** The AMI this account owns with exactly that name (a copy whose tags may not be applied yet). */
  findOwnedByName(region: string, name: string): Promise<AmiRecord | undefined>;
  /** Waits until the AMI is available; throws when it fails or the time runs out. */
  waitAvailable(region: string, imageId: string, timeoutMs: number, signal?: AbortSignal): Promise<void>;
  tagImage(region: string, imageId: string, tags: Record<string, string>): Promise<void>;
  /** Adds launch permission for accounts that lack it; returns the accounts it added. */
  shareImage(region: string, imageId: string, accounts: string[]): Promise<string[]>;
  /** Accounts (or "all") that may launch the AMI besides its owner. */
  sharedWith(region: string, imageId: string): Promise<string[]>;
  /** AMIs owned by this account and tagged with the project and AMI name. */
  listBakedAmis(region: string, project: string, ami: string): Promise<BakedAmi[]>;
  deregister(region: string, imageId: string): Promise<void>;
  deleteSnapshot(region: string, snapshotId: string): Promise<void>;
  /** Snapshots tagged with the project and AMI name that no image of this account uses (left by a prune that stopped halfway). */
  orphanedSnapshots(
    region: string,
    project: string,
    ami: string,
  ): Promise<{ snapshotId: string; created: string; key: string }[]>;
}

export function amiVerbs(connection: Ec2Connection): AmiVerbs {
  const { client, translate, describe } = connection;
  return {
    async findSourceAmi(region, owners, name) {
      return newest(
        await describe(region, {
          Owners: owners,
          Filters: [
            { Name: "name", Values: [name] },
            { Name: "state", Values: ["available"] },
          ],
        }),
      );
    },
    async findAmiByKey(region, key) {
      return newest(await describe(region, { Owners: ["self"], Filters: [{ Name: "tag:bake:key", Values: [key] }] }));
    },
    async copyImage(from, toRegion, name, tags) {
      const { sdk, ec2 } = await client(toRegion);
      const out = await ec2
        .send(
          new sdk.CopyImageCommand({
            SourceRegion: from.region,
            SourceImageId: from.imageId,
            Name: name,
            ClientToken: copyToken(from.imageId, toRegion, name),
            TagSpecifications: (["image", "snapshot"] as const).map((ResourceType) => ({
              ResourceType,
              Tags: tagList(tags),
            })),
          }),
        )
        .catch(translate);
      return out.ImageId as string;
    },
    async findOwnedByName(region, name) {
      return newest(await describe(region, { Owners: ["self"], Filters: [{ Name: "name", Values: [name] }] }));
    },
    async waitAvailable(region, imageId, timeoutMs, signal) {
      const deadline = Date.now() + timeoutMs;
      for (;;) {
        const { sdk, ec2 } = await client(region);
        const state = (await ec2.send(new sdk.DescribeImagesCommand({ ImageIds: [imageId] })).catch(translate))
          .Images?.[0]?.State;
        if (state === "available") return;
        if (state === "failed" || state === "invalid" || state === "error")
          throw new BakeError(`${imageId} in ${region} is ${state}`);
        if (Date.now() > deadline)
          throw new BakeError(
            `${imageId} in ${region} not available after ${Math.round(timeoutMs / 1000)}s (state ${state ?? "unknown"})`,
          );
        if (signal?.aborted) throw signal.reason;
        await new Promise((r) => setTimeout(r, Number(process.env.BAKE_EC2_POLL_MS ?? 5000)));
      }
    },
    async tagImage(region, imageId, tags) {
      const { sdk, ec2 } = await client(region);
      await ec2.send(new sdk.CreateTagsCommand({ Resources: [imageId], Tags: tagList(tags) })).catch(translate);
    },
    async shareImage(region, imageId, accounts) {
      const { sdk, ec2 } = await client(region);
      const current = await ec2
        .send(new sdk.DescribeImageAttributeCommand({ ImageId: imageId, Attribute: "launchPermission" }))
        .catch(translate);
      const have = new Set((current.LaunchPermissions ?? []).map((p) => p.UserId));
      const missing = accounts.filter((a) => !have.has(a));
      if (missing.length) {
        await ec2
          .send(
            new sdk.ModifyImageAttributeCommand({
              ImageId: imageId,
              LaunchPermission: { Add: missing.map((UserId) => ({ UserId })) },
            }),
          )
          .catch(translate);
      }
      return missing;
    },
    async sharedWith(region, imageId) {
      const { sdk, ec2 } = await client(region);
      const out = await ec2
        .send(new sdk.DescribeImageAttributeCommand({ ImageId: imageId, Attribute: "launchPermission" }))
        .catch(translate);
      return (out.LaunchPermissions ?? [])
        .map((p) => p.UserId ?? p.Group ?? p.OrganizationArn ?? p.OrganizationalUnitArn)
        .filter((who): who is string => Boolean(who));
    },
    ...retentionVerbs(connection),
  };
}

/** What retention reads and removes: the AMIs bake made, their snapshots, and snapshots no image uses. */
function retentionVerbs({
  client,
  translate,
}: Ec2Connection): Pick<AmiVerbs, "listBakedAmis" | "deregister" | "deleteSnapshot" | "orphanedSnapshots"> {
  return {
    async listBakedAmis(region, project, ami) {
      const { sdk, ec2 } = await client(region);
      const baked = new Map<string, BakedAmi>();
      // By bake's tags, and by the names bake gives (a copy whose tags were never applied).
      const queries = [
        {
          Owners: ["self"],
          Filters: [
            { Name: "tag:bake:project", Values: [project] },
            { Name: "tag:bake:ami", Values: [ami] },
          ],
        },
        { Owners: ["self"], Filters: [{ Name: "name", Values: [`${project}-${ami}-*`] }] },
      ];
      for (const [n, query] of queries.entries()) {
        for await (const page of catching(sdk.paginateDescribeImages({ client: ec2 }, query), translate)) {
          for (const i of page.Images ?? []) {
            const tags = tagRecord(i.Tags);
            if (n === 1 && (tags["bake:project"] !== undefined || !bakedName(project, ami, i.Name ?? ""))) continue;
            baked.set(i.ImageId!, {
              imageId: i.ImageId!,
              name: i.Name ?? "",
              created: i.CreationDate ?? "",
              tags,
              region,
              snapshots: (i.BlockDeviceMappings ?? [])
                .map((b) => b.Ebs?.SnapshotId)
                .filter((id): id is string => Boolean(id)),
              ...(n === 1 ? { keyInName: bakedName(project, ami, i.Name ?? "") } : {}),
            });
          }
        }
      }
      return [...baked.values()];
    },
    async deregister(region, imageId) {
      const { sdk, ec2 } = await client(region);
      await ec2.send(new sdk.DeregisterImageCommand({ ImageId: imageId })).catch(translate);
    },
    async deleteSnapshot(region, snapshotId) {
      const { sdk, ec2 } = await client(region);
      await ec2.send(new sdk.DeleteSnapshotCommand({ SnapshotId: snapshotId })).catch(translate);
    },
    async orphanedSnapshots(region, project, ami) {
      const { sdk, ec2 } = await client(region);
      const used = new Set<string>();
      for await (const page of catching(sdk.paginateDescribeImages({ client: ec2 }, { Owners: ["self"] }), translate)) {
        for (const i of page.Images ?? [])
          for (const b of i.BlockDeviceMappings ?? []) if (b.Ebs?.SnapshotId) used.add(b.Ebs.SnapshotId);
      }
      const orphans: { snapshotId: string; created: string; key: string }[] = [];
      const snapshots = sdk.paginateDescribeSnapshots(
        { client: ec2 },
        {
          OwnerIds: ["self"],
          Filters: [
            { Name: "tag:bake:project", Values: [project] },
            { Name: "tag:bake:ami", Values: [ami] },
          ],
        },
      );
      for await (const page of catching(snapshots, translate)) {
        for (const sn of page.Snapshots ?? []) {
          if (!sn.SnapshotId || used.has(sn.SnapshotId)) continue;
          orphans.push({
            snapshotId: sn.SnapshotId,
            created: sn.StartTime ? new Date(sn.StartTime).toISOString() : "",
            key: tagRecord(sn.Tags)["bake:key"] ?? "",
          });
        }
      }
      return orphans;
    },
  };
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

export function newest(images: AmiRecord[]): AmiRecord | undefined {
  return [...images].sort((a, b) =>
    a.created < b.created ? 1 : a.created > b.created ? -1 : a.imageId < b.imageId ? 1 : -1,
  )[0];
}
