/**
 * Provenance: one in-toto statement (v1) with a SLSA provenance (v1) predicate per node, kept in
 * `bake-provenance.intoto.jsonl` beside bake-manifest.json (one statement per line, one line per
 * node: the last one bake produced). What it claims: this subject was built by bake from these
 * inputs, whose digests make up its key. It is not signed: it says what bake did on this machine,
 * and `bake verify` checks it against the working tree and the engine; it does not prove to a
 * third party who ran the build.
 */
import path from "node:path";
import { existsSync, readFileSync } from "node:fs";
import writeFileAtomic from "write-file-atomic";
import { ConfigError } from "../errors.js";
import type { InputDigests } from "../graph/keys.js";
import type { ContextEntry } from "../graph/context-files.js";

export const STATEMENT_TYPE = "https://in-toto.io/Statement/v1";
export const SLSA_PROVENANCE = "https://slsa.dev/provenance/v1";
export const IMAGE_BUILD_TYPE = "urn:bake:build-type:image:v1";
export const BUILDER_ID = "urn:bake:builder";

export interface ResourceDescriptor {
  name?: string;
  uri?: string;
  digest: Record<string, string>;
  annotations?: Record<string, string>;
}

export interface Statement {
  _type: typeof STATEMENT_TYPE;
  subject: ResourceDescriptor[];
  predicateType: typeof SLSA_PROVENANCE;
  predicate: {
    buildDefinition: {
      buildType: string;
      externalParameters: Record<string, unknown>;
      internalParameters: Record<string, unknown>;
      resolvedDependencies: ResourceDescriptor[];
    };
    runDetails: {
      builder: { id: string; version: Record<string, string> };
      metadata: { invocationId?: string; startedOn?: string; finishedOn?: string };
      byproducts?: ResourceDescriptor[];
    };
  };
}

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
export function contextMaterials(projectDir: string, contextDir: string, entries: readonly ContextEntry[]): { path: string; digest: string }[] {
  return entries.filter((e) => e.type !== "dir" && e.digest).map((e) => ({ path: path.relative(projectDir, path.join(contextDir, e.path)).split(path.sep).join("/"), digest: e.digest! }));
}

export function imageStatement(p: ImageProvenanceInput): Statement {
  const subject: ResourceDescriptor[] = [{ name: p.repo, digest: { sha256: hex(p.id) }, annotations: { "bake.node": p.node, "bake.key": p.key } }];
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
  if (p.parent) dependencies.push({ name: `image:${p.parent.node}`, digest: { sha256: hex(p.parent.id) }, annotations: { "bake.key": p.parent.key } });
  for (const f of p.contextFiles ?? []) dependencies.push({ uri: `file:${f.path}`, digest: { sha256: f.digest } });
  const external = { project: p.project, node: p.node, ...(p.dockerfile ? { dockerfile: p.dockerfile } : {}), ...(p.args && Object.keys(p.args).length ? { args: p.args } : {}) };
  return statement(subject, IMAGE_BUILD_TYPE, external, dependencies, p);
}

/** The statement around a subject and its materials: the key and its inputs, the builder, the run, the SBOMs. */
function statement(
  subject: ResourceDescriptor[],
  buildType: string,
  externalParameters: Record<string, unknown>,
  resolvedDependencies: ResourceDescriptor[],
  p: { key: string; inputs: InputDigests; versions: Record<string, string>; sbom: Record<string, string>; run?: { id: string; startedOn: string; finishedOn: string } },
): Statement {
  return {
    _type: STATEMENT_TYPE,
    subject,
    predicateType: SLSA_PROVENANCE,
    predicate: {
      buildDefinition: { buildType, externalParameters, internalParameters: { key: p.key, inputs: p.inputs }, resolvedDependencies },
      runDetails: {
        builder: { id: BUILDER_ID, version: p.versions },
        metadata: p.run ? { invocationId: p.run.id, startedOn: p.run.startedOn, finishedOn: p.run.finishedOn } : {},
        byproducts: Object.entries(p.sbom).map(([format, digest]) => ({ name: `sbom:${format}`, digest: { sha256: hex(digest) } })),
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
    if (name === "source" && p.target === "aws") dependencies.push({ name: "input:source", uri: `ec2:${value}`, digest: { amiId: value } });
    else dependencies.push({ name: `input:${name}`, digest: isDigest(value) ? { sha256: hex(value) } : { value } });
  }
  for (const s of p.shipped) dependencies.push({ name: `image:${s.node}`, digest: { sha256: hex(s.id) }, annotations: { "bake.key": s.key } });
  return statement(subject, AMI_BUILD_TYPE, { project: p.project, node: p.node, target: p.target }, dependencies, p);
}

export function provenancePath(dir: string): string {
  return path.join(dir, "bake-provenance.intoto.jsonl");
}

/** Which node a statement is about (its subject's annotation). */
export function statementNode(s: Statement): string | undefined {
  return s.subject[0]?.annotations?.["bake.node"];
}

export function statementKey(s: Statement): string | undefined {
  return s.predicate?.buildDefinition?.internalParameters?.key as string | undefined;
}

export function readProvenance(dir: string): Map<string, Statement> {
  const file = provenancePath(dir);
  const out = new Map<string, Statement>();
  if (!existsSync(file)) return out;
  readFileSync(file, "utf8").split("\n").forEach((line, i) => {
    if (!line.trim()) return;
    let s: Statement;
    try {
      s = JSON.parse(line);
    } catch (e) {
      throw new ConfigError({ file, line: i + 1, column: 1 }, `the provenance file is not JSON lines: ${(e as Error).message}`, "restore it from version control, or remove it: the next build writes it again");
    }
    const node = statementNode(s);
    if (node) out.set(node, s);
  });
  return out;
}

/** Replaces the statements of these nodes and keeps every other line (the caller holds the manifest lock). */
export function writeProvenance(dir: string, statements: Statement[]): void {
  const all = readProvenance(dir);
  for (const s of statements) {
    const node = statementNode(s)!;
    // A cached image's statement has no run of its own: the one written when it was built stays.
    const kept = all.get(node);
    if (!s.predicate.runDetails.metadata.invocationId && kept && kept.subject[0]?.digest.sha256 === s.subject[0]?.digest.sha256 && statementKey(kept) === statementKey(s)) continue;
    all.set(node, s);
  }
  const lines = [...all.keys()].sort().map((n) => JSON.stringify(all.get(n)));
  writeFileAtomic.sync(provenancePath(dir), `${lines.join("\n")}\n`);
}
