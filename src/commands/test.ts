/** `bake test [nodes..] [--target local|vm]`: run the test: specs of what exists (images, local AMIs and VM disks), building nothing. */
import path from "node:path";
import { currentImage, readPipeline, requireEngine, type Pipeline, type Tools } from "../state/read.js";
import { UsageError } from "../errors.js";
import type { DockerTool } from "../tools/docker.js";
import { gossBinary, requireGoss } from "../tools/goss.js";
import { testImage } from "../goss/image-test.js";
import { bootLocal, bootPassEnv, checkLocalTarget } from "../host/local-host.js";
import { bootKeptDisk } from "../host/vm-host.js";
import { RunLogs } from "../state/logs.js";
import type { AmiNode } from "../config/model.js";

export interface TestOptions {
  file: string;
  nodes: string[];
  /** Where the AMIs tested were baked: local machine images, or VM disks booted under QEMU. */
  target?: "local" | "vm";
  json: boolean;
  signal: AbortSignal;
}

export interface NodeTest {
  node: string;
  kind: "image" | "ami";
  spec: string;
  ok: boolean;
  /** The image (or local machine image) tested; absent when there was none to test. */
  image?: string;
  seconds: number;
  checks?: { count: number; failed: number; skipped: number };
  /** What failed, as goss (or the boot test) printed it; or why nothing was tested. */
  failures: string[];
}

export async function testCommand(
  options: TestOptions,
  tools: Tools,
  out: (t: string) => void,
  err: (t: string) => void,
): Promise<NodeTest[]> {
  const pipeline = await readPipeline(
    { file: options.file, target: options.target ?? "local", nodes: options.nodes, everyImage: true },
    tools,
  );
  requireEngine(pipeline);
  const selected = pipeline.nodes.filter((n) => (options.nodes.length ? options.nodes.includes(n.name) : true));
  const withTest = selected.filter((n) => (n.kind === "image" ? n.image.test : n.ami.test));
  const named = options.nodes.filter((n) => !withTest.some((w) => w.name === n));
  if (named.length)
    throw new UsageError(
      `${named.join(", ")} ${named.length > 1 ? "have" : "has"} no test: in ${pipeline.config.file}`,
    );
  if (!withTest.length) {
    err(`nothing to test: no node in ${pipeline.config.file} has a test:`);
    return [];
  }
  const goss = gossBinary(requireGoss());
  const docker = tools.docker();
  const results: NodeTest[] = [];
  for (const node of withTest) {
    const spec = path.relative(pipeline.config.dir, (node.kind === "image" ? node.image.test : node.ami.test)!.spec);
    const base = { node: node.name, kind: node.kind, spec };
    if (node.kind === "ami" && pipeline.target === "vm") {
      results.push({ ...base, ...(await bootDiskAndTest(pipeline, node.ami, options.signal, err)) });
      continue;
    }
    const image = currentImage(pipeline, node.name);
    if (!image) {
      results.push({
        ...base,
        ok: false,
        seconds: 0,
        failures: [
          `no image with ${node.name}'s current key: run bake ${node.kind === "image" ? `build ${node.name}` : `ami ${node.name} --target local`} first`,
        ],
      });
      continue;
    }
    err(`${node.name}: testing ${image.ref} with ${spec}`);
    if (node.kind === "image") {
      const t = await testImage(node.image, image.id, pipeline.config.project, docker, goss, {
        signal: options.signal,
      });
      results.push({
        ...base,
        ok: t.ok,
        image: image.id,
        seconds: t.seconds,
        ...(t.summary ? { checks: t.summary } : {}),
        failures: t.failures,
      });
    } else {
      results.push({
        ...base,
        image: image.id,
        ...(await bootAndTest(pipeline, node.ami, image.id, docker, options.signal, err)),
      });
    }
  }
  if (options.json) out(JSON.stringify({ tests: results }, null, 2));
  else
    out(
      results
        .map(
          (r) =>
            `${r.ok ? "ok    " : "FAILED"} ${r.node.padEnd(16)} ${r.spec}${r.checks ? ` (${r.checks.count - r.checks.failed}/${r.checks.count} checks)` : ""} ${r.seconds.toFixed(1)}s${r.ok ? "" : `\n${r.failures.map((f) => `    ${f}`).join("\n")}`}`,
        )
        .join("\n"),
    );
  return results;
}

/** A local AMI's test runs in the booted host, after the boot test's own checks. */
async function bootAndTest(
  pipeline: Pipeline,
  ami: Parameters<typeof bootLocal>[1],
  imageId: string,
  docker: DockerTool,
  signal: AbortSignal,
  err: (t: string) => void,
): Promise<Omit<NodeTest, "node" | "kind" | "spec" | "image">> {
  const local = checkLocalTarget(ami);
  const report = await bootLocal(pipeline, ami, imageId, docker, {
    ...local,
    passEnv: bootPassEnv(pipeline, ami),
    signal,
    onLine: (l) => err(`${ami.name}: ${l}`),
  });
  const failed = report.checks.filter((c) => !c.ok);
  return { ok: report.ok, seconds: report.seconds, failures: failed.map((c) => `${c.name}: ${c.detail}`) };
}

/** A VM AMI's test runs in a VM booted from a copy of the disk kept for its current key, after the boot test's own checks. */
async function bootDiskAndTest(
  pipeline: Pipeline,
  ami: AmiNode,
  signal: AbortSignal,
  err: (t: string) => void,
): Promise<Omit<NodeTest, "node" | "kind" | "spec">> {
  const key = pipeline.keys.get(ami.name)?.key;
  const logs = new RunLogs(pipeline.config.dir);
  try {
    const onLine = (l: string) => {
      err(`${ami.name}: ${l}`);
      logs.line(ami.name, l);
    };
    const report = key
      ? await bootKeptDisk(pipeline, ami, key, {
          passEnv: bootPassEnv(pipeline, ami),
          signal,
          onLine,
          logsDir: logs.dir,
        })
      : undefined;
    if (!report)
      return {
        ok: false,
        seconds: 0,
        failures: [`no VM disk with ${ami.name}'s current key: run bake ami ${ami.name} --target vm first`],
      };
    const failed = report.checks.filter((c) => !c.ok);
    return {
      ok: report.ok,
      seconds: report.seconds,
      failures: failed.map((c) => `${c.name}: ${c.detail}`),
    };
  } finally {
    await logs.close();
  }
}
