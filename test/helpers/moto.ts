/** moto as the EC2 endpoint: credentials for it, and a client to arrange AMIs. */
import { EC2Client, RegisterImageCommand, CreateTagsCommand } from "@aws-sdk/client-ec2";

process.env.AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED ??= "true";

export const MOTO = "http://localhost:5001";

export const motoEnv = {
  AWS_ENDPOINT_URL: MOTO,
  AWS_ACCESS_KEY_ID: "testing",
  AWS_SECRET_ACCESS_KEY: "testing",
  AWS_REGION: "us-east-1",
  AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED: "true",
};

export function motoEc2(region = "us-east-1"): EC2Client {
  return new EC2Client({ region, endpoint: MOTO, credentials: { accessKeyId: "testing", secretAccessKey: "testing" } });
}

export async function resetMoto(): Promise<void> {
  const res = await fetch(`${MOTO}/moto-api/reset`, { method: "POST" });
  if (!res.ok) throw new Error(`moto reset: HTTP ${res.status}`);
}

export async function registerAmi(name: string, tags: Record<string, string> = {}, region = "us-east-1"): Promise<string> {
  const ec2 = motoEc2(region);
  const { ImageId } = await ec2.send(new RegisterImageCommand({ Name: name, RootDeviceName: "/dev/xvda", Architecture: "x86_64", BlockDeviceMappings: [{ DeviceName: "/dev/xvda", Ebs: { VolumeSize: 8 } }] }));
  if (Object.keys(tags).length) await ec2.send(new CreateTagsCommand({ Resources: [ImageId!], Tags: Object.entries(tags).map(([Key, Value]) => ({ Key, Value })) }));
  return ImageId!;
}
