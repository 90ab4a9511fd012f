/** Base of every error bake knows how to explain. Only src/cli.ts turns these into exit codes. */
export class BakeError extends Error {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = new.target.name;
  }
}

export interface SourcePosition {
  file: string;
  line: number;
  column: number;
}

/** A problem in bake.yml (or a file it names). Always carries where it is. */
export class ConfigError extends BakeError {
  readonly file: string;
  readonly line: number;
  readonly column: number;
  readonly hint?: string;
  constructor(position: SourcePosition, message: string, hint?: string) {
    super(message);
    this.file = position.file;
    this.line = position.line;
    this.column = position.column;
    this.hint = hint;
  }
  /** `bake.yml:12:5: message (hint)` — the one line a user sees. */
  describe(): string {
    return `${this.file}:${this.line}:${this.column}: ${this.message}${this.hint ? `\n  fix: ${this.hint}` : ""}`;
  }
}

/** Several configuration problems found at once; the first decides the position. */
export class ConfigErrors extends BakeError {
  readonly errors: ConfigError[];
  constructor(errors: ConfigError[]) {
    super(errors.map((e) => e.describe()).join("\n"));
    this.errors = errors;
  }
}

/** Bad flags or arguments on the command line. */
export class UsageError extends BakeError {}

/**
 * The Docker engine could not be reached, or refused bake (TLS, ssh): the environment failed, not
 * the command line or bake.yml (exit 1). The message names the transport and what to fix.
 */
export class EngineUnreachableError extends BakeError {}

export class ToolFailedError extends BakeError {
  readonly tool: string;
  readonly exitCode?: number;
  readonly signal?: string;
  readonly command: string;
  readonly stderrTail: string;
  constructor(fields: {
    tool: string;
    exitCode?: number;
    signal?: string;
    command: string;
    stderrTail: string;
    message?: string;
  }) {
    super(
      fields.message ??
        `${fields.tool} failed${fields.exitCode !== undefined ? ` (exit ${fields.exitCode})` : ""}${fields.signal ? ` (${fields.signal})` : ""}: ${fields.command}`,
    );
    this.tool = fields.tool;
    this.exitCode = fields.exitCode;
    this.signal = fields.signal;
    this.command = fields.command;
    this.stderrTail = fields.stderrTail;
  }
}

/** A build of one node failed (the build ran; its output says why). */
export class BuildFailedError extends BakeError {
  readonly node: string;
  readonly detail: string;
  constructor(node: string, message: string, detail = "") {
    super(message);
    this.node = node;
    this.detail = detail;
  }
}

/** A boot test that failed: the checks it ran, passed or not (the report shows them all). */
export class BootTestFailedError extends BuildFailedError {
  readonly checks: { name: string; ok: boolean; detail: string }[];
  constructor(node: string, checks: { name: string; ok: boolean; detail: string }[]) {
    const failed = checks.filter((c) => !c.ok);
    super(
      node,
      `${node}: boot test failed: ${failed.map((c) => c.name).join(", ")}`,
      failed.map((c) => `${c.name}: ${c.detail}`).join("\n"),
    );
    this.checks = checks;
  }
}

export class InterruptedError extends BakeError {
  constructor(signal = "SIGINT") {
    super(`interrupted by ${signal}`);
  }
}

/** The InterruptedError an aborted signal carries (naming the signal that stopped bake), or a new one. */
export function interruption(signal?: AbortSignal): InterruptedError {
  return signal?.reason instanceof InterruptedError ? signal.reason : new InterruptedError();
}

export const EXIT = { ok: 0, failed: 1, usage: 2, interrupted: 130 } as const;

export function exitCodeFor(error: unknown): number {
  if (error instanceof ConfigError || error instanceof ConfigErrors || error instanceof UsageError) return EXIT.usage;
  if (error instanceof InterruptedError) return EXIT.interrupted;
  return EXIT.failed;
}
