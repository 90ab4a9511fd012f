/**
 * A release stage written, not provisioned (the vm and local targets): the files bake's preload
 * and service roles leave for a release stage (bake_stage: release) on every other target — the
 * release images' archive with only the layers the host stage lacks, and its record, under the
 * stage's name; each service's runtime contract; each service's unit enabled at boot. The host's
 * loader loads whatever a stage shipped and its engine lacks at boot.
 */
import { existsSync } from "node:fs";
import path from "node:path";
import { canonicalJson } from "../graph/keys.js";
import type { Stage } from "../graph/stages.js";
import { knownKeys } from "../state/read.js";
import { exportImages } from "../ami/bake-ami.js";
import { ansibleVars, PRELOAD_ARCHIVE, type AnsibleVars } from "../ami/context.js";
import { BakeError } from "../errors.js";
import type { TargetBake } from "./target.js";

/** Where bake's roles keep what a stage ships and each service's contract (ansible/bake/roles/*\/defaults). */
export const HOST_PATHS = {
  preload: "/var/lib/bake/preload",
  services: "/etc/bake/services",
  serviceUnit: "/etc/systemd/system/bake-service@.service",
  wants: "/etc/systemd/system/multi-user.target.wants",
} as const;

/** A file the release stage puts on the host: its content, or the local file that holds it. */
export type ReleaseFile = { path: string; mode: number } & ({ content: string } | { from: string });

/** What a written release stage puts on the host, and the archive (in the bake's folder) its first file comes from. */
export interface ReleaseContent {
  files: ReleaseFile[];
  links: { path: string; target: string }[];
  archive: string;
}

/** The release stage's images exported into the bake's folder, and the files and links that carry them and their contracts. */
export async function releaseContent(b: TargetBake, [host, release]: [Stage, Stage]): Promise<ReleaseContent> {
  const { pipeline, ami, run } = b;
  run.say("stage release: exporting the release images (the layers the host stage lacks)");
  await exportImages(pipeline, ami, run.dir, b.docker, run.signal, release.images, host.images);
  const archive = path.join(run.dir, PRELOAD_ARCHIVE);
  const vars = ansibleVars(pipeline.config, ami, run.target, knownKeys(pipeline), release);
  return { ...releaseFiles(vars, archive), archive };
}

/** As Ansible's to_nice_json writes it: keys sorted, four spaces, a final newline. */
function niceJson(value: unknown): string {
  return `${JSON.stringify(JSON.parse(canonicalJson(value)), null, 4)}\n`;
}

/**
 * What bake's preload and service roles leave for a release stage (bake_stage: release), as files:
 * the archive and its record under the stage's name, each contract, each service's unit enabled.
 */
export function releaseFiles(vars: AnsibleVars, archive: string): Omit<ReleaseContent, "archive"> {
  if (!existsSync(archive)) throw new BakeError(`no release archive at ${archive}`);
  const files: ReleaseFile[] = [
    { path: `${HOST_PATHS.preload}/${vars.bake_preload_name}.tar`, from: archive, mode: 0o644 },
    {
      path: `${HOST_PATHS.preload}/${vars.bake_preload_name}.json`,
      content: niceJson(vars.bake_preload_images),
      mode: 0o644,
    },
    ...vars.bake_services.map((s) => ({
      path: `${HOST_PATHS.services}/${s.name}.json`,
      content: niceJson({ create: s.create, pass_env: s.pass_env, runtime_env: vars.bake_runtime_env }),
      mode: 0o644,
    })),
  ];
  const links = vars.bake_services.map((s) => ({
    path: `${HOST_PATHS.wants}/bake-service@${s.name}.service`,
    target: HOST_PATHS.serviceUnit,
  }));
  return { files, links };
}
