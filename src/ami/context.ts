/**
 * What an AMI's template is rendered from: the template context every target shares (each
 * target adds its own part: targets/<name>.ts) and the Ansible variables. Pure.
 */
import path from "node:path";
import type { AmiNode, BakeConfig, ImageNode, TestSpec } from "../config/model.js";
import { GOSS_DIR, validateArgs } from "../tools/goss.js";
import { imageRepository, KEY_TAG_LENGTH, shippedImages } from "../config/model.js";
import type { Target } from "../graph/keys.js";
import type { Stage } from "../graph/stages.js";
import { stageTag } from "../graph/stages.js";
import { serviceVars, type ServiceVars } from "../runtime/contract.js";
import type { TemplateContext } from "./render.js";
import { rpmQueryArgs } from "../sbom/packages.js";
import { HOST_RPM_QUERY } from "../sbom/host-packages.js";
import { renderCommand } from "../tools/exec.js";

/** The environment variable that carries the engine's socket path to the local target's Packer run. */
export const DOCKER_SOCKET_ENV = "BAKE_DOCKER_SOCKET";
export const PRELOAD_ARCHIVE = "preload.tar";
/** The host's package databases, downloaded by the last provisioners (packer/partials/provisioners.hbs). */
export const HOST_PACKAGES_ARCHIVE = "host-packages.tar";
/** The Ansible variables beside the HCL, every string `!unsafe` (tools/ansible.ts). */
export const BAKE_VARS = "bake-vars.yml";

export interface AmiRenderInput {
  config: BakeConfig;
  ami: AmiNode;
  target: Target;
  /** The AMI's key, or undefined when it cannot be known (bake render without credentials). */
  key?: string;
  /** The digests the key was made of, labelled on the local image so plan can say what changed. */
  inputs?: Record<string, string>;
  imageKeys: Map<string, string | undefined>;
  /** Image id of the image the local host starts from (local.image). */
  baseImageId?: string;
  sourceAmi?: string;
  requiredPlugins: boolean;
  /** The folder the HCL is written to: paths in it are relative to this (path.root). */
  outDir: string;
  revision?: string;
  /** On a staged bake (graph/stages.ts): the stage this folder bakes; without one the AMI bakes in one run. */
  stage?: Stage;
}

/** A variable of the rendered HCL read from Packer's environment (`default = env(...)`). */
export type PackerVariable = {
  name: string;
  env: string;
  /** Must be set before a bake or render: what the value is, for the message that asks for it. */
  required?: string;
};

/** pass_env names of the AMI's services: never in a bake's environment (the host reads them at boot: README, The host, booted). */
export function passEnvNames(ami: AmiNode, config: BakeConfig): string[] {
  return [...new Set(ami.services.flatMap((s) => config.images.find((i) => i.name === s)?.run?.passEnv ?? []))].sort();
}

/** Where the aws target's Packer reaches EC2 and the instance (README: Running bake ami in CI against AWS). */
export const AWS_CONNECTION_ENV = {
  ec2Endpoint: "BAKE_EC2_ENDPOINT",
  sshHost: "BAKE_SSH_HOST",
  sshPort: "BAKE_SSH_PORT",
} as const;

/** Where an instance-store bake downloads the EC2 AMI tools from (bake's ansible/bake/roles/ec2_ami_tools). */
export const EC2_AMI_TOOLS_ENV = { url: "BAKE_EC2_AMI_TOOLS_URL", sha256: "BAKE_EC2_AMI_TOOLS_SHA256" } as const;

/** What a target adds to the template context: its Packer source, and how Packer reaches the host. */
export type TargetTemplate = Pick<
  TemplateContext,
  "sourcePartial" | "sourceRef" | "booted" | "ansibleUser" | "sensitive" | "machine"
> &
  Partial<TemplateContext>;
/** A target's part of the template context (targets/<name>.ts), from the render input and the key tag the result carries. */
export type TargetTemplatePart = (input: AmiRenderInput, keyTag: string) => TargetTemplate;

/** The template context: what every target renders, and the target's own part. */
export function templateContext(input: AmiRenderInput, part: TargetTemplatePart): TemplateContext {
  const { ami, target, stage } = input;
  const keyTag = stage?.name === "host" ? stageTag(stage) : input.key ? input.key.slice(0, KEY_TAG_LENGTH) : "unknown";
  const rel = (p: string) => path.relative(input.outDir, p).split(path.sep).join("/");
  return {
    amiName: ami.name,
    target,
    requiredPlugins: input.requiredPlugins,
    // A staged bake: the host stage runs bake's provisioning before the AMI's playbook and the
    // playbook; the release stage (the last) the package list and the test. One run does all.
    stageHost: stage?.name !== "release",
    readsPackages: stage?.name !== "host",
    preloadArchive: PRELOAD_ARCHIVE,
    hostPackagesArchive: HOST_PACKAGES_ARCHIVE,
    rpmQueryFormat: rpmQueryArgs()[2],
    rpmQueryFile: HOST_RPM_QUERY,
    ...(ami.playbook ? { playbookPath: rel(ami.playbook) } : {}),
    keyTag,
    ...part(input, keyTag),
  };
}

/** The folder beside the HCL that holds the AMI's goss spec (and vars file) for upload. */
export const GOSS_FOLDER = "goss";

/** The shell command of the AWS test provisioner: nothing booted yet (services start at boot). */
export function gossCommand(project: string, node: string, test: TestSpec): string {
  const args = validateArgs({
    retryTimeout: test.retryTimeout,
    sleep: test.sleep,
    withVars: Boolean(test.vars),
    bake: { project, node, booted: false },
  });
  // Quoted for the shell as every command bake renders is (a ' inside a value is closed and escaped).
  return renderCommand(`${GOSS_DIR}/goss`, args);
}

/**
 * The tags of an AMI bake made. A host stage's AMI (a staged bake on aws) carries the stage's key
 * and node (`<ami>@host`) and `bake:stage`, so that neither a lookup of the AMI's key nor its
 * retention counts it as the AMI; the release stage's AMI is the AMI, its `bake:source-ami` the
 * host stage's AMI it was baked on.
 */
export function amiTags(
  input: Pick<AmiRenderInput, "config" | "ami" | "key" | "imageKeys" | "sourceAmi" | "revision" | "stage">,
): Record<string, string> {
  const { config, ami, stage } = input;
  const host = stage?.name === "host" ? stage : undefined;
  const preloaded = host ? host.images : ami.preload;
  return {
    Name: `${config.project}-${host?.node ?? ami.name}`,
    "bake:key": host?.key ?? input.key ?? "unknown",
    "bake:project": config.project,
    "bake:ami": host?.node ?? ami.name,
    ...(host ? { "bake:stage": host.name } : {}),
    "bake:source-ami": input.sourceAmi ?? "{{ .SourceAMI }}",
    "bake:revision": input.revision ?? "unknown",
    "bake:preload": preloaded
      .map((n) => `${n}=${(input.imageKeys.get(n) ?? "unknown").slice(0, KEY_TAG_LENGTH)}`)
      .join(" "),
  };
}

/** The images inside the AMI's archive: the preloaded ones and the services it runs. */
export interface AnsibleVars {
  bake_project: string;
  bake_engine: AmiNode["engine"];
  bake_target: Target;
  /** The stage this run bakes (`host`, `release`), or `whole` for an AMI baked in one run. */
  bake_stage: "whole" | Stage["name"];
  bake_preload_archive: string;
  /** The archive's name on the host: `images`, or the stage's above the host stage (the loader loads them in order). */
  bake_preload_name: string;
  bake_preload_images: { name: string; ref: string; key: string }[];
  bake_services: ServiceVars[];
  bake_runtime_env: string;
}

/** The non-secret variables the host playbook receives (bake-vars.yml beside the HCL). */
export function ansibleVars(
  config: BakeConfig,
  ami: AmiNode,
  target: Target,
  imageKeys: Map<string, string | undefined>,
  stage?: Pick<Stage, "name" | "images" | "services">,
): AnsibleVars {
  const ref = (name: string) =>
    `${imageRepository(config, name)}:${(imageKeys.get(name) ?? "unknown").slice(0, KEY_TAG_LENGTH)}`;
  const byName = new Map<string, ImageNode>(config.images.map((i) => [i.name, i]));
  return {
    bake_project: config.project,
    bake_engine: ami.engine,
    bake_target: target,
    bake_stage: stage?.name ?? "whole",
    bake_preload_archive: "/var/tmp/bake-preload.tar",
    bake_preload_name: stage && stage.name !== "host" ? stage.name : "images",
    bake_preload_images: (stage?.images ?? shippedImages(ami)).map((name) => ({
      name,
      ref: ref(name),
      key: imageKeys.get(name) ?? "unknown",
    })),
    bake_services: (stage?.services ?? ami.services).map((name) =>
      serviceVars({
        project: config.project,
        service: name,
        image: ref(name),
        key: imageKeys.get(name) ?? "unknown",
        run: byName.get(name)!.run!,
      }),
    ),
    bake_runtime_env: ami.runtimeEnv,
  };
}
