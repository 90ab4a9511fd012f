/**
 * A project for the aws-target tests, in a temporary folder outside the repository: a busybox
 * base, a service and a release with a runtime contract, and one AMI `host` whose source is an
 * AMI the test registers in moto as `aws-src-<pid>-*`.
 */
import { busyboxRootfs } from "./engine.js";
import { tempTree, testEnv } from "./bake.js";
import { motoEnv } from "./moto.js";

/** What names this process's projects and source AMIs apart from another file's. */
export const suffix = `${process.pid}`;

export async function awsFixture(
  extra = "",
  builder = "ebs",
  sourceName = `aws-src-${suffix}-*`,
  playbook = "host.yml",
): Promise<string> {
  const rootfs = await busyboxRootfs();
  return tempTree({
    "bake.yml": `project: aws-${suffix}
images:
  base: { rootfs: { tar: ${rootfs} } }
  svc: { parent: base, dockerfile: svc/Dockerfile }
  web:
    parent: svc
    dockerfile: svc/Dockerfile
    run: { ports: ["8080"], command: [httpd, -f], pass_env: [WEB_TOKEN] }
amis:
  host:
    builder: ${builder}
${builder === "instance-store" ? '    bundle: { s3_bucket: bake-bundles, account_id: "123456789012" }\n' : ""}    region: us-east-1
    source: { owners: [self], name: ${yamlValue(sourceName)} }
    instance_type: ${builder === "instance-store" ? "m3.medium" : "t3.small"}
    playbook: ${yamlValue(playbook)}
    preload: [base]
    services: [web]
${extra}`,
    "svc/Dockerfile": "ARG BAKE_PARENT\nFROM ${BAKE_PARENT}\n",
    [playbook]: "- hosts: all\n  tasks: []\n",
  });
}

/** A double-quoted YAML scalar whose value, after bake's ${VAR} interpolation, is `value` ($ → $$). */
export function yamlValue(value: string): string {
  return JSON.stringify(value.replace(/\$/g, "$$$$"));
}

export const packerEnv = (extra: Record<string, string> = {}) =>
  ({ ...process.env, ...testEnv(), ...motoEnv, ...extra }) as Record<string, string>;
