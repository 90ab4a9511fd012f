/**
 * bake-provenance.intoto.jsonl beside bake-manifest.json: one in-toto statement per node, the last
 * one bake produced (sbom/provenance.ts makes them). Read and written here, with the manifest.
 */
import path from "node:path";
import { existsSync, readFileSync } from "node:fs";
import writeFileAtomic from "write-file-atomic";
import { ConfigError } from "../errors.js";

export const STATEMENT_TYPE = "https://in-toto.io/Statement/v1";
export const SLSA_PROVENANCE = "https://slsa.dev/provenance/v1";

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
  readFileSync(file, "utf8")
    .split("\n")
    .forEach((line, i) => {
      if (!line.trim()) return;
      let s: Statement;
      try {
        s = JSON.parse(line);
      } catch (e) {
        throw new ConfigError(
          { file, line: i + 1, column: 1 },
          `the provenance file is not JSON lines: ${(e as Error).message}`,
          "restore it from version control, or remove it: the next build writes it again",
        );
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
    if (
      !s.predicate.runDetails.metadata.invocationId &&
      kept &&
      kept.subject[0]?.digest.sha256 === s.subject[0]?.digest.sha256 &&
      statementKey(kept) === statementKey(s)
    )
      continue;
    all.set(node, s);
  }
  const lines = [...all.keys()].sort().map((n) => JSON.stringify(all.get(n)));
  writeFileAtomic.sync(provenancePath(dir), `${lines.join("\n")}\n`);
}
