/**
 * The only module that runs Ansible, and the one door values take into it. Ansible templates every
 * string it is handed (`{{ lookup('pipe', …) }}` in a value would run on the controller; a Go
 * template such as `{{.Time}}` would fail), so every string bake passes goes in marked `!unsafe`:
 * it arrives exactly as bake.yml wrote it.
 */
import { run } from "./exec.js";

/** Ansible extra vars as YAML (flow style, JSON quoting), every string value tagged `!unsafe`. */
export function unsafeExtraVars(value: unknown): string {
  const render = (v: unknown): string => {
    if (typeof v === "string") return `!unsafe ${JSON.stringify(v)}`;
    if (Array.isArray(v)) return `[${v.map(render).join(", ")}]`;
    if (v && typeof v === "object")
      return `{${Object.entries(v as Record<string, unknown>)
        .map(([k, x]) => `${JSON.stringify(k)}: ${render(x)}`)
        .join(", ")}}`;
    return JSON.stringify(v ?? null);
  };
  return `${render(value)}\n`;
}

/** `ansible-playbook` against this machine (connection local), with extra vars from a file. */
export function localPlaybookArgs(playbook: string, varsFile: string): string[] {
  return ["-i", "localhost,", "-c", "local", playbook, "--extra-vars", `@${varsFile}`];
}

export async function runLocalPlaybook(
  playbook: string,
  varsFile: string,
  options: { env: Record<string, string>; secrets: string[]; onLine: (l: string) => void },
): Promise<void> {
  await run("ansible-playbook", localPlaybookArgs(playbook, varsFile), {
    env: {
      ...options.env,
      ANSIBLE_NOCOLOR: "1",
      ANSIBLE_LOCALHOST_WARNING: "False",
      ANSIBLE_INVENTORY_UNPARSED_WARNING: "False",
      ANSIBLE_PYTHON_INTERPRETER: "/usr/bin/python3",
    },
    secrets: options.secrets,
    onLine: options.onLine,
  });
}

/** Ansible's version as `ansible-playbook --version` prints it (`ansible-playbook [core 2.14.18]`). */
export function parseAnsibleVersion(output: string): string | undefined {
  return /ansible-playbook \[core (\S+)\]|ansible-playbook (\S+)/.exec(output)?.slice(1).find(Boolean);
}

export async function ansibleVersion(): Promise<string | undefined> {
  return parseAnsibleVersion((await run("ansible-playbook", ["--version"], { timeoutMs: 15_000 })).stdout);
}
