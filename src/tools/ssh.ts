/**
 * The only module that runs OpenSSH's client tools: a key pair for one bake (ssh-keygen), commands
 * on a VM host through its forwarded port on 127.0.0.1 (ssh), and port forwards to the host's own
 * loopback (ssh -L), which is where its services publish their ports.
 */
import { existsSync, readFileSync, rmSync } from "node:fs";
import { run, start, type BackgroundProcess } from "./exec.js";

export interface SshTarget {
  port: number;
  /** The private key file. */
  key: string;
  user: string;
  /** A known_hosts file that pins the host's ed25519 key under `hostKeyAlias`: no other host is talked to. */
  knownHosts: string;
  hostKeyAlias: string;
  /**
   * A master connection's socket (`masterConnection`): commands ride it as sessions of one
   * connection (no new sshd process, key exchange or login each); while no master answers on it,
   * ssh connects on its own.
   */
  controlPath?: string;
}

const NOT_INSTALLED = "ssh is not installed (Debian: openssh-client): run make setup";

/** The host key types sshd makes at first boot (`ssh-keygen -A`), each at ssh-keygen's default size. */
export const HOST_KEY_TYPES = ["rsa", "ecdsa", "ed25519"] as const;

/** Makes a key pair (ed25519 unless told) without a passphrase at `file` and `file.pub`; returns the public key. */
export async function generateKey(
  file: string,
  comment: string,
  type: (typeof HOST_KEY_TYPES)[number] = "ed25519",
): Promise<string> {
  await run("ssh-keygen", ["-q", "-t", type, "-N", "", "-C", comment, "-f", file], {
    notInstalled: NOT_INSTALLED,
  });
  return readFileSync(`${file}.pub`, "utf8");
}

/** The known_hosts line that pins a public host key (`ssh-ed25519 AAAA… comment`) under an alias. */
export function knownHostsLine(alias: string, publicKey: string): string {
  const [type, blob] = publicKey.trim().split(/\s+/);
  if (!type || !blob) throw new Error(`not an OpenSSH public key: ${publicKey.slice(0, 40)}`);
  return `${alias} ${type} ${blob}\n`;
}

/**
 * Options for a host whose ed25519 key bake made and pinned: only that key is accepted (a process
 * that took the forwarded port is refused, never sent a command), the user's own known_hosts is
 * neither read nor written, and a dead connection ends within seconds.
 */
export function sshOptions(t: SshTarget): string[] {
  return [
    "-o",
    "BatchMode=yes",
    "-o",
    "StrictHostKeyChecking=yes",
    "-o",
    `UserKnownHostsFile=${t.knownHosts}`,
    "-o",
    "GlobalKnownHostsFile=/dev/null",
    "-o",
    `HostKeyAlias=${t.hostKeyAlias}`,
    "-o",
    "HostKeyAlgorithms=ssh-ed25519",
    "-o",
    "LogLevel=ERROR",
    "-o",
    // An emulated guest under load can take more than 5 s to send its banner (sshd re-executes
    // itself for every connection): ssh gave up "during banner exchange" with the guest up.
    "ConnectTimeout=15",
    "-o",
    "ServerAliveInterval=5",
    "-o",
    "ServerAliveCountMax=3",
    "-o",
    "IdentitiesOnly=yes",
    "-i",
    t.key,
    "-p",
    String(t.port),
  ];
}

/** `ssh … user@127.0.0.1 -- command`: the command is one shell line on the host. */
export function sshArgs(t: SshTarget, command: string): string[] {
  const shared = t.controlPath ? ["-o", "ControlMaster=no", "-o", `ControlPath=${t.controlPath}`] : [];
  return [...sshOptions(t), ...shared, `${t.user}@127.0.0.1`, "--", command];
}

/** `ssh -M -N`: the master connection whose socket is `controlPath`, in the foreground (bake stops it). */
export function masterArgs(t: SshTarget, controlPath: string): string[] {
  return [
    ...sshOptions(t),
    "-M",
    "-N",
    "-o",
    `ControlPath=${controlPath}`,
    "-o",
    "ControlPersist=no",
    `${t.user}@127.0.0.1`,
  ];
}

/**
 * Opens a master connection to the host and waits (up to `waitMs`) for its socket: commands with
 * `controlPath` set then share it. Ends when the connection does (the host reboots or stops) or
 * when stopped; a master that did not come up is stopped, and commands connect on their own.
 */
export async function masterConnection(
  t: SshTarget,
  controlPath: string,
  waitMs = 20_000,
): Promise<BackgroundProcess | undefined> {
  rmSync(controlPath, { force: true }); // a socket left by a master that was killed
  const master = await start("ssh", masterArgs(t, controlPath));
  const deadline = Date.now() + waitMs;
  while (master.running() && !existsSync(controlPath) && Date.now() < deadline)
    await new Promise((r) => setTimeout(r, 200));
  if (master.running() && existsSync(controlPath)) return master;
  await master.stop("SIGTERM", 2_000);
  return undefined;
}

/** Runs a shell line on the host: its exit code (255: ssh itself failed) and output. */
export async function sshRun(
  t: SshTarget,
  command: string,
  options: { input?: string | Buffer; timeoutMs?: number; signal?: AbortSignal } = {},
): Promise<{ code: number; out: string }> {
  const timeoutMs = options.timeoutMs ?? 120_000;
  const r = await run("ssh", sshArgs(t, command), {
    input: options.input,
    timeoutMs,
    signal: options.signal,
    reject: false,
    notInstalled: NOT_INSTALLED,
  });
  const stopped = r.timedOut ? `ssh stopped: no end within ${timeoutMs / 1000} s` : "";
  return { code: r.exitCode ?? 255, out: [r.stdout, r.stderr, stopped].filter(Boolean).join("\n").trim() };
}

/**
 * `ssh -N -L SOCKET:127.0.0.1:remote`: the host's loopback port answers on a Unix socket of this
 * machine, in a folder only this user reads: no local port to pick, so none another process can take first.
 */
export function forwardArgs(t: SshTarget, socket: string, remote: number): string[] {
  return [
    ...sshOptions(t),
    "-N",
    "-o",
    "ExitOnForwardFailure=yes",
    "-o",
    "StreamLocalBindUnlink=yes",
    "-L",
    `${socket}:127.0.0.1:${remote}`,
    `${t.user}@127.0.0.1`,
  ];
}

export async function forwardPort(t: SshTarget, local: string, remote: number): Promise<BackgroundProcess> {
  return start("ssh", forwardArgs(t, local, remote));
}
