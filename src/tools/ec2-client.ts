/**
 * The connection every EC2 verb shares: one SDK client per region (@aws-sdk/client-ec2, loaded on
 * first use), the SDK's errors translated (no credentials → NoCredentialsError), retries.
 */
import { createRequire } from "node:module";
import { BakeError } from "../errors.js";
import type { EC2Client, DescribeImagesCommandInput, Tag } from "@aws-sdk/client-ec2";

export type Ec2Sdk = typeof import("@aws-sdk/client-ec2");

export interface AmiRecord {
  imageId: string;
  name: string;
  created: string;
  tags: Record<string, string>;
}

export class NoCredentialsError extends BakeError {}

export function ec2Endpoint(env = process.env): string | undefined {
  return env.AWS_ENDPOINT_URL_EC2 || env.AWS_ENDPOINT_URL || undefined;
}

export interface Ec2Connection {
  client(region: string): Promise<{ sdk: Ec2Sdk; ec2: EC2Client }>;
  /** Loads another AWS SDK package (Auto Scaling, SSM) the way the EC2 one is loaded. */
  load<T>(pkg: string): T;
  /** Throws the SDK's error, as NoCredentialsError when it says there are no credentials. */
  translate(e: unknown): never;
  /** DescribeImages, each image as bake records it. */
  describe(region: string, input: DescribeImagesCommandInput): Promise<AmiRecord[]>;
}

export function connectEc2Client(): Ec2Connection {
  // bake supports Node 20 (PRODUCT.md); the SDK's notice about its own future support policy
  // would otherwise land in every command's stderr.
  process.env.AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED ??= "true";
  const clients = new Map<string, Promise<{ sdk: Ec2Sdk; ec2: EC2Client }>>();
  // require(), not import(): the bundled CLI runs in a vm.Script, where import() has no loader.
  const load = <T>(pkg: string): T => createRequire(import.meta.url)(pkg) as T;
  const client = (region: string) => {
    if (!clients.has(region))
      clients.set(
        region,
        Promise.resolve().then(() => {
          const sdk = load<Ec2Sdk>("@aws-sdk/client-ec2");
          return { sdk, ec2: new sdk.EC2Client({ region, ...awsRetry() }) };
        }),
      );
    return clients.get(region)!;
  };
  const translate = (e: unknown): never => {
    const err = e as { name?: string; message?: string } | undefined;
    if (err?.name === "CredentialsProviderError" || /Could not load credentials/i.test(err?.message ?? "")) {
      throw new NoCredentialsError(
        "no AWS credentials found (AWS_PROFILE, AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, or an instance role)",
        { cause: e },
      );
    }
    throw e;
  };
  const describe = async (region: string, input: DescribeImagesCommandInput): Promise<AmiRecord[]> => {
    const { sdk, ec2 } = await client(region);
    const out = await ec2.send(new sdk.DescribeImagesCommand(input)).catch(translate);
    return (out.Images ?? []).map((i) => ({
      imageId: i.ImageId!,
      name: i.Name ?? "",
      created: i.CreationDate ?? "",
      tags: tagRecord(i.Tags),
    }));
  };
  return { client, load, translate, describe };
}

/** Tags as EC2 lists them, as a record. */
export function tagRecord(tags: Tag[] | undefined): Record<string, string> {
  return Object.fromEntries((tags ?? []).map((t) => [t.Key ?? "", t.Value ?? ""]));
}

/** A record of tags as EC2 takes them. */
export function tagList(tags: Record<string, string>): Tag[] {
  return Object.entries(tags).map(([Key, Value]) => ({ Key, Value }));
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

/** The pages of a paginator, its errors translated. */
export async function* catching<T>(pages: AsyncIterable<T>, translate: (e: unknown) => never): AsyncIterable<T> {
  try {
    yield* pages;
  } catch (e) {
    translate(e);
  }
}
