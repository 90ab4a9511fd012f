/**
 * Everything Ansible can read for an AMI's playbook, for the AMI's key:
 * - the playbook's whole folder (group_vars, host_vars, files, templates, tasks, roles, …) less
 *   what a `.bakeignore` there excludes (Docker's pattern syntax) and bake's own state;
 * - the ansible.cfg the bake runs Ansible with (ansibleConfigFile) and every roles_path it or
 *   ANSIBLE_ROLES_PATH names;
 * - the roles the playbook uses wherever Ansible finds them, and the files it names outside
 *   its folder (import_playbook, include_tasks/import_tasks, vars_files, include_vars).
 */
import { existsSync, readFileSync, readdirSync, realpathSync, statSync } from "node:fs";
import { homedir } from "node:os";
import path from "node:path";
import { LineCounter, parse as parseYaml, parseDocument, visit } from "yaml";
import { ConfigError } from "../errors.js";
import { SourceMap } from "../config/source-map.js";
import { parseDockerignore, patternMatcher } from "./context-files.js";
import { BAKE_ROLES, PROVISIONING_DIR } from "./provisioning.js";

/** One file Ansible may read: `name` is how keys and `bake plan` call it (stable across machines). */
export interface AnsibleInput {
  name: string;
  file: string;
}

/** The ignore file in a playbook's folder: what it names is not an input of the AMI's key. */
export const PLAYBOOK_IGNORE = ".bakeignore";
/** Never inputs: bake's own state and version control, which change on every run or commit. */
const ALWAYS_IGNORED = [".git", ".bake", "bake-manifest.json", "bake-provenance.intoto.jsonl", "*.retry"];

/**
 * The ansible.cfg Ansible reads when bake runs it, the first that exists: ANSIBLE_CONFIG, the
 * playbook's folder, the project's folder (Packer runs there, so it is Ansible's working
 * folder), ~/.ansible.cfg, /etc/ansible/ansible.cfg. bake names the chosen one in
 * ANSIBLE_CONFIG for the run, so Ansible reads the file the key covers.
 */
export function ansibleConfigFile(
  playbook: string,
  projectDir: string,
  env: NodeJS.ProcessEnv = process.env,
): string | undefined {
  const fromEnv = env.ANSIBLE_CONFIG ? path.resolve(projectDir, expandHome(env.ANSIBLE_CONFIG, env)) : undefined;
  const candidates = [
    fromEnv && isDir(fromEnv) ? path.join(fromEnv, "ansible.cfg") : fromEnv,
    path.join(path.dirname(playbook), "ansible.cfg"),
    path.join(projectDir, "ansible.cfg"),
    path.join(env.HOME ?? homedir(), ".ansible.cfg"),
    "/etc/ansible/ansible.cfg",
  ];
  return candidates.find((c): c is string => Boolean(c) && isFile(c!));
}

/**
 * roles_path from ANSIBLE_ROLES_PATH (relative to Ansible's working folder, the project's), else
 * from the config file's [defaults] (relative to that file).
 */
export function configuredRolesPaths(
  configFile: string | undefined,
  projectDir: string,
  env: NodeJS.ProcessEnv = process.env,
): string[] {
  let value = env.ANSIBLE_ROLES_PATH;
  let base = projectDir;
  if (value === undefined && configFile) {
    value = iniValue(readFileSync(configFile, "utf8"), "defaults", "roles_path");
    base = path.dirname(configFile);
  }
  if (!value) return [];
  return value
    .split(":")
    .filter(Boolean)
    .map((p) => path.resolve(base, expandHome(p, env)));
}

/** A key of an INI section, as Python's configparser reads it (`=` or `:`, `#`/`;` comments). */
export function iniValue(text: string, section: string, key: string): string | undefined {
  let current = "";
  let found: string | undefined;
  for (const raw of text.split(/\r?\n/)) {
    const line = raw.trim();
    if (!line || line.startsWith("#") || line.startsWith(";")) continue;
    const head = /^\[(.+)\]$/.exec(line);
    if (head) current = head[1].trim();
    else if (current === section) {
      const m = /^([^=:]+?)\s*[=:]\s*(.*)$/.exec(line);
      if (m && m[1] === key) found = m[2].trim();
    }
  }
  return found;
}

/** Every file Ansible may read for the playbook, sorted by name. */
export function ansibleInputs(
  playbook: string,
  projectDir: string,
  env: NodeJS.ProcessEnv = process.env,
): AnsibleInput[] {
  const folder = path.dirname(playbook);
  const ignorePatterns = [...ALWAYS_IGNORED, ...readIgnore(path.join(folder, PLAYBOOK_IGNORE))];
  const config = ansibleConfigFile(playbook, projectDir, env);
  const rolesPaths = configuredRolesPaths(config, projectDir, env);
  // Roles used by name that live outside the folder and the configured paths (Ansible's defaults).
  const home = env.HOME ?? homedir();
  const scan = new PlaybookScan(folder, projectDir, [
    path.join(folder, "roles"),
    ...(rolesPaths.length
      ? rolesPaths
      : [path.join(home, ".ansible/roles"), "/usr/share/ansible/roles", "/etc/ansible/roles"]),
    folder,
  ]);
  for (const f of walk(folder, ignorePatterns)) scan.add(f);
  if (config) scan.add(config);
  for (const dir of rolesPaths) for (const f of walk(dir, ALWAYS_IGNORED)) scan.add(f);
  scan.seenFiles.add(playbook);
  scan.playbook(playbook);
  return [...scan.inputs]
    .map(([name, file]) => ({ name, file }))
    .sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
}

/** What a playbook reaches, followed through its plays, tasks, roles and their dependencies. */
class PlaybookScan {
  /** By the name the key gives it: relative to the playbook's folder, else to the project. */
  readonly inputs = new Map<string, string>();
  readonly seenFiles = new Set<string>();
  private readonly seenRoles = new Set<string>();

  constructor(
    private readonly folder: string,
    private readonly projectDir: string,
    private readonly searchRoles: string[],
  ) {}

  add(file: string): void {
    const inFolder = path.relative(this.folder, file);
    if (!inFolder.startsWith("..")) return void this.inputs.set(toPosix(inFolder), file);
    const inProject = path.relative(this.projectDir, file);
    this.inputs.set(inProject.startsWith("..") ? file : toPosix(inProject), file);
  }

  playbook(file: string): void {
    const plays = readYaml(file);
    if (!Array.isArray(plays)) return;
    const from = path.dirname(file);
    for (const play of plays) {
      if (!play || typeof play !== "object") continue;
      const imported = this.named(play.import_playbook ?? play["ansible.builtin.import_playbook"], from);
      if (imported) this.playbook(imported);
      for (const v of [play.vars_files ?? []].flat()) for (const f of [v].flat()) this.named(f, from);
      for (const r of play.roles ?? []) this.role(typeof r === "string" ? r : (r?.role ?? r?.name), file);
      for (const section of ["pre_tasks", "tasks", "post_tasks", "handlers"]) this.tasks(play[section], from, file);
    }
  }

  private role(name: unknown, from?: string): void {
    if (typeof name !== "string" || /[{}]/.test(name) || this.seenRoles.has(name)) return;
    this.seenRoles.add(name);
    const dir = path.isAbsolute(name) ? name : this.searchRoles.map((r) => path.join(r, name)).find(isDir);
    if (!dir && from && (BAKE_ROLES as readonly string[]).includes(name))
      throw bakeRoleNamed(from, name, this.projectDir);
    if (!dir) return;
    for (const f of walk(dir, ALWAYS_IGNORED)) {
      this.add(f);
      if (
        /\.ya?ml$/.test(f) &&
        (f.includes(`${path.sep}tasks${path.sep}`) || f.includes(`${path.sep}handlers${path.sep}`))
      )
        this.tasks(readYaml(f), path.dirname(f), f);
    }
    for (const dep of roleDependencies(path.join(dir, "meta", "main.yml"), this.projectDir)) this.role(dep);
  }

  /** A file named in a task or play: relative to the file that names it, or to the playbook. */
  private named(value: unknown, from: string): string | undefined {
    const ref = typeof value === "string" ? value : (value as any)?.file;
    if (typeof ref !== "string" || /[{}]/.test(ref)) return undefined;
    const file = [path.resolve(from, ref), path.resolve(this.folder, ref)].find(isFile);
    if (file && !this.seenFiles.has(file)) {
      this.seenFiles.add(file);
      this.add(file);
      return file;
    }
    return undefined;
  }

  private tasks(tasks: unknown, from: string, fileOf?: string): void {
    if (!Array.isArray(tasks)) return;
    for (const t of tasks) {
      if (!t || typeof t !== "object") continue;
      for (const [k, v] of Object.entries(t)) {
        const verb = k.replace(/^ansible\.(builtin|legacy)\./, "");
        if (verb === "include_role" || verb === "import_role") this.role((v as any)?.name, fileOf);
        else if (verb === "include_tasks" || verb === "import_tasks" || verb === "include") {
          const file = this.named(v, from);
          if (file) this.tasks(readYaml(file), path.dirname(file), file);
        } else if (verb === "include_vars") this.named(v, from);
        else if (k === "block" || k === "rescue" || k === "always") this.tasks(v, from, fileOf);
      }
    }
  }
}

/**
 * Files under `dir` that `patterns` keep (Docker's syntax, `!` exceptions), following links
 * as Ansible does; a folder reached twice through links is walked once.
 */
function walk(dir: string, patterns: string[]): string[] {
  const ignored = patternMatcher(patterns);
  const hasExceptions = patterns.some((p) => p.startsWith("!"));
  const out: string[] = [];
  // bake's own provisioning is an input of its own (provisioning.ts), even where a project's
  // folder happens to hold bake's package (this repository's reference pipeline does).
  const seen = new Set<string>(existsSync(PROVISIONING_DIR) ? [realpathSync(PROVISIONING_DIR)] : []);
  const visit = (rel: string) => {
    const abs = rel ? path.join(dir, rel) : dir;
    let real: string;
    try {
      real = realpathSync(abs);
    } catch {
      return; // a dangling link: nothing Ansible could read
    }
    if (seen.has(real)) return;
    seen.add(real);
    for (const name of readdirSync(abs).sort()) {
      const child = rel ? `${rel}/${name}` : name;
      const skip = ignored(child);
      const st = statSync(path.join(abs, name), { throwIfNoEntry: false });
      if (!st) continue;
      if (st.isDirectory()) {
        if (!skip || hasExceptions) visit(child);
      } else if (st.isFile() && !skip) out.push(path.join(dir, child));
    }
  };
  if (isDir(dir)) visit("");
  return out;
}

/**
 * The roles a role's meta/main.yml depends on. One that names no role (Ansible fails on it
 * later, mid-bake) is a config error at its line.
 */
export function roleDependencies(metaFile: string, projectDir: string): string[] {
  let text: string;
  try {
    text = readFileSync(metaFile, "utf8");
  } catch {
    return [];
  }
  const lines = new LineCounter();
  const doc = parseDocument(text, { lineCounter: lines });
  const map = new SourceMap(path.relative(projectDir, metaFile) || metaFile, doc, lines);
  let meta: any;
  try {
    meta = doc.errors.length ? undefined : doc.toJS();
  } catch (e) {
    throw new ConfigError(
      map.at(0),
      `cannot read ${map.file}: ${(e as Error).message.split("\n")[0]}`,
      "write the values out instead of nesting aliases",
    );
  }
  const deps: unknown = meta?.dependencies ?? [];
  if (!Array.isArray(deps))
    throw new ConfigError(
      map.locate(["dependencies"]),
      "dependencies: must be a list of roles",
      "write dependencies: [{ role: <name> }]",
    );
  return deps.map((dep, i) => {
    const name = typeof dep === "string" ? dep : (dep?.role ?? dep?.name);
    if (typeof name !== "string" || !name)
      throw new ConfigError(
        map.locate(["dependencies", i]),
        "a role dependency names no role",
        "write - role: <name>, or the role's name as a string",
      );
    return name;
  });
}

/**
 * A playbook that names one of bake's own roles, which no longer come with a project: bake runs
 * them itself, before and after the playbook. A config error at the line that names it.
 */
function bakeRoleNamed(file: string, role: string, projectDir: string): ConfigError {
  const lines = new LineCounter();
  const text = readFileSync(file, "utf8");
  const doc = parseDocument(text, { lineCounter: lines });
  const map = new SourceMap(path.relative(projectDir, file) || file, doc, lines);
  let offset = 0;
  visit(doc, {
    Scalar(_, node) {
      if (node.value === role && node.range) {
        offset = node.range[0];
        return visit.BREAK;
      }
      return undefined;
    },
  });
  return new ConfigError(
    map.at(offset),
    `role "${role}" is bake's own: bake installs the engine and its agent before this playbook, and the shipped images (preload:) and services (services:) after it, on every target`,
    `remove it from the playbook (README: Your own playbook); to install the engine yourself, set engine: own on the AMI in bake.yml`,
  );
}

function readIgnore(file: string): string[] {
  return existsSync(file) ? parseDockerignore(readFileSync(file, "utf8")) : [];
}

function readYaml(file: string): any {
  try {
    return parseYaml(readFileSync(file, "utf8"));
  } catch {
    return undefined;
  }
}

function expandHome(p: string, env: NodeJS.ProcessEnv): string {
  return p.startsWith("~/") || p === "~" ? path.join(env.HOME ?? homedir(), p.slice(1)) : p;
}

const isDir = (p: string) => statSync(p, { throwIfNoEntry: false })?.isDirectory() ?? false;
const isFile = (p: string) => statSync(p, { throwIfNoEntry: false })?.isFile() ?? false;
const toPosix = (p: string) => p.split(path.sep).join("/");
