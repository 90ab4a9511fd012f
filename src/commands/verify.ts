/**
 * `bake verify <node>`: recomputes the node's key from the working tree and checks it against the
 * provenance statement bake wrote when it built the node, and the statement against the image
 * the engine holds (its id and its bake.key label) and the manifest. Exit 1 when a check fails.
 */
import { readPipeline, type Tools } from "../state/read.js";
import { UsageError } from "../errors.js";
import { readManifest } from "../state/manifest.js";
import { provenancePath, readProvenance } from "../sbom/provenance.js";
import { contextMaterials } from "../sbom/provenance.js";
import { imageCheck, keyCheck, type VerifyCheck } from "../sbom/verify.js";

export interface VerifyOptions {
  file: string;
  node: string;
  json: boolean;
}

export interface VerifyResult {
  node: string;
  ok: boolean;
  key?: string;
  checks: VerifyCheck[];
}

export async function verifyCommand(options: VerifyOptions, tools: Tools, out: (t: string) => void): Promise<VerifyResult> {
  const pipeline = await readPipeline({ file: options.file, target: "local", nodes: [options.node], imagesOnly: true }, tools);
  const node = pipeline.config.images.find((i) => i.name === options.node);
  if (!node) throw new UsageError(`bake verify checks images; ${options.node} is an AMI (its provenance is not written yet)`);
  const key = pipeline.keys.get(node.name)?.key;
  const statement = readProvenance(pipeline.config.dir).get(node.name);
  const checks: VerifyCheck[] = [];
  if (!statement) {
    checks.push({ name: "provenance", ok: false, detail: `no statement for ${node.name} in ${provenancePath(pipeline.config.dir)}: run bake build ${node.name}` });
  } else {
    const listing = pipeline.listings.get(node.name);
    const files = listing && node.context ? contextMaterials(pipeline.config.dir, node.context, listing.entries) : undefined;
    checks.push(keyCheck(statement, key, pipeline.keys.get(node.name)?.inputs ?? {}, files));
    checks.push(imageCheck(statement, await tools.docker().inspectImage(`sha256:${statement.subject[0].digest.sha256}`)));
    const entry = readManifest(pipeline.config.dir).images[node.name];
    const id = `sha256:${statement.subject[0].digest.sha256}`;
    checks.push(entry?.id === id ? { name: "manifest", ok: true, detail: `bake-manifest.json names the same image` } : { name: "manifest", ok: false, detail: `bake-manifest.json names ${entry?.id.slice(0, 19) ?? "no image"} for ${node.name}, the statement ${id.slice(0, 19)}` });
  }
  const result: VerifyResult = { node: node.name, ok: checks.every((c) => c.ok), ...(key ? { key } : {}), checks };
  if (options.json) out(JSON.stringify(result, null, 2));
  else out([`${node.name}: ${result.ok ? "verified" : "NOT verified"}`, ...checks.map((c) => `  ${c.ok ? "ok    " : "FAILED"} ${c.name}: ${c.detail}`)].join("\n"));
  if (!result.ok) process.exitCode = 1;
  return result;
}
