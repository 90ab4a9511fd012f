/** The only module that runs Packer. */
import { run } from "./exec.js";
import { BakeError } from "../errors.js";
import { artifactsOf, parseMachineLine, uiText, type Artifact, type MachineLine } from "./packer-output.js";

export interface PackerVersion {
  major: number;
  minor: number;
  patch: number;
  text: string;
}

export function parseVersion(output: string): PackerVersion {
  const m = /(\d+)\.(\d+)\.(\d+)/.exec(output);
  if (!m) throw new BakeError(`cannot read Packer's version from "${output.trim()}"`);
  return { major: +m[1], minor: +m[2], patch: +m[3], text: `${m[1]}.${m[2]}.${m[3]}` };
}

/** Packer ≥ 1.7 wants plugins declared in required_plugins; 1.6 does not know the block. */
export function needsRequiredPlugins(v: PackerVersion): boolean {
  return v.major > 1 || (v.major === 1 && v.minor >= 7);
}

export function buildArgs(dir: string, options: { force?: boolean } = {}): string[] {
  return ["build", "-machine-readable", "-color=false", ...(options.force ? ["-force"] : []), dir];
}

export interface PackerTool {
  version(): Promise<PackerVersion>;
  validate(dir: string, env?: Record<string, string | undefined>): Promise<void>;
  fmt(dir: string): Promise<void>;
  build(
    dir: string,
    options: {
      cwd?: string;
      env?: Record<string, string | undefined>;
      secrets: string[];
      force?: boolean;
      signal?: AbortSignal;
      onLine?: (text: string) => void;
      onRaw?: (line: string) => void;
    },
  ): Promise<Artifact[]>;
}

export function packerTool(): PackerTool {
  return {
    async version() {
      return parseVersion((await run("packer", ["version"], { timeoutMs: 20_000 })).stdout);
    },
    async validate(dir, env) {
      await run("packer", ["validate", dir], { env, timeoutMs: 60_000 });
    },
    async fmt(dir) {
      await run("packer", ["fmt", dir], { timeoutMs: 20_000 });
    },
    async build(dir, options) {
      const lines: MachineLine[] = [];
      await run("packer", buildArgs(dir, options), {
        cwd: options.cwd,
        env: options.env,
        secrets: options.secrets,
        signal: options.signal,
        // One SIGINT to Packer and its ansible-playbook: Packer cancels, removes its build
        // container or instance, and exits. A second SIGINT would make it quit without cleaning.
        processGroup: { graceMs: 120_000 },
        onLine: (raw, stream) => {
          options.onRaw?.(raw);
          const line = stream === "stdout" ? parseMachineLine(raw) : undefined;
          if (!line) return;
          lines.push(line);
          const text = uiText(line);
          if (text) for (const t of text.split("\n")) if (t.trim()) options.onLine?.(t);
        },
      });
      return artifactsOf(lines);
    },
  };
}
