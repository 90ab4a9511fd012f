/**
 * Tests of what was baked: a node's goss spec run where the thing runs, as dgoss does. The goss
 * binary, the spec and its vars file are copied into the container (nothing is mounted from this
 * machine), goss validates with its own retry options, and what it printed is the result.
 */
import { readFileSync } from "node:fs";
import { randomBytes } from "node:crypto";
import type { ImageNode, TestSpec } from "../config/model.js";
import { interruption } from "../errors.js";
import type { DockerTool } from "../tools/docker.js";
import { GOSS_DIR, gossFailures, gossSummary, validateArgs } from "../tools/goss.js";

export interface TestResult {
  ok: boolean;
  seconds: number;
  /** goss's summary of its last attempt, when it printed one. */
  summary?: { count: number; failed: number; skipped: number };
  /** What goss printed (documentation format). */
  output: string;
  /** The failures as goss printed them (empty when it passed). */
  failures: string[];
}

/** The files a test copies into the container or host it runs in. */
export function gossFiles(test: TestSpec, goss: Buffer): { path: string; content: Buffer | string; mode: number }[] {
  return [
    { path: `${GOSS_DIR}/goss`, content: goss, mode: 0o755 },
    { path: `${GOSS_DIR}/goss.yaml`, content: readFileSync(test.spec), mode: 0o644 },
    ...(test.vars ? [{ path: `${GOSS_DIR}/vars.yaml`, content: readFileSync(test.vars), mode: 0o644 }] : []),
  ];
}

function result(started: number, code: number, output: string): TestResult {
  const ok = code === 0;
  return {
    ok,
    seconds: (Date.now() - started) / 1000,
    summary: gossSummary(output),
    output,
    failures: ok ? [] : gossFailures(output),
  };
}

/** Runs the spec in a running container where the node's services run (a booted host, a started release). */
export async function gossInContainer(
  docker: DockerTool,
  id: string,
  at: { project: string; node: string },
  test: TestSpec,
  goss: Buffer,
): Promise<TestResult> {
  const started = Date.now();
  await docker.putFiles(id, gossFiles(test, goss));
  let output = "";
  const code = await docker.exec(
    id,
    [
      `${GOSS_DIR}/goss`,
      ...validateArgs({
        retryTimeout: test.retryTimeout,
        sleep: test.sleep,
        withVars: Boolean(test.vars),
        bake: { ...at, booted: true },
      }),
    ],
    (_s, c) => (output += c.toString("utf8")),
  );
  return result(started, code, output);
}

/**
 * Tests an image in a container of its own: a release runs its contract's command and
 * environment and goss checks it while it runs; an image without a contract runs goss as its
 * only process. The container is removed at the end, interrupt or not.
 */
export async function testImage(
  node: ImageNode,
  image: string,
  project: string,
  docker: DockerTool,
  goss: Buffer,
  options: { passEnv?: Record<string, string>; signal?: AbortSignal } = {},
): Promise<TestResult> {
  const test = node.test!;
  const started = Date.now();
  const run = node.run;
  const args = validateArgs({
    retryTimeout: test.retryTimeout,
    sleep: test.sleep,
    withVars: Boolean(test.vars),
    bake: { project, node: node.name, booted: false },
  });
  const env = run
    ? [
        ...Object.entries(run.env).map(([k, v]) => `${k}=${v}`),
        ...run.passEnv.filter((k) => options.passEnv?.[k] !== undefined).map((k) => `${k}=${options.passEnv![k]}`),
      ]
    : [];
  const id = await docker.createContainer({
    name: `bake-test-${randomBytes(3).toString("hex")}-${project}-${node.name}`,
    Image: image,
    Env: env,
    Labels: { "bake.project": project, "bake.test": node.name },
    ...(run ? (run.command ? { Cmd: run.command } : {}) : { Entrypoint: [`${GOSS_DIR}/goss`], Cmd: args }),
    HostConfig: { NetworkMode: "none" },
  });
  const stop = () => void docker.removeContainer(id).catch(() => undefined);
  options.signal?.addEventListener("abort", stop, { once: true });
  try {
    if (!run) {
      await docker.putFiles(id, gossFiles(test, goss));
      await docker.startContainer(id);
      const code = await docker.waitContainer(id);
      let output = "";
      await docker.containerLogs(id, { follow: false }, (_s, c) => (output += c.toString("utf8")));
      if (options.signal?.aborted) throw interruption(options.signal);
      return result(started, code, output);
    }
    await docker.startContainer(id);
    const tested = await gossInContainer(docker, id, { project, node: node.name }, test, goss);
    if (options.signal?.aborted) throw interruption(options.signal);
    return { ...tested, seconds: (Date.now() - started) / 1000 };
  } finally {
    options.signal?.removeEventListener("abort", stop);
    await docker.removeContainer(id).catch(() => undefined);
  }
}
