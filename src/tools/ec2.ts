/**
 * The only door to EC2 (@aws-sdk/client-ec2, loaded on first use): the verbs bake uses, behind one
 * narrow interface. The verbs live by concern beside it (ec2-images.ts, ec2-key-pairs.ts,
 * ec2-usage.ts) over one shared connection (ec2-client.ts).
 */
import { connectEc2Client } from "./ec2-client.js";
import { amiVerbs, type AmiVerbs } from "./ec2-images.js";
import { keyPairVerbs, type KeyPairVerbs } from "./ec2-key-pairs.js";
import { usageVerbs, type UsageVerbs } from "./ec2-usage.js";

export { NoCredentialsError, awsRetry, ec2Endpoint, type AmiRecord } from "./ec2-client.js";
export { bakedName, copyToken, newest, type AmiVerbs, type BakedAmi } from "./ec2-images.js";
export type { KeyPairVerbs } from "./ec2-key-pairs.js";
export type { UsageVerbs } from "./ec2-usage.js";

/** The door to EC2: the account's own verbs and those of AMIs, key pairs and usage, declared beside their code. */
export interface Ec2Tool extends AmiVerbs, KeyPairVerbs, UsageVerbs {
  /** Resolves credentials from the SDK's default chain; throws NoCredentialsError when there are none. */
  checkCredentials(): Promise<void>;
  /** One cheap call (DescribeRegions) that proves endpoint and credentials work; returns the region count. */
  ping(region: string, timeoutMs: number): Promise<number>;
  /** Region names the endpoint knows. */
  regions(region: string): Promise<string[]>;
}

export function connectEc2(): Ec2Tool {
  const connection = connectEc2Client();
  const { client, translate } = connection;
  return {
    async checkCredentials() {
      const { ec2 } = await client(process.env.AWS_REGION || "us-east-1");
      await ec2.config.credentials().catch(translate);
    },
    async ping(region, timeoutMs) {
      const { sdk, ec2 } = await client(region);
      const out = await ec2
        .send(new sdk.DescribeRegionsCommand({}), { abortSignal: AbortSignal.timeout(timeoutMs) })
        .catch(translate);
      return (out.Regions ?? []).length;
    },
    async regions(region) {
      const { sdk, ec2 } = await client(region);
      const out = await ec2.send(new sdk.DescribeRegionsCommand({ AllRegions: true })).catch(translate);
      return (out.Regions ?? []).map((r) => r.RegionName ?? "").filter(Boolean);
    },
    ...amiVerbs(connection),
    ...keyPairVerbs(connection),
    ...usageVerbs(connection),
  };
}
