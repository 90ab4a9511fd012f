/**
 * The boot test of a VM host: the baked disk booted under QEMU with its own Docker engine, checked
 * over SSH (systemd running with no failed unit, the engine started, the loader's images present
 * under their keys, every service healthy and answering through a port forwarded to 127.0.0.1,
 * the AMI's goss spec), then rebooted and checked again. It boots a copy of the disk into which
 * the runtime environment file was written as user-data would write it, so no secret reaches the
 * baked disk. The VM is stopped and the copy removed at the end, interrupt or not.
 */
import { request } from "node:http";
import { createServer } from "node:net";
import { existsSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import type { TestSpec } from "../config/model.js";
import { interruption } from "../errors.js";
import { redact, renderCommand, type BackgroundProcess } from "../tools/exec.js";
import { GOSS_DIR, gossFailures, gossSummary, validateArgs } from "../tools/goss.js";
import { startVm, type VmArgsInput } from "../tools/qemu.js";
import { forwardPort, sshRun, type SshTarget } from "../tools/ssh.js";
import type { Service } from "../up/services.js";
import { gossFiles } from "../goss/image-test.js";
import { SETTLED, unitState, type BootCheck, type BootReport } from "./boot-test.js";

export interface VmBootInput {
  /** The VM: a raw copy of the baked disk, its kernel, initrd and size, without forwards. */
  vm: Omit<VmArgsInput, "forwards">;
  /** The bake's private key (root logs in with it). */
  key: string;
  /** known_hosts pinning the ed25519 host key bake wrote into the disk, under HOST_KEY_ALIAS. */
  knownHosts: string;
  project: string;
  ami: string;
  shipped: { ref: string; key: string }[];
  services: Service[];
  test?: { spec: TestSpec; goss: Buffer; name: string };
  /** The pass_env values the disk's runtime env file holds: redacted from every detail shown. */
  secrets?: string[];
  /** Seconds for each boot to settle and its services to become healthy. */
  timeoutSeconds?: number;
  signal?: AbortSignal;
  onLine?: (line: string) => void;
}

/** The name the boot test's known_hosts gives the VM's host key (whatever port it answers on). */
export const HOST_KEY_ALIAS = "bake-boot-test";

/** A free TCP port on 127.0.0.1 (the VM's forwards listen there and nowhere else). */
export async function freePort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve, reject) => server.once("error", reject).listen(0, "127.0.0.1", resolve));
  const port = (server.address() as { port: number }).port;
  await new Promise((r) => server.close(r));
  return port;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

export async function bootTestVm(input: VmBootInput): Promise<BootReport> {
  const started = Date.now();
  const timeout = 1000 * (input.timeoutSeconds ?? 300);
  const checks: BootCheck[] = [];
  const elapsed = () => `${((Date.now() - started) / 1000).toFixed(1)} s`;
  // Every detail (the serial console, journals, a service's own log lines) through the one redaction.
  const check = (name: string, ok: boolean, raw: string) => {
    const detail = redact(raw, input.secrets ?? []);
    checks.push({ name, ok, detail });
    input.onLine?.(`boot test: ${ok ? "ok" : "FAILED"} ${name} (${elapsed()}): ${detail}`);
    return ok;
  };
  const target: SshTarget = {
    port: 0,
    key: input.key,
    user: "root",
    knownHosts: input.knownHosts,
    hostKeyAlias: HOST_KEY_ALIAS,
  };
  const sh = (command: string, timeoutMs = 120_000) => sshRun(target, command, { timeoutMs, signal: input.signal });
  const run = (cmd: string[]) => sh(renderCommand(cmd[0], cmd.slice(1)));
  let vm: BackgroundProcess | undefined;
  try {
    const started = await startVmForwardingSsh(input.vm);
    vm = started.vm;
    target.port = started.port;
    input.onLine?.(
      `boot test: booting the VM (${input.vm.accelerator}, ${input.vm.cpus} CPUs, ${input.vm.memory} MiB), SSH on 127.0.0.1:${target.port}`,
    );
    let bootId = "";
    for (const round of ["boot", "reboot"] as const) {
      const deadline = Date.now() + timeout;
      const suffix = round === "boot" ? "" : " after reboot";
      if (round === "reboot") {
        input.onLine?.("boot test: rebooting the VM");
        await sh("systemctl reboot", 15_000);
      }
      // SSH answers, on a boot of its own: the boot id differs from the last one.
      const answer = await untilSsh(sh, vm, deadline, input.signal, bootId);
      if (input.signal?.aborted) throw interruption(input.signal);
      if (!answer.ok) {
        check(
          `boot${suffix}`,
          false,
          `${answer.detail}\nthe serial console's last lines:\n${serialTail(input.vm.serialLog)}`,
        );
        break;
      }
      bootId = answer.bootId;
      // A boot that fails its checks is not rebooted: the failure is what the test reports.
      const before = checks.length;
      await hostChecks(input, sh, run, check, suffix, deadline, target);
      if (checks.slice(before).some((c) => !c.ok)) break;
    }
  } finally {
    if (vm?.running()) {
      // A clean power-off when there is time for one; on an interrupt QEMU is stopped at once.
      if (!input.signal?.aborted) {
        await sh("systemctl poweroff", 10_000).catch(() => undefined);
        await Promise.race([vm.exited, sleep(30_000)]);
      }
      await vm.stop("SIGTERM", 5_000);
    }
  }
  if (input.signal?.aborted) throw interruption(input.signal);
  return { ok: checks.length > 0 && checks.every((c) => c.ok), seconds: (Date.now() - started) / 1000, checks };
}

/**
 * QEMU forwards SSH from a free port on 127.0.0.1. Between finding the port free and QEMU binding it
 * another process can take it: QEMU then exits at once ("Could not set up host forwarding rule"), and
 * the VM starts again on another port. (A process that took the port and answers cannot pass for
 * the VM: SSH accepts only the host key bake pinned.)
 */
export async function startVmForwardingSsh(
  vm: VmBootInput["vm"],
  attempts = 5,
  pickPort = freePort,
): Promise<{ vm: BackgroundProcess; port: number }> {
  for (let attempt = 1; ; attempt++) {
    const port = await pickPort();
    const started = await startVm({ ...vm, forwards: [{ host: port, guest: 22 }] });
    const early = await Promise.race([started.exited, sleep(1500).then(() => undefined)]);
    if (!early || !/host forwarding rule/.test(early.stderrTail) || attempt >= attempts) return { vm: started, port };
  }
}

type Shell = (command: string, timeoutMs?: number) => Promise<{ code: number; out: string }>;

async function untilSsh(
  sh: Shell,
  vm: BackgroundProcess,
  deadline: number,
  signal: AbortSignal | undefined,
  lastBootId: string,
): Promise<{ ok: true; bootId: string } | { ok: false; detail: string }> {
  while (Date.now() < deadline && !signal?.aborted) {
    if (!vm.running()) {
      const ended = await vm.exited;
      return { ok: false, detail: `QEMU exited (${ended.exitCode ?? ended.signal}): ${ended.stderrTail}` };
    }
    const r = await sh("cat /proc/sys/kernel/random/boot_id", 15_000);
    if (r.code === 0 && r.out && r.out !== lastBootId) return { ok: true, bootId: r.out };
    await sleep(1000);
  }
  return { ok: false, detail: "SSH did not answer before the deadline" };
}

function serialTail(file: string): string {
  try {
    return readFileSync(file, "utf8").split("\n").slice(-15).join("\n");
  } catch {
    return "(no serial output)";
  }
}

/** One round of checks in the booted VM. */
async function hostChecks(
  input: VmBootInput,
  sh: Shell,
  run: (cmd: string[]) => Promise<{ code: number; out: string }>,
  check: (name: string, ok: boolean, detail: string) => boolean,
  suffix: string,
  deadline: number,
  target: SshTarget,
): Promise<void> {
  // An interrupt stops the checks at once (the caller stops the VM).
  const stopIfAborted = () => {
    if (input.signal?.aborted) throw interruption(input.signal);
  };
  const journal = async (unit: string) =>
    (await run(["journalctl", "-u", unit, "-n", "15", "--no-pager", "-o", "cat"])).out;
  // 1. systemd settles, with no failed unit.
  const waitMs = Math.max(1000, deadline - Date.now());
  const state = (await sh("systemctl is-system-running --wait", waitMs)).out.split("\n").pop() ?? "";
  check(`boot${suffix}`, state === "running", `systemd ${SETTLED.has(state) ? state : state || "still starting"}`);
  const failed = (await run(["systemctl", "--failed", "--no-legend", "--plain"])).out
    .split("\n")
    .map((l) => l.split(/\s+/)[0])
    .filter(Boolean);
  const journals = await Promise.all(failed.map(async (u) => `${u}:\n${await journal(u)}`));
  check(
    `units${suffix}`,
    failed.length === 0,
    failed.length ? `failed units: ${failed.join(", ")}\n${journals.join("\n")}` : "no failed units",
  );

  stopIfAborted();
  // 2. The host's own engine runs.
  const engine = await unitState(run, "docker.service");
  const version = (await sh("docker info --format '{{.ServerVersion}}'")).out;
  check(
    `engine${suffix}`,
    engine.ok && /^\d/.test(version),
    `${engine.text}; the host's own engine answers: ${version || "no"}`,
  );

  stopIfAborted();
  // 3. The loader ran and every shipped image is there under its key.
  const loader = await unitState(run, "bake-preload.service");
  const missing: string[] = [];
  for (const s of input.shipped) {
    const key = (await run(["docker", "image", "inspect", "--format", '{{index .Config.Labels "bake.key"}}', s.ref]))
      .out;
    if (key !== s.key) missing.push(s.ref);
  }
  check(
    `preload${suffix}`,
    loader.ok && !missing.length,
    `${loader.text}; ${missing.length ? `not present under their keys: ${missing.join(", ")}` : `present under their keys: ${input.shipped.map((s) => s.ref).join(", ")}`}`,
  );

  // 4. Every service runs from its contract, becomes healthy and answers on a forwarded 127.0.0.1 port.
  for (const s of input.services) {
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
      if (!unit.ok || !/^running starting$|^restarting/.test(health) || Date.now() > deadline) break;
      await sleep(2000);
    }
    const healthy = /^running (healthy|none)$/.test(health);
    const probe = healthy ? await httpProbe(s, name, run, target) : undefined;
    const ok = unit.ok && healthy && (probe?.ok ?? true);
    const logs = healthy ? "" : `\nits last log lines:\n${(await run(["docker", "logs", "--tail", "15", name])).out}`;
    const unitJournal = ok ? "" : `\n${unitName} journal:\n${await journal(unitName)}`;
    check(
      `service ${s.release.name}${suffix}`,
      ok,
      `${unit.text}; container ${name} ${health || "missing"}${probe ? `; ${probe.detail}` : ""}${logs}${unitJournal}`,
    );
  }

  stopIfAborted();
  // 5. The AMI's own spec, run by goss in the booted host.
  if (input.test) {
    const t = input.test;
    // Copied in over SSH (a boot clears /tmp, so every round copies them again).
    for (const f of gossFiles(t.spec, t.goss)) {
      await sshRun(target, `mkdir -p ${GOSS_DIR} && cat > ${f.path} && chmod ${f.mode.toString(8)} ${f.path}`, {
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
    const r = await run([`${GOSS_DIR}/goss`, ...args]);
    const summary = gossSummary(r.out);
    const counts = summary
      ? `${summary.count - summary.failed} of ${summary.count} checks passed`
      : "goss printed no summary";
    check(
      `test ${t.name}${suffix}`,
      r.code === 0,
      r.code === 0 ? counts : `${counts}\n${gossFailures(r.out).join("\n")}`,
    );
  }
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
