/**
 * bake's own host provisioning: the playbooks and roles shipped in bake's package (ansible/bake/)
 * that put on every AMI what bake.yml says it carries — the engine, bake's agent, the shipped
 * images and the services at boot — before and after the AMI's own playbook. They are found
 * through the package root, never through the project, are copied beside the rendered HCL, and
 * are inputs of the AMI's key (a new bake that provisions differently bakes again).
 */
import { cpSync, readdirSync, readFileSync } from "node:fs";
import path from "node:path";
import { PACKAGE_ROOT } from "../package-root.js";
import { digestOf } from "./keys.js";

export const PROVISIONING_DIR = path.join(PACKAGE_ROOT, "ansible", "bake");
/** The folder beside the HCL that holds a copy of PROVISIONING_DIR. */
export const PROVISIONING_FOLDER = "bake-ansible";
export const PROVISIONING_PLAYBOOKS = {
  before: "host-before.yml",
  after: "host-after.yml",
  ec2AmiTools: "ec2-ami-tools.yml",
  up: "up.yml",
} as const;

/** Roles of bake's own provisioning that a project's playbook must not name (bake runs them). */
export const BAKE_ROLES = ["docker_host", "bake_agent", "preload", "service"] as const;

/** The instance-store bake's extra: the EC2 AMI tools, digested apart (only those AMIs run it). */
const EC2_AMI_TOOLS = [PROVISIONING_PLAYBOOKS.ec2AmiTools, "roles/ec2_ami_tools/"];
const isEc2AmiTools = (rel: string) => EC2_AMI_TOOLS.some((p) => rel === p || rel.startsWith(p));
/** `bake up --via ansible` only: not part of what a host is provisioned with. */
const isUpOnly = (rel: string) => rel === PROVISIONING_PLAYBOOKS.up;

function files(dir = PROVISIONING_DIR): string[] {
  return readdirSync(dir, { recursive: true, withFileTypes: true })
    .filter((e) => e.isFile())
    .map((e) => path.relative(dir, path.join(e.parentPath, e.name)).split(path.sep).join("/"))
    .sort();
}

function digestFiles(rels: string[], dir = PROVISIONING_DIR): string {
  return digestOf(Object.fromEntries(rels.map((rel) => [rel, readFileSync(path.join(dir, rel), "utf8")])));
}

/** What every host is provisioned with by bake (engine, agent, shipped images, services). */
export function hostProvisioningDigest(dir = PROVISIONING_DIR): string {
  return digestFiles(
    files(dir).filter((f) => !isEc2AmiTools(f) && !isUpOnly(f)),
    dir,
  );
}

/** bake's playbook and role that install the EC2 AMI tools on an instance-store bake's instance. */
export function ec2AmiToolsDigest(dir = PROVISIONING_DIR): string {
  return digestFiles(files(dir).filter(isEc2AmiTools), dir);
}

/** Copies bake's provisioning beside the rendered HCL, where its provisioners name it. */
export function copyProvisioning(renderDir: string): void {
  cpSync(PROVISIONING_DIR, path.join(renderDir, PROVISIONING_FOLDER), { recursive: true });
}
