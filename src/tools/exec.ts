/**
 * The one way bake starts a process: renders the command line for logs, redacts secrets from
 * everything it shows, and turns failures into ToolFailedError.
 */
import { BakeError, ToolFailedError } from "../errors.js";

export interface RunOptions {
  cwd?: string;
  env?: Record<string, string | undefined>;
  /** Values that must never be shown: replaced by *** in command lines, logs and errors. */
  secrets?: string[];
  /** Called with every line of stdout and stderr, already redacted. */
  onLine?: (line: string, stream: "stdout" | "stderr") => void;
  timeoutMs?: number;
  signal?: AbortSignal;
  /**
   * Run in a process group of its own and deliver an abort as one SIGINT to the whole group,
   * as Ctrl-C in a terminal does: the tool and its children (Packer's ansible-playbook) stop
   * together and the tool cleans up. SIGKILL follows after `graceMs`.
   */
  processGroup?: { graceMs: number };
  /** Written to the tool's stdin. */
  input?: string | Buffer;
  /** false: a non-zero exit, or a stop at `timeoutMs` (`timedOut`), is returned instead of thrown. */
  reject?: boolean;
  /** The message when the program is missing (default: "<file> is not installed: run make setup"). */
  notInstalled?: string;
}

export interface RunResult {
  stdout: string;
  stderr: string;
  exitCode?: number;
  /** With `reject: false`: the tool was stopped at `timeoutMs` (exitCode is then undefined). */
  timedOut?: boolean;
}

/**
 * The forms a secret takes in a tool's output: as it is, as Packer's machine-readable lines
 * escape it (`,` → `%!(PACKER_COMMA)`, newline → `\n`, carriage return → `\r`), JSON-escaped,
 * and, for a value of several lines (a PEM key, JSON), each of its lines of 8 characters or more,
 * since output is redacted a line at a time.
 */
export function secretForms(secret: string): string[] {
  const packer = secret.replace(/,/g, "%!(PACKER_COMMA)").replace(/\n/g, "\\n").replace(/\r/g, "\\r");
  const json = JSON.stringify(secret).slice(1, -1);
  const lines = secret.includes("\n") ? secret.split(/\r?\n/).filter((l) => l.trim().length >= 8) : [];
  return [...new Set([secret, packer, json, JSON.stringify(packer).slice(1, -1), ...lines])].sort(
    (a, b) => b.length - a.length,
  );
}

/** Shorter secrets are redacted only where they stand as a whole token, so that `ab` does not blank every "ab". */
export const SHORT_SECRET = 4;

/** Replaces every form of every secret with `***` (README: Secrets). */
export function redact(text: string, secrets: readonly string[] = []): string {
  let out = text;
  const forms = [...new Set(secrets.filter(Boolean).flatMap(secretForms))].sort((a, b) => b.length - a.length);
  for (const f of forms) {
    if (f.length >= SHORT_SECRET) out = out.split(f).join("***");
    else out = out.replace(new RegExp(`(?<![\\w-])${f.replace(/[.*+?^${}()|[\]\\]/g, "\\$&")}(?![\\w-])`, "g"), "***");
  }
  return out;
}

export function renderCommand(file: string, args: readonly string[]): string {
  return [file, ...args].map((a) => (/^[\w@%+=:,./-]+$/.test(a) ? a : `'${a.replace(/'/g, "'\\''")}'`)).join(" ");
}

/** Process groups started with `processGroup` that are still running. */
const liveGroups = new Set<number>();

/**
 * Kills every process group bake started and that still runs: the forced stop (a second signal),
 * after which bake exits at once, must not leave Packer or its ansible-playbook running on.
 * Returns how many groups it killed.
 */
export function killProcessGroups(): number {
  let killed = 0;
  for (const pid of liveGroups) if (signalGroup(pid, "SIGKILL")) killed++;
  liveGroups.clear();
  return killed;
}

export async function run(file: string, args: string[], options: RunOptions = {}): Promise<RunResult> {
  const secrets = options.secrets ?? [];
  const command = redact(renderCommand(file, args), secrets);
  // execa is loaded on first use: commands that start no process do not pay for it.
  const { execa } = await import("execa");
  const child = execa(file, args, {
    cwd: options.cwd,
    env: options.env,
    extendEnv: true,
    reject: false,
    all: false,
    timeout: options.timeoutMs,
    cancelSignal: options.processGroup ? undefined : options.signal,
    detached: Boolean(options.processGroup),
    forceKillAfterDelay: 30_000,
    killSignal: "SIGINT",
    lines: false,
    stripFinalNewline: true,
    ...(options.input !== undefined ? { input: options.input } : {}),
  });
  const tail: string[] = [];
  const collect = lineCollector(secrets, tail, options.onLine);
  child.stdout?.on("data", collect("stdout"));
  child.stderr?.on("data", collect("stderr"));
  const group = options.processGroup ? groupInterrupter(child.pid, options.processGroup.graceMs) : undefined;
  if (group && child.pid) liveGroups.add(child.pid);
  if (group && options.signal) {
    if (options.signal.aborted) group.interrupt();
    else options.signal.addEventListener("abort", group.interrupt, { once: true });
  }
  const result = await child;
  if (child.pid) liveGroups.delete(child.pid);
  group?.done();
  if (group) options.signal?.removeEventListener("abort", group.interrupt);
  if ((result as any).code === "ENOENT" || /ENOENT/.test(String((result as any).originalMessage ?? ""))) {
    throw new BakeError(options.notInstalled ?? `${file} is not installed: run make setup`);
  }
  const timedOut = Boolean(result.timedOut) && !options.signal?.aborted;
  if (result.failed && (options.reject !== false || (result.exitCode === undefined && !timedOut))) {
    throw new ToolFailedError({
      tool: file,
      exitCode: result.exitCode,
      signal: result.signal,
      command,
      stderrTail: redact(
        tail.length
          ? tail.join("\n")
          : String(result.stderr ?? "")
              .split("\n")
              .slice(-20)
              .join("\n"),
        secrets,
      ),
    });
  }
  return {
    stdout: redact(String(result.stdout ?? ""), secrets),
    stderr: redact(String(result.stderr ?? ""), secrets),
    exitCode: result.exitCode,
    ...(timedOut ? { timedOut } : {}),
  };
}

/** Splits a stream's chunks into lines, redacted; stderr's last 20 lines kept in `tail` for the error. */
function lineCollector(
  secrets: string[],
  tail: string[],
  onLine: RunOptions["onLine"],
): (stream: "stdout" | "stderr") => (chunk: Buffer) => void {
  const emit = (line: string, stream: "stdout" | "stderr") => {
    const clean = redact(line, secrets);
    if (stream === "stderr") {
      tail.push(clean);
      if (tail.length > 20) tail.shift();
    }
    onLine?.(clean, stream);
  };
  return (stream) => {
    let partial = "";
    return (chunk: Buffer) => {
      const text = partial + chunk.toString("utf8");
      const lines = text.split("\n");
      partial = lines.pop() ?? "";
      for (const l of lines) emit(l, stream);
    };
  };
}

/** An interrupt of a tool's whole process group: SIGINT, then SIGKILL after `graceMs` if it is still there. */
function groupInterrupter(pid: number | undefined, graceMs: number): { interrupt: () => void; done: () => void } {
  let interrupted = false;
  let forceKill: NodeJS.Timeout | undefined;
  return {
    interrupt: () => {
      if (!pid || interrupted) return;
      interrupted = true;
      signalGroup(pid, "SIGINT");
      forceKill = setTimeout(() => signalGroup(pid, "SIGKILL"), graceMs);
    },
    done: () => {
      if (forceKill) clearTimeout(forceKill);
    },
  };
}

/** Sends a signal to a process group bake started: whether the group was still there. */
function signalGroup(pid: number, signal: NodeJS.Signals): boolean {
  try {
    process.kill(-pid, signal);
    return true;
  } catch {
    return false; // already gone
  }
}

/**
 * The end of a process bake started in a group of its own (start, startPiped): the group no
 * longer bake's to kill, a missing program said plainly, and what it printed on stderr last.
 */
function watchGroup(
  child: Promise<{ exitCode?: number; signal?: string }> & { pid?: number },
  file: string,
  tail: string[],
): { exited: BackgroundProcess["exited"]; ended: () => boolean } {
  let ended = false;
  const exited = child.then((r) => {
    ended = true;
    if (child.pid) liveGroups.delete(child.pid);
    if ((r as any).code === "ENOENT") throw new BakeError(`${file} is not installed: run make setup`);
    return { exitCode: r.exitCode, signal: r.signal, stderrTail: tail.join("\n") };
  });
  return { exited, ended: () => ended };
}

/** A process bake started and that runs beside it (a VM, an SSH tunnel) until it is stopped. */
export interface BackgroundProcess {
  pid: number;
  /** Settles when the process has ended, with what it printed on stderr last. */
  exited: Promise<{ exitCode?: number; signal?: string; stderrTail: string }>;
  running(): boolean;
  /** Sends the signal to its process group, then SIGKILL after graceMs; resolves once it ended. */
  stop(signal?: NodeJS.Signals, graceMs?: number): Promise<void>;
}

/**
 * Starts a process in a process group of its own that outlives this call: a forced stop of bake
 * (killProcessGroups) kills it with everything else bake started.
 */
export async function start(
  file: string,
  args: string[],
  options: { cwd?: string; secrets?: string[]; onLine?: (line: string) => void } = {},
): Promise<BackgroundProcess> {
  const { execa } = await import("execa");
  const child = execa(file, args, {
    cwd: options.cwd,
    reject: false,
    detached: true,
    stdin: "ignore",
    stripFinalNewline: true,
    buffer: false,
  });
  const tail: string[] = [];
  const onLine = options.onLine;
  child.stderr?.on("data", lineCollector(options.secrets ?? [], tail, onLine && ((l) => onLine(l)))("stderr"));
  child.stdout?.on("data", () => undefined);
  const { exited, ended } = watchGroup(child, file, tail);
  // The spawn itself failing (ENOENT) rejects at once.
  await Promise.race([exited, new Promise((r) => setTimeout(r, 50))]);
  if (!child.pid) throw new BakeError(`${file} could not be started`);
  const pid = child.pid;
  liveGroups.add(pid);
  return {
    pid,
    exited,
    running: () => !ended(),
    stop: async (signal = "SIGTERM", graceMs = 10_000) => {
      if (ended()) return;
      signalGroup(pid, signal);
      const timer = setTimeout(() => signalGroup(pid, "SIGKILL"), graceMs);
      await exited.catch(() => undefined);
      clearTimeout(timer);
    },
  };
}

/** A process whose stdin and stdout are one byte stream (ssh running `docker system dial-stdio`). */
export interface PipedProcess {
  stdin: NodeJS.WritableStream;
  stdout: NodeJS.ReadableStream;
  /** Settles when the process has ended, with what it printed on stderr last. */
  exited: Promise<{ exitCode?: number; signal?: string; stderrTail: string }>;
  /** Ends it (SIGTERM to its process group); a no-op once it ended. */
  kill(): void;
}

/**
 * Starts a process whose stdin and stdout carry a stream, in a process group of its own (a forced
 * stop of bake kills it with the rest). Its stderr is kept, redacted, for the error it explains.
 */
export async function startPiped(
  file: string,
  args: string[],
  options: { secrets?: string[] } = {},
): Promise<PipedProcess> {
  const { execa } = await import("execa");
  const child = execa(file, args, {
    reject: false,
    detached: true,
    stdin: "pipe",
    stdout: "pipe",
    stderr: "pipe",
    buffer: false,
    encoding: "buffer",
  });
  const tail: string[] = [];
  child.stderr?.on("data", lineCollector(options.secrets ?? [], tail, undefined)("stderr"));
  const pid = child.pid;
  if (pid) liveGroups.add(pid);
  const { exited, ended } = watchGroup(child, file, tail);
  return {
    stdin: child.stdin!,
    stdout: child.stdout!,
    exited,
    kill: () => {
      if (!ended() && pid) signalGroup(pid, "SIGTERM");
    },
  };
}
