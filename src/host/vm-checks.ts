/**
 * One round of checks in a booted VM host, over SSH: systemd settled with no failed unit, the
 * host's own engine, the loader's images under their keys, every service healthy and answering
 * through a port forwarded to 127.0.0.1, and the AMI's goss spec.
 */
import { request } from "node:http";
import { existsSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import type { TestSpec } from "../config/model.js";
import { interruption } from "../errors.js";
import { GOSS_DIR, gossFailures, gossSummary, validateArgs } from "../tools/goss.js";
import { forwardPort, sshRun, type SshTarget } from "../tools/ssh.js";
import type { Service } from "../up/services.js";
import { gossFiles } from "../goss/image-test.js";
import { SETTLED, unitState } from "./boot-test.js";

/** What a round's checks read of the VM boot test's input. */
export interface VmChecksInput {
  project: string;
  ami: string;
  shipped: { ref: string; key: string }[];
  services: Service[];
  test?: { spec: TestSpec; goss: Buffer; name: string };
  signal?: AbortSignal;
}

/** A command run on the VM through its shell, with a time limit. */
export type Shell = (command: string, timeoutMs?: number) => Promise<{ code: number; out: string }>;

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** One round of checks in the booted VM: what each step asks and tells. */
interface VmRound {
  input: VmChecksInput;
  sh: Shell;
  run: (cmd: string[]) => Promise<{ code: number; out: string }>;
  check: (name: string, ok: boolean, detail: string) => boolean;
  suffix: string;
  deadline: number;
  target: SshTarget;
}

/** One round of checks in the booted VM. */
export async function hostChecks(
  input: VmChecksInput,
  sh: Shell,
  run: (cmd: string[]) => Promise<{ code: number; out: string }>,
  check: (name: string, ok: boolean, detail: string) => boolean,
  suffix: string,
  deadline: number,
  target: SshTarget,
): Promise<void> {
  const r: VmRound = { input, sh, run, check, suffix, deadline, target };
  // An interrupt stops the checks at once (the caller stops the VM).
  const stopIfAborted = () => {
    if (input.signal?.aborted) throw interruption(input.signal);
  };
  await checkSettled(r);
  stopIfAborted();
  await checkEngine(r);
  stopIfAborted();
  await checkPreload(r);
  for (const s of input.services) await checkService(r, s, stopIfAborted);
  stopIfAborted();
  if (input.test) await checkSpec(r, input.test);
}

const journalOf = async (r: VmRound, unit: string) =>
  (await r.run(["journalctl", "-u", unit, "-n", "15", "--no-pager", "-o", "cat"])).out;

/** 1. systemd settles, with no failed unit. */
async function checkSettled(r: VmRound): Promise<void> {
  const waitMs = Math.max(1000, r.deadline - Date.now());
  const state = (await r.sh("systemctl is-system-running --wait", waitMs)).out.split("\n").pop() ?? "";
  r.check(`boot${r.suffix}`, state === "running", `systemd ${SETTLED.has(state) ? state : state || "still starting"}`);
  const failed = (await r.run(["systemctl", "--failed", "--no-legend", "--plain"])).out
    .split("\n")
    .map((l) => l.split(/\s+/)[0])
    .filter(Boolean);
  const journals = await Promise.all(failed.map(async (u) => `${u}:\n${await journalOf(r, u)}`));
  r.check(
    `units${r.suffix}`,
    failed.length === 0,
    failed.length ? `failed units: ${failed.join(", ")}\n${journals.join("\n")}` : "no failed units",
  );
}

/** 2. The host's own engine runs. */
async function checkEngine(r: VmRound): Promise<void> {
  const engine = await unitState(r.run, "docker.service");
  const version = (await r.sh("docker info --format '{{.ServerVersion}}'")).out;
  r.check(
    `engine${r.suffix}`,
    engine.ok && /^\d/.test(version),
    `${engine.text}; the host's own engine answers: ${version || "no"}`,
  );
}

/** 3. The loader ran and every shipped image is there under its key. */
async function checkPreload(r: VmRound): Promise<void> {
  const { input } = r;
  const loader = await unitState(r.run, "bake-preload.service");
  // One inspect for every image (a docker process costs seconds under emulation): a line per image
  // found, its tags then its key; an image missing prints no line.
  const found = (
    await r.run([
      "docker",
      "image",
      "inspect",
      "--format",
      '{{range .RepoTags}}{{.}} {{end}}{{index .Config.Labels "bake.key"}}',
      ...input.shipped.map((s) => s.ref),
    ])
  ).out
    .split("\n")
    .map((l) => l.trim().split(/\s+/));
  const missing = input.shipped
    .filter((s) => !found.some((words) => words.at(-1) === s.key && words.slice(0, -1).includes(s.ref)))
    .map((s) => s.ref);
  r.check(
    `preload${r.suffix}`,
    loader.ok && !missing.length,
    `${loader.text}; ${missing.length ? `not present under their keys: ${missing.join(", ")}` : `present under their keys: ${input.shipped.map((s) => s.ref).join(", ")}`}`,
  );
}

/** 4. A service runs from its contract, becomes healthy and answers on a forwarded 127.0.0.1 port. */
async function checkService(r: VmRound, s: Service, stopIfAborted: () => void): Promise<void> {
  const { run } = r;
  const name = s.contract.ansible.name;
  const unitName = `bake-service@${name}.service`;
  const unit = await unitState(run, unitName);
  // Waited for while it starts (its health check not yet decided, or restarting); a unit that failed has nothing to wait for.
  let health = "";
  for (;;) {
    health = (
      await run([
        "docker",
        "inspect",
        "--format",
        "{{.State.Status}} {{if .State.Health}}{{.State.Health.Status}}{{else}}none{{end}}",
        name,
      ])
    ).out;
    stopIfAborted();
    if (!unit.ok || !/^running starting$|^restarting/.test(health) || Date.now() > r.deadline) break;
    await sleep(2000);
  }
  const healthy = /^running (healthy|none)$/.test(health);
  const probe = healthy ? await httpProbe(s, name, run, r.target) : undefined;
  const ok = unit.ok && healthy && (probe?.ok ?? true);
  const logs = healthy ? "" : `\nits last log lines:\n${(await run(["docker", "logs", "--tail", "15", name])).out}`;
  const unitJournal = ok ? "" : `\n${unitName} journal:\n${await journalOf(r, unitName)}`;
  r.check(
    `service ${s.release.name}${r.suffix}`,
    ok,
    `${unit.text}; container ${name} ${health || "missing"}${probe ? `; ${probe.detail}` : ""}${logs}${unitJournal}`,
  );
}

/** 5. The AMI's own spec, run by goss in the booted host. */
async function checkSpec(r: VmRound, t: NonNullable<VmChecksInput["test"]>): Promise<void> {
  const { input } = r;
  // Copied in over SSH (a boot clears /tmp, so every round copies them again).
  for (const f of gossFiles(t.spec, t.goss)) {
    await sshRun(r.target, `mkdir -p ${GOSS_DIR} && cat > ${f.path} && chmod ${f.mode.toString(8)} ${f.path}`, {
      input: f.content,
      signal: input.signal,
    });
  }
  const args = validateArgs({
    retryTimeout: t.spec.retryTimeout,
    sleep: t.spec.sleep,
    withVars: Boolean(t.spec.vars),
    bake: { project: input.project, node: input.ami, booted: true },
  });
  const result = await r.run([`${GOSS_DIR}/goss`, ...args]);
  const summary = gossSummary(result.out);
  const counts = summary
    ? `${summary.count - summary.failed} of ${summary.count} checks passed`
    : "goss printed no summary";
  r.check(
    `test ${t.name}${r.suffix}`,
    result.code === 0,
    result.code === 0 ? counts : `${counts}\n${gossFailures(result.out).join("\n")}`,
  );
}

/** GET of the service's health path through an SSH forward to the port its contract publishes on the host. */
async function httpProbe(
  s: Service,
  container: string,
  run: (cmd: string[]) => Promise<{ code: number; out: string }>,
  target: SshTarget,
): Promise<{ ok: boolean; detail: string } | undefined> {
  const health = s.release.run!.health;
  if (!health?.http) return undefined;
  const published = (await run(["docker", "port", container, `${health.port}/tcp`])).out.split("\n")[0];
  const remote = Number(/:(\d+)$/.exec(published)?.[1]);
  if (!remote) return { ok: false, detail: `port ${health.port} is not published on the host` };
  // Forwarded to a Unix socket in a folder of this user's only (mkdtemp makes it 0700).
  const folder = mkdtempSync(path.join(tmpdir(), "bake-probe-"));
  const socket = path.join(folder, "http.sock");
  const tunnel = await forwardPort(target, socket, remote);
  const what = `GET http://127.0.0.1:${remote}${health.http} (the host's ${published}, through SSH)`;
  try {
    for (let attempt = 0; ; attempt++) {
      try {
        if (!existsSync(socket)) throw new Error("the forward is not listening yet");
        const status = await getOverSocket(socket, health.http, 5000);
        return { ok: status >= 200 && status < 300, detail: `${what} answered ${status}` };
      } catch (e) {
        // The tunnel takes a moment to listen.
        if (attempt >= 10 || !tunnel.running()) return { ok: false, detail: `${what}: ${(e as Error).message}` };
        await sleep(500);
      }
    }
  } finally {
    await tunnel.stop("SIGTERM", 2000);
    rmSync(folder, { recursive: true, force: true });
  }
}

/** The status of a GET sent over a Unix socket (its body read and dropped). */
function getOverSocket(socket: string, urlPath: string, timeoutMs: number): Promise<number> {
  return new Promise((resolve, reject) => {
    const req = request(
      { socketPath: socket, path: urlPath, headers: { host: "127.0.0.1" }, timeout: timeoutMs },
      (res) => {
        res.resume();
        res.on("end", () => resolve(res.statusCode ?? 0));
        res.on("error", reject);
      },
    );
    req.on("timeout", () => req.destroy(new Error(`no answer within ${timeoutMs / 1000} s`)));
    req.on("error", reject);
    req.end();
  });
}
