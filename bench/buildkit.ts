/**
 * What the engine's BuildKit would change for bake: the numbers behind a decision bake's
 * contract leaves open, measured side by side with the classic builder bake uses:
 *   1. the generated 20-image graph, one image after another, --no-cache: BuildKit through the
 *      API (labels as metadata: no step of their own) against `docker build` (classic) as in
 *      build.js, and against classic with the same labels;
 *   2. a 1 GiB context sent as a tar, the way bake sends it (no BuildKit session): BuildKit
 *      against classic, both through the same API client;
 * BuildKit cannot take a parent by image id (`FROM sha256:…` is read as a Docker Hub name, which
 * the engine then tries to reach), so here each parent goes by a tag named after its id.
 * Usage: node dist/bench/buildkit.js
 */
import { execa } from "execa";
import { spawn } from "node:child_process";
import http from "node:http";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { withLabels } from "../src/build/context-tar.js";
import { engineTarget } from "../src/tools/docker.js";
import { busyboxRootfs } from "../test/helpers/engine.js";
import { env, generatedGraph, gibibyteOfFiles, mid, ratio, rawBuilds, seconds, type Node } from "./graph.js";

const target = engineTarget();
if (!target) throw new Error("this benchmark needs the engine on a unix socket or plain tcp");

const api = (method: string, apiPath: string, body?: NodeJS.ReadableStream) =>
  new Promise<{ status: number; text: string }>((resolve, reject) => {
    const req = http.request({ ...target, method, path: apiPath, headers: body ? { "Content-Type": "application/x-tar" } : {} }, (res) => {
      let text = "";
      res.setEncoding("utf8");
      res.on("data", (c) => (text += c));
      res.on("end", () => resolve({ status: res.statusCode ?? 0, text }));
    });
    req.on("error", reject);
    if (body) body.pipe(req);
    else req.end();
  });

/** One build through POST /build, the context a tar of `context`; the image id, or the error. */
async function apiBuild(context: string, query: Record<string, string>): Promise<string> {
  const tar = spawn("tar", ["-C", context, "-c", "."], { stdio: ["ignore", "pipe", "inherit"] });
  const { text } = await api("POST", `/build?${new URLSearchParams({ dockerfile: "Dockerfile", nocache: "1", ...query })}`, tar.stdout);
  const id = /"moby\.image\.id","aux":\{"ID":"(sha256:[0-9a-f]{64})"/.exec(text)?.[1] ?? /"aux":\{"ID":"(sha256:[0-9a-f]{64})"/.exec(text)?.[1];
  if (!id || /"errorDetail"/.test(text)) throw new Error(/"error":"([^"]*)"/.exec(text)?.[1] ?? text.slice(-300));
  return id;
}

/** BuildKit cannot FROM an image id: the parent goes by `bench-parent:<id hex>`, tagged for the build. */
async function buildkitBuild(context: string, parentId: string, labels: Record<string, string>, tag: string): Promise<string> {
  const hex = parentId.slice("sha256:".length);
  await api("POST", `/images/${parentId}/tag?repo=bench-parent&tag=${hex}`);
  try {
    return await apiBuild(context, { version: "2", t: tag, buildargs: JSON.stringify({ BAKE_PARENT: `bench-parent:${hex}` }), labels: JSON.stringify(labels) });
  } finally {
    await api("DELETE", `/images/bench-parent:${hex}?noprune=1`);
  }
}

const labelsFor = (n: Node) => ({
  "bake.project": "bench20",
  "bake.node": n.name,
  "bake.key": "0".repeat(64),
  "bake.parent": "0".repeat(64),
  "bake.inputs": JSON.stringify({ kind: "image", dockerfile: "0".repeat(64), context: "0".repeat(64), args: "0".repeat(64), parent: "0".repeat(64) }),
  "org.opencontainers.image.title": `bench20/${n.name}`,
  "org.opencontainers.image.created": new Date().toISOString(),
});

async function buildkitGraph(nodes: Node[], rootfsId: string): Promise<void> {
  const ids = new Map<string, string>();
  for (const n of nodes) ids.set(n.name, await buildkitBuild(n.context, n.parent ? ids.get(n.parent)! : rootfsId, { ...labelsFor(n), "bake.key": `${Date.now()}` }, `bench-bk/${n.name}:latest`));
}

const rootfsId = (await execa("sh", ["-c", `docker import - bench-bk/rootfs:latest < "${await busyboxRootfs()}"`])).stdout.trim();
const graph = generatedGraph(await busyboxRootfs());
const labelledDir = mkdtempSync(path.join(tmpdir(), "bake-bench-bk-labelled-"));
const labelled = new Map(graph.nodes.map((n) => {
  const file = path.join(labelledDir, `${n.name}.Dockerfile`);
  writeFileSync(file, withLabels(readFileSync(n.dockerfile, "utf8"), labelsFor(n)));
  return [n.name, file];
}));

// --- 1. the 20-image graph, one image after another; rounds in turns, medians of 3
const raw: number[] = [];
const rawLabelled: number[] = [];
const bk: number[] = [];
for (let round = 0; round < 3; round++) {
  raw.push(await seconds(() => rawBuilds(graph.nodes, rootfsId, true)));
  rawLabelled.push(await seconds(() => rawBuilds(graph.nodes, rootfsId, true, labelled)));
  bk.push(await seconds(() => buildkitGraph(graph.nodes, rootfsId)));
}
console.log(`cold, generated graph (20 images, one after another): BuildKit through the API ${mid(bk).toFixed(2)} s, docker build (classic) ${mid(raw).toFixed(2)} s, ratio ${ratio(mid(bk), mid(raw))}; classic with the same labels ${mid(rawLabelled).toFixed(2)} s, ratio ${ratio(mid(bk), mid(rawLabelled))}`);

// --- 2. a 1 GiB context as a tar; both builders through the same client, in turns, medians of 3
const big = mkdtempSync(path.join(tmpdir(), "bake-bench-bk-big-"));
gibibyteOfFiles(big);
let run = 0;
const bigBuild = (version: "1" | "2") => {
  writeFileSync(path.join(big, "Dockerfile"), `ARG BAKE_PARENT\nFROM \${BAKE_PARENT}\n# run ${run++}\nCOPY Dockerfile /context-arrived\n`);
  return seconds(() => (version === "2" ? buildkitBuild(big, rootfsId, {}, "bench-bk/big:latest") : apiBuild(big, { buildargs: JSON.stringify({ BAKE_PARENT: rootfsId }), t: "bench-bk/big:latest" })));
};
const bigClassic: number[] = [];
const bigBk: number[] = [];
for (let i = 0; i < 3; i++) {
  bigClassic.push(await bigBuild("1"));
  bigBk.push(await bigBuild("2"));
}
console.log(`1 GiB context as a tar (no session): BuildKit ${mid(bigBk).toFixed(2)} s, classic ${mid(bigClassic).toFixed(2)} s, ratio ${ratio(mid(bigBk), mid(bigClassic))}`);

for (const d of [graph.dir, labelledDir, big]) rmSync(d, { recursive: true, force: true });
await execa("sh", ["-c", "docker images -q 'bench-bk/*' | xargs -r docker rmi -f >/dev/null 2>&1; docker images -q 'bench-raw/*' | xargs -r docker rmi -f >/dev/null 2>&1 || true"], { env });
await api("POST", "/build/prune?all=1");
