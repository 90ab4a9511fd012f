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
  input?: string;
  /** false: a non-zero exit is returned in `exitCode` instead of thrown. */
  reject?: boolean;
  /** The message when the program is missing (default: "<file> is not installed: run make setup"). */
  notInstalled?: string;
}

export interface RunResult {
  stdout: string;
  stderr: string;
  exitCode?: number;
}

export function redact(text: string, secrets: readonly string[] = []): string {
  let out = text;
  for (const s of secrets) if (s && s.length >= 4) out = out.split(s).join("***");
  return out;
}

export function renderCommand(file: string, args: readonly string[]): string {
  return [file, ...args].map((a) => (/^[\w@%+=:,./-]+$/.test(a) ? a : `'${a.replace(/'/g, "'\\''")}'`)).join(" ");
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
  const collect = (stream: "stdout" | "stderr") => {
    let partial = "";
    return (chunk: Buffer) => {
      const text = partial + chunk.toString("utf8");
      const lines = text.split("\n");
      partial = lines.pop() ?? "";
      for (const l of lines) emit(l, stream);
    };
  };
  const emit = (line: string, stream: "stdout" | "stderr") => {
    const clean = redact(line, secrets);
    if (stream === "stderr") {
      tail.push(clean);
      if (tail.length > 20) tail.shift();
    }
    options.onLine?.(clean, stream);
  };
  child.stdout?.on("data", collect("stdout"));
  child.stderr?.on("data", collect("stderr"));
  let interrupted = false;
  let forceKill: NodeJS.Timeout | undefined;
  const interruptGroup = () => {
    if (!child.pid || interrupted) return;
    interrupted = true;
    try {
      process.kill(-child.pid, "SIGINT");
    } catch {
      /* already gone */
    }
    forceKill = setTimeout(() => {
      try {
        process.kill(-child.pid!, "SIGKILL");
      } catch {
        /* already gone */
      }
    }, options.processGroup!.graceMs);
  };
  if (options.processGroup && options.signal) {
    if (options.signal.aborted) interruptGroup();
    else options.signal.addEventListener("abort", interruptGroup, { once: true });
  }
  const result = await child;
  if (forceKill) clearTimeout(forceKill);
  options.signal?.removeEventListener("abort", interruptGroup);
  if ((result as any).code === "ENOENT" || /ENOENT/.test(String((result as any).originalMessage ?? ""))) {
    throw new BakeError(options.notInstalled ?? `${file} is not installed: run make setup`);
  }
  if (result.failed && (options.reject !== false || result.exitCode === undefined)) {
    throw new ToolFailedError({
      tool: file,
      exitCode: result.exitCode,
      signal: result.signal,
      command,
      stderrTail: redact(tail.length ? tail.join("\n") : String(result.stderr ?? "").split("\n").slice(-20).join("\n"), secrets),
    });
  }
  return { stdout: redact(String(result.stdout ?? ""), secrets), stderr: redact(String(result.stderr ?? ""), secrets), exitCode: result.exitCode };
}
