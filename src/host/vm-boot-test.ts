/**
 * The boot test of a VM host: the baked disk booted under QEMU with its own Docker engine, checked
 * over SSH (systemd running with no failed unit, the engine started, the loader's images present
 * under their keys, every service healthy and answering through a port forwarded to 127.0.0.1,
 * the AMI's goss spec), then rebooted and checked again. It boots a copy of the disk into which
 * the runtime environment file was written as user-data would write it, so no secret reaches the
 * baked disk. The VM is stopped and the copy removed at the end, interrupt or not.
 */
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { interruption } from "../errors.js";
import { redact, renderCommand, type BackgroundProcess } from "../tools/exec.js";
import { freePort } from "../tools/ports.js";
import { startVm, type VmArgsInput } from "../tools/qemu.js";
import { masterConnection, sshRun, type SshTarget } from "../tools/ssh.js";
import type { BootCheck, BootReport } from "./boot-test.js";
import { hostChecks, type Shell, type VmChecksInput } from "./vm-checks.js";

export interface VmBootInput extends VmChecksInput {
  /** The VM: a raw copy of the baked disk, its kernel, initrd and size, without forwards. */
  vm: Omit<VmArgsInput, "forwards">;
  /** The bake's private key (root logs in with it). */
  key: string;
  /** known_hosts pinning the ed25519 host key bake wrote into the disk, under HOST_KEY_ALIAS. */
  knownHosts: string;
  /** The pass_env values the disk's runtime env file holds: redacted from every detail shown. */
  secrets?: string[];
  /** Seconds for each boot to settle and its services to become healthy. */
  timeoutSeconds?: number;
  onLine?: (line: string) => void;
}

/** The name the boot test's known_hosts gives the VM's host key (whatever port it answers on). */
export const HOST_KEY_ALIAS = "bake-boot-test";

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/**
 * What ssh says when it did not reach the host's shell, so the command never ran (a connection
 * closed later, as a reboot closes it, may have run it: not retried).
 */
export const SSH_UNREACHED = /during banner exchange|kex_exchange_identification|Connection (timed out|refused)$/m;

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
  // A command whose connection failed did not run: it runs again (three tries), so that a guest slow
  // to answer under load is not reported as a failed check.
  const sh = async (command: string, timeoutMs = 120_000) => {
    for (let attempt = 1; ; attempt++) {
      const r = await sshRun(target, command, { timeoutMs, signal: input.signal });
      if (r.code !== 255 || !SSH_UNREACHED.test(r.out) || attempt >= 3 || input.signal?.aborted) return r;
      await sleep(2000);
    }
  };
  const run = (cmd: string[]) => sh(renderCommand(cmd[0], cmd.slice(1)));
  let vm: BackgroundProcess | undefined;
  // Once a boot answers, the checks share one SSH connection (dozens of commands a round: under
  // emulation, a connection of its own costs each one an sshd, a key exchange and a login). Its
  // socket in a short folder of this user's only (a socket's path has at most 107 bytes).
  const muxDir = mkdtempSync(path.join(tmpdir(), "bake-ssh-"));
  const muxSocket = path.join(muxDir, "master");
  let master: BackgroundProcess | undefined;
  const dropMaster = async () => {
    target.controlPath = undefined;
    await master?.stop("SIGTERM", 2_000);
    master = undefined;
  };
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
        await dropMaster(); // its connection goes with the boot
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
      master = await masterConnection(target, muxSocket);
      if (master) target.controlPath = muxSocket;
      // A boot that fails its checks is not rebooted: the failure is what the test reports.
      const before = checks.length;
      await hostChecks(input, sh, run, check, suffix, deadline, target);
      if (checks.slice(before).some((c) => !c.ok)) break;
    }
  } finally {
    // QEMU is stopped at once: the VM runs a copy of the disk that is thrown away after, so a
    // clean power-off (its services stopped one by one, under emulation half a minute) keeps nothing.
    await dropMaster();
    if (vm?.running()) await vm.stop("SIGTERM", 5_000);
    rmSync(muxDir, { recursive: true, force: true });
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
    // Longer than ssh's own ConnectTimeout, so that a guest not yet answering is ssh's to report.
    const r = await sh("cat /proc/sys/kernel/random/boot_id", 30_000);
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
