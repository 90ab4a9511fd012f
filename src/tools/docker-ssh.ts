/**
 * The engine at `ssh://[user@]host[:port]`, reached as the docker CLI reaches it: every connection
 * is one `ssh … host docker system dial-stdio`, whose stdin and stdout are the engine's socket on
 * the far side. bake's HTTP, dockerode and BuildKit sessions all speak plain HTTP on a socket, so
 * a Unix socket in a folder only this user can open stands for the engine: each connection made
 * to it starts one ssh and joins the two. The user's ssh configuration (keys, agent, known_hosts,
 * ProxyJump) applies as it does to the CLI; BatchMode stops a prompt from hanging a build.
 */
import { mkdtempSync, rmSync } from "node:fs";
import { createServer, type Socket } from "node:net";
import { tmpdir } from "node:os";
import path from "node:path";
import { UsageError } from "../errors.js";
import { startPiped } from "./exec.js";

/** `ssh://user@host:port` → ssh's arguments, as the CLI's connection helper builds them. */
export function dialStdioArgs(host: string): string[] {
  let url: URL;
  try {
    url = new URL(host);
  } catch {
    throw new UsageError(`DOCKER_HOST=${host} is not a valid ssh:// address (ssh://[user@]host[:port])`);
  }
  if (url.protocol !== "ssh:" || !url.hostname)
    throw new UsageError(`DOCKER_HOST=${host} is not a valid ssh:// address (ssh://[user@]host[:port])`);
  if (url.pathname && url.pathname !== "/")
    throw new UsageError(`DOCKER_HOST=${host}: an ssh:// address takes no path (ssh://[user@]host[:port])`);
  return [
    "-o",
    "ConnectTimeout=30",
    "-o",
    "BatchMode=yes",
    "-T",
    ...(url.username ? ["-l", decodeURIComponent(url.username)] : []),
    ...(url.port ? ["-p", url.port] : []),
    "--",
    url.hostname.replace(/^\[|\]$/g, ""),
    "docker",
    "system",
    "dial-stdio",
  ];
}

/** What ssh's last words mean, and what to fix. */
const SSH_FAILURES: [RegExp, string][] = [
  [
    /Permission denied/i,
    "the ssh server refused bake's key: add the public key to the user's authorized_keys there, or load the key into ssh-agent",
  ],
  [
    /Host key verification failed|REMOTE HOST IDENTIFICATION HAS CHANGED/i,
    "the engine host's key is not the one known_hosts holds for it: check it, then connect once with ssh to record it",
  ],
  [
    /Connection refused|Connection timed out|No route to host|Could not resolve|Name or service not known|Network is unreachable/i,
    "ssh could not connect: check the host and port in DOCKER_HOST, and that sshd runs there",
  ],
  [
    /docker: (command )?not found|docker: No such file/i,
    "the remote user cannot run docker: install the docker CLI on the engine's host",
  ],
  [
    /Cannot connect to the Docker daemon|permission denied while trying to connect/i,
    "docker on the engine's host cannot reach its engine: start it, or give the ssh user access to its socket (the docker group)",
  ],
];

/** One line: ssh's failure and its fix, from what ssh printed last. */
export function describeSshFailure(stderrTail: string): string {
  const lines = stderrTail
    .split("\n")
    .map((l) => l.trim())
    .filter(Boolean);
  const found = SSH_FAILURES.find(([pattern]) => pattern.test(stderrTail));
  const said = lines.at(-1) ?? "ssh ended without a word";
  return found ? `${found[1]} (ssh: ${said})` : `ssh ended: ${said}`;
}

interface Dialer {
  socketPath: string;
  /** What the last ssh that failed printed, for the error a user sees. */
  lastFailure?: string;
}

let dialer: Dialer | undefined;

/**
 * The Unix socket that stands for the engine at `host` (started on first use, once per process):
 * bound before this returns, so the first connection finds it; it does not keep bake running.
 */
export function sshEngineSocket(host: string): string {
  if (dialer) return dialer.socketPath;
  const args = dialStdioArgs(host);
  const dir = mkdtempSync(path.join(tmpdir(), "bake-ssh-"));
  const current: Dialer = { socketPath: path.join(dir, "engine.sock") };
  const server = createServer((client) => void join(client, args, current));
  server.on("error", () => undefined);
  server.listen(current.socketPath);
  server.unref();
  process.once("exit", () => {
    server.close();
    rmSync(dir, { recursive: true, force: true });
  });
  dialer = current;
  return current.socketPath;
}

/** The failure the last ssh reported, when one did (for describeDockerError). */
export function lastSshFailure(): string | undefined {
  return dialer?.lastFailure;
}

async function join(client: Socket, args: string[], state: Dialer): Promise<void> {
  let ssh: Awaited<ReturnType<typeof startPiped>>;
  try {
    ssh = await startPiped("ssh", args);
  } catch (e) {
    state.lastFailure = (e as Error).message;
    client.destroy();
    return;
  }
  client.pipe(ssh.stdin);
  // The client's end waits for ssh's: a failed ssh is recorded before the client sees its
  // connection drop, so the error it raises can say why.
  ssh.stdout.pipe(client, { end: false });
  // Writing to an ssh that died fails (EPIPE), often before its exit is known: the exit below ends
  // the client's connection, after recording why (closing it here lost the reason under load).
  ssh.stdin.on("error", () => undefined);
  client.on("error", () => ssh.kill());
  // The connection is done when the client closes it: ssh is not needed past that.
  client.on("close", () => ssh.kill());
  const ended = await ssh.exited.catch((e: Error) => ({ exitCode: 255, signal: undefined, stderrTail: e.message }));
  if (ended.exitCode && !ended.signal) {
    state.lastFailure = describeSshFailure(ended.stderrTail);
    client.destroy();
  } else client.end();
}
