/**
 * `bake verify <node>`: recomputes the node's key from the working tree and checks it against the
 * provenance statement bake wrote when it built the node, the statement against what it names
 * (the image and its bake.key label; the AMI found by key on EC2, the local machine image, the VM
 * disk) and against the manifest. Exit 1 when a check fails.
 */
import { shortKey } from "../config/model.js";
import { readPipeline, type Pipeline, type Tools } from "../state/read.js";
import type { Target } from "../graph/keys.js";
import { readManifest } from "../state/manifest.js";
import { contextMaterials } from "../sbom/provenance.js";
import { provenancePath, readProvenance, statementKey, type Statement } from "../state/provenance-file.js";
import { imageCheck, keyCheck, type VerifyCheck } from "../sbom/verify.js";
import { findVmDisk } from "../state/vm-record.js";

export interface VerifyOptions {
  file: string;
  node: string;
  target: Target;
  json: boolean;
}

export interface VerifyResult {
  node: string;
  ok: boolean;
  key?: string;
  checks: VerifyCheck[];
}

export async function verifyCommand(
  options: VerifyOptions,
  tools: Tools,
  out: (t: string) => void,
): Promise<VerifyResult> {
  const pipeline = await readPipeline({ file: options.file, target: options.target, nodes: [options.node] }, tools);
  const node = pipeline.graph.byName.get(options.node)!;
  const key = pipeline.keys.get(node.name)?.key;
  const statement = readProvenance(pipeline.config.dir).get(node.name);
  const checks: VerifyCheck[] = [];
  if (!statement) {
    checks.push({
      name: "provenance",
      ok: false,
      detail: `no statement for ${node.name} in ${provenancePath(pipeline.config.dir)}: run bake ${node.kind === "image" ? "build" : "ami"} ${node.name}`,
    });
  } else if (node.kind === "image") {
    const listing = pipeline.listings.get(node.name);
    const files =
      listing && node.image.context
        ? contextMaterials(pipeline.config.dir, node.image.context, listing.entries)
        : undefined;
    checks.push(keyCheck(statement, key, pipeline.keys.get(node.name)?.inputs ?? {}, files));
    const id = `sha256:${statement.subject[0].digest.sha256}`;
    checks.push(imageCheck(statement, await tools.docker().inspectImage(id)));
    const entry = readManifest(pipeline.config.dir).images[node.name];
    checks.push(
      manifestCheck(
        entry?.id === id,
        `${entry?.id.slice(0, 19) ?? "no image"} for ${node.name}, the statement ${id.slice(0, 19)}`,
      ),
    );
  } else {
    const target = statement.predicate.buildDefinition.externalParameters.target as Target;
    if (target !== options.target) {
      checks.push({
        name: "provenance",
        ok: false,
        detail: `the statement for ${node.name} is of a bake on the ${target} target, not ${options.target}: use --target ${target}`,
      });
    } else {
      checks.push(keyCheck(statement, key, pipeline.keys.get(node.name)?.inputs ?? {}, undefined));
      checks.push(await bakedCheck(pipeline, node.ami.region, node.name, statement, tools));
      const entry = readManifest(pipeline.config.dir).amis[node.name];
      checks.push(
        manifestCheck(
          entry?.key === statementKey(statement) && entry?.target === target,
          `key ${shortKey(entry?.key) ?? "none"} on ${entry?.target ?? "no target"} for ${node.name}, the statement ${shortKey(statementKey(statement))} on ${target}`,
        ),
      );
    }
  }
  const result: VerifyResult = { node: node.name, ok: checks.every((c) => c.ok), ...(key ? { key } : {}), checks };
  if (options.json) out(JSON.stringify(result, null, 2));
  else
    out(
      [
        `${node.name}: ${result.ok ? "verified" : "NOT verified"}`,
        ...checks.map((c) => `  ${c.ok ? "ok    " : "FAILED"} ${c.name}: ${c.detail}`),
      ].join("\n"),
    );
  return result;
}

function manifestCheck(ok: boolean, otherwise: string): VerifyCheck {
  return ok
    ? { name: "manifest", ok, detail: "bake-manifest.json names the same" }
    : { name: "manifest", ok, detail: `bake-manifest.json names ${otherwise}` };
}

/** The AMI the statement names still carries its key where it was baked. */
async function bakedCheck(
  pipeline: Pipeline,
  region: string,
  name: string,
  statement: Statement,
  tools: Tools,
): Promise<VerifyCheck> {
  const key = statementKey(statement)!;
  const subject = statement.subject[0].name ?? "";
  const target = statement.predicate.buildDefinition.externalParameters.target;
  if (target === "aws") {
    const id = subject.split(":").at(-1);
    const found = await tools.ec2().findAmiByKey(region, key);
    return found?.imageId === id
      ? { name: "ami", ok: true, detail: `${id} in ${region} carries bake:key ${shortKey(key)}` }
      : {
          name: "ami",
          ok: false,
          detail: `no AMI ${id} with bake:key ${shortKey(key)} in ${region}${found ? ` (the key is on ${found.imageId})` : ""}`,
        };
  }
  if (target === "vm") {
    const disk = findVmDisk(pipeline.config.dir, name, key);
    return disk
      ? { name: "ami", ok: true, detail: `the VM disk of key ${shortKey(key)} is in ${disk.dir}` }
      : { name: "ami", ok: false, detail: `no VM disk of key ${shortKey(key)} under .bake/vm` };
  }
  return {
    ...imageCheck(statement, await tools.docker().inspectImage(`sha256:${statement.subject[0].digest.sha256}`)),
    name: "ami",
  };
}
