/**
 * moto as the EC2 endpoint: credentials for it, and a client to arrange AMIs. Each test file that
 * imports this runs a moto of its own, so that files which reset moto or count what an account
 * holds run beside each other (scripts/test.mjs runs files in lanes).
 */
import { spawn } from "node:child_process";
import { createServer } from "node:http";
import type { AddressInfo } from "node:net";
import { freePort } from "../../src/tools/ports.js";
import { EC2Client, RegisterImageCommand, CreateTagsCommand } from "@aws-sdk/client-ec2";

process.env.AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED ??= "true";

/**
 * moto's server, with CreateImage as EC2 does it: an image of an instance has the instance's root
 * device (EBS on every instance moto runs), where moto 5 records `standard`, which Packer's
 * amazon-ebs refuses as a source ("The root device of the source AMI must be EBS-backed"). A host
 * stage's AMI is the source of its release stage, as on AWS.
 */
const MOTO_SERVER = `
import sys
from moto.ec2.models import amis

_init = amis.Ami.__init__

def _ami_init(self, *args, **kwargs):
    _init(self, *args, **kwargs)
    instance = kwargs.get("instance")
    if instance is not None:
        self.root_device_type = getattr(instance, "root_device_type", None) or "ebs"
        self.root_device_name = getattr(instance, "root_device_name", None) or self.root_device_name

amis.Ami.__init__ = _ami_init

from moto.server import main
sys.exit(main(sys.argv[1:]))
`;

/**
 * A moto_server on a free port of 127.0.0.1, answering before this returns. It stops when this
 * process ends, however it ends: its shell waits on a pipe from this process and stops it at EOF.
 * (`localhost` in the URL: moto's S3 wants it for path-style requests.)
 */
async function startMoto(): Promise<string> {
  const port = await freePort();
  const child = spawn(
    "sh",
    [
      "-c",
      'python3 -c "$2" -H 127.0.0.1 -p "$1" >/dev/null 2>&1 & m=$!; cat >/dev/null; kill $m',
      "sh",
      String(port),
      MOTO_SERVER,
    ],
    {
      stdio: ["pipe", "ignore", "inherit"],
    },
  );
  child.unref();
  (child.stdin as unknown as { unref?: () => void }).unref?.();
  const url = `http://localhost:${port}`;
  for (const started = Date.now(); Date.now() - started < 30_000;) {
    if (
      await fetch(`${url}/moto-api/data.json`).then(
        (r) => r.ok,
        () => false,
      )
    )
      return url;
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`moto_server did not answer on ${url} within 30 s (is it installed? make setup)`);
}

export const MOTO = await startMoto();

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

export async function registerAmi(
  name: string,
  tags: Record<string, string> = {},
  region = "us-east-1",
): Promise<string> {
  const ec2 = motoEc2(region);
  const { ImageId } = await ec2.send(
    new RegisterImageCommand({
      Name: name,
      RootDeviceName: "/dev/xvda",
      Architecture: "x86_64",
      BlockDeviceMappings: [{ DeviceName: "/dev/xvda", Ebs: { VolumeSize: 8 } }],
    }),
  );
  if (Object.keys(tags).length)
    await ec2.send(
      new CreateTagsCommand({
        Resources: [ImageId!],
        Tags: Object.entries(tags).map(([Key, Value]) => ({ Key, Value })),
      }),
    );
  return ImageId!;
}

/** A rule of the faulty endpoint: answer calls of this EC2 action (whose body matches) with an error, `times` times (Infinity: always). */
export interface EndpointFault {
  action: string;
  match?: RegExp;
  times: number;
  /** The error answered; without one, the call passes through after `delayMs` (a slow endpoint). */
  status?: number;
  code?: string;
  delayMs?: number;
}

/**
 * An endpoint before moto that answers some EC2 calls with an error, as AWS does when it
 * throttles or refuses, and passes everything else through. `env` points bake at it; `calls`
 * counts the calls of each action that reached it (failed or not).
 */
export async function faultyEndpoint(
  faults: EndpointFault[],
): Promise<{ env: typeof motoEnv; calls: Map<string, number>; close: () => void }> {
  const calls = new Map<string, number>();
  const server = createServer(async (req, res) => {
    const chunks: Buffer[] = [];
    for await (const c of req) chunks.push(c as Buffer);
    const body = Buffer.concat(chunks);
    const action = /(?:^|&)Action=([A-Za-z]+)/.exec(body.toString())?.[1] ?? String(req.headers["x-amz-target"] ?? "");
    calls.set(action, (calls.get(action) ?? 0) + 1);
    const fault = faults.find(
      (f) => f.action === action && f.times > 0 && (!f.match || f.match.test(decodeURIComponent(body.toString()))),
    );
    if (fault) fault.times--;
    if (fault?.delayMs) await new Promise((r) => setTimeout(r, fault.delayMs));
    if (fault?.status) {
      res.writeHead(fault.status, { "Content-Type": "text/xml" });
      return void res.end(
        `<?xml version="1.0" encoding="UTF-8"?>\n<Response><Errors><Error><Code>${fault.code}</Code><Message>injected by the test: ${fault.code}</Message></Error></Errors><RequestID>fault</RequestID></Response>`,
      );
    }
    const upstream = await fetch(`${MOTO}${req.url}`, {
      method: req.method,
      headers: Object.entries(req.headers)
        .filter(([k]) => k !== "host" && k !== "content-length")
        .map(([k, v]) => [k, String(v)]) as [string, string][],
      body: req.method === "GET" ? undefined : body,
    });
    res.writeHead(
      upstream.status,
      Object.fromEntries(
        [...upstream.headers].filter(
          ([k]) => k !== "content-encoding" && k !== "content-length" && k !== "transfer-encoding",
        ),
      ),
    );
    res.end(Buffer.from(await upstream.arrayBuffer()));
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const port = (server.address() as AddressInfo).port;
  return { env: { ...motoEnv, AWS_ENDPOINT_URL: `http://127.0.0.1:${port}` }, calls, close: () => server.close() };
}
