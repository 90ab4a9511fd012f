/**
 * Provenance: one in-toto statement (v1) with a SLSA provenance (v1) predicate per node, kept in
 * `bake-provenance.intoto.jsonl` beside bake-manifest.json (one statement per line, one line per
 * node: the last one bake produced). What it claims: this subject was built by bake from these
 * inputs, whose digests make up its key. It is not signed: it says what bake did on this machine,
 * and `bake verify` checks it against the working tree and the engine; it does not prove to a
 * third party who ran the build.
 */
import path from "node:path";
import { SLSA_PROVENANCE, STATEMENT_TYPE, type ResourceDescriptor, type Statement } from "../state/provenance-file.js";
import type { InputDigests } from "../graph/keys.js";
import type { ContextEntry } from "../graph/context-files.js";

export const IMAGE_BUILD_TYPE = "urn:bake:build-type:image:v1";
export const BUILDER_ID = "urn:bake:builder";

const hex = (s: string) => s.replace(/^sha256:/, "");
const isDigest = (s: string) => /^(sha256:)?[0-9a-f]{64}$/.test(s);

export interface ImageProvenanceInput {
  project: string;
  node: string;
  repo: string;
  key: string;
  id: string;
  /** The registry's manifest digest when the image was pushed. */
  digest?: string;
  inputs: InputDigests;
  /** The build context's files after .dockerignore, relative to the project folder. */
  contextFiles?: { path: string; digest: string }[];
  parent?: { node: string; id: string; key: string };
  dockerfile?: string;
  args?: Record<string, string>;
  sbom: Record<string, string>;
  versions: Record<string, string>;
  run?: { id: string; startedOn: string; finishedOn: string };
}

/** The files of a context as the provenance names them: `file:` URIs relative to the project, with their digests. */
export function contextMaterials(
  projectDir: string,
  contextDir: string,
  entries: readonly ContextEntry[],
): { path: string; digest: string }[] {
  return entries
    .filter((e) => e.type !== "dir" && e.digest)
    .map((e) => ({
      path: path.relative(projectDir, path.join(contextDir, e.path)).split(path.sep).join("/"),
      digest: e.digest!,
    }));
}

export function imageStatement(p: ImageProvenanceInput): Statement {
  const subject: ResourceDescriptor[] = [
    { name: p.repo, digest: { sha256: hex(p.id) }, annotations: { "bake.node": p.node, "bake.key": p.key } },
  ];
  if (p.digest) subject.push({ name: `${p.repo}@${p.digest}`, digest: { sha256: hex(p.digest) } });
  const dependencies: ResourceDescriptor[] = [];
  for (const [name, value] of Object.entries(p.inputs).sort(([a], [b]) => a.localeCompare(b))) {
    if (name === "parent" || name === "kind") continue;
    if (name === "from") {
      const [ref, digest] = value.split("@");
      dependencies.push({ name: "input:from", uri: `docker://${ref}`, digest: digest ? { sha256: hex(digest) } : {} });
    } else {
      const v = value.replace(/^tar:/, "");
      dependencies.push({ name: `input:${name}`, digest: isDigest(v) ? { sha256: hex(v) } : { value } });
    }
  }
  if (p.parent)
    dependencies.push({
      name: `image:${p.parent.node}`,
      digest: { sha256: hex(p.parent.id) },
      annotations: { "bake.key": p.parent.key },
    });
  for (const f of p.contextFiles ?? []) dependencies.push({ uri: `file:${f.path}`, digest: { sha256: f.digest } });
  const external = {
    project: p.project,
    node: p.node,
    ...(p.dockerfile ? { dockerfile: p.dockerfile } : {}),
    ...(p.args && Object.keys(p.args).length ? { args: p.args } : {}),
  };
  return statement(subject, IMAGE_BUILD_TYPE, external, dependencies, p);
}

/** The statement around a subject and its materials: the key and its inputs, the builder, the run, the SBOMs. */
function statement(
  subject: ResourceDescriptor[],
  buildType: string,
  externalParameters: Record<string, unknown>,
  resolvedDependencies: ResourceDescriptor[],
  p: {
    key: string;
    inputs: InputDigests;
    versions: Record<string, string>;
    sbom: Record<string, string>;
    run?: { id: string; startedOn: string; finishedOn: string };
  },
): Statement {
  return {
    _type: STATEMENT_TYPE,
    subject,
    predicateType: SLSA_PROVENANCE,
    predicate: {
      buildDefinition: {
        buildType,
        externalParameters,
        internalParameters: { key: p.key, inputs: p.inputs },
        resolvedDependencies,
      },
      runDetails: {
        builder: { id: BUILDER_ID, version: p.versions },
        metadata: p.run ? { invocationId: p.run.id, startedOn: p.run.startedOn, finishedOn: p.run.finishedOn } : {},
        byproducts: Object.entries(p.sbom).map(([format, digest]) => ({
          name: `sbom:${format}`,
          digest: { sha256: hex(digest) },
        })),
      },
    },
  };
}

export const AMI_BUILD_TYPE = "urn:bake:build-type:ami:v1";

export interface AmiProvenanceInput {
  project: string;
  node: string;
  target: string;
  key: string;
  /** Where the AMI is: region → AMI id on aws, `local` → image id, `vm` → disk path. */
  regions: Record<string, string>;
  inputs: InputDigests;
  shipped: { node: string; key: string; id: string }[];
  /** An AMI baked in stages: the stages below it, bottom first. */
  stages?: { name: string; node: string; key: string }[];
  sbom: Record<string, string>;
  versions: Record<string, string>;
  run?: { id: string; startedOn: string; finishedOn: string };
}

/**
 * An AMI's statement. EC2 gives out no digest of an AMI's contents: its subjects are named by
 * region and AMI id and carry the bake key (`bakeKey`); the local target's machine image has a
 * real one (its image id).
 */
export function amiStatement(p: AmiProvenanceInput): Statement {
  const subject: ResourceDescriptor[] = Object.entries(p.regions).map(([where, id], i) => ({
    name: p.target === "aws" ? `ec2:${where}:${id}` : `${p.target}:${id}`,
    digest: (p.target === "local" && isDigest(id) ? { sha256: hex(id) } : { bakeKey: p.key }) as Record<string, string>,
    ...(i === 0 ? { annotations: { "bake.node": p.node, "bake.key": p.key } } : {}),
  }));
  const dependencies: ResourceDescriptor[] = [];
  for (const [name, value] of Object.entries(p.inputs).sort(([a], [b]) => a.localeCompare(b))) {
    if (name === "kind") continue;
    if (name === "source" && p.target === "aws")
      dependencies.push({ name: "input:source", uri: `ec2:${value}`, digest: { amiId: value } });
    else dependencies.push({ name: `input:${name}`, digest: isDigest(value) ? { sha256: hex(value) } : { value } });
  }
  for (const s of p.shipped)
    dependencies.push({ name: `image:${s.node}`, digest: { sha256: hex(s.id) }, annotations: { "bake.key": s.key } });
  for (const s of p.stages ?? [])
    dependencies.push({ name: `stage:${s.name}`, digest: { bakeKey: s.key }, annotations: { "bake.node": s.node } });
  return statement(subject, AMI_BUILD_TYPE, { project: p.project, node: p.node, target: p.target }, dependencies, p);
}
