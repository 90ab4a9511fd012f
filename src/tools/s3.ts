/** The only module that talks to S3 (@aws-sdk/client-s3, loaded on first use): the instance-store bundle bucket. */
import { createRequire } from "node:module";
import { awsRetry } from "./ec2.js";

export type BucketState = "ok" | "missing" | "forbidden";

/** Whether the bucket exists and this account may use it (HeadBucket). */
export async function bucketState(bucket: string, region: string, timeoutMs = 5000): Promise<BucketState> {
  // require(), not import(): the bundled CLI runs in a vm.Script, where import() has no loader.
  const sdk = createRequire(import.meta.url)("@aws-sdk/client-s3") as typeof import("@aws-sdk/client-s3");
  // Path-style addressing: a local or private S3-compatible endpoint has no per-bucket host names.
  const s3 = new sdk.S3Client({ region, forcePathStyle: true, ...awsRetry() });
  try {
    await s3.send(new sdk.HeadBucketCommand({ Bucket: bucket }), { abortSignal: AbortSignal.timeout(timeoutMs) });
    return "ok";
  } catch (e: any) {
    const status = e?.$metadata?.httpStatusCode;
    if (status === 404 || e?.name === "NotFound" || e?.name === "NoSuchBucket") return "missing";
    if (status === 403) return "forbidden";
    throw e;
  }
}
