/** Checks bake.yml against the schema and turns ajv's findings into positioned ConfigErrors. */
import type { ErrorObject } from "ajv";
import type { BakeFile } from "./schema.js";
// Generated from schema.ts at set-up (write-validator.ts): no schema compilation at run time.
import generatedValidator, { schema as bakeFileSchema } from "./bake-validator.js";
import { ConfigError } from "../errors.js";
import { dotted, type SourceMap, type YamlPath } from "./source-map.js";

type Validate = ((value: unknown) => value is BakeFile) & { errors?: ErrorObject[] | null };

const validate = generatedValidator as Validate;

export function checkShape(value: unknown, map: SourceMap): ConfigError[] {
  if (validate(value)) return [];
  const errors = validate.errors ?? [];
  const byPath = new Map<string, ErrorObject[]>();
  for (const e of errors) {
    const k = e.instancePath;
    byPath.set(k, [...(byPath.get(k) ?? []), e]);
  }
  const out: ConfigError[] = [];
  for (const [instancePath, group] of byPath) {
    const path = toPath(instancePath);
    const union = group.find((e) => e.keyword === "anyOf");
    if (union) {
      const consts = group.filter((e) => e.keyword === "const").map((e) => JSON.stringify(e.params.allowedValue));
      const types = [...new Set(group.filter((e) => e.keyword === "type").map((e) => String(e.params.type)))];
      const what = consts.length ? `one of ${consts.join(", ")}` : `a ${types.join(" or a ")}`;
      out.push(
        new ConfigError(
          map.locate(path),
          `${dotted(path)} must be ${what}`,
          `got ${describeValue(valueAt(value, path))}`,
        ),
      );
      continue;
    }
    for (const e of group) out.push(explain(e, path, value, map));
  }
  return out.sort((a, b) => a.line - b.line || a.column - b.column);
}

function explain(e: ErrorObject, path: YamlPath, root: unknown, map: SourceMap): ConfigError {
  switch (e.keyword) {
    case "additionalProperties": {
      const extra = String(e.params.additionalProperty);
      const allowed = Object.keys(schemaAt(path)?.properties ?? {});
      const near = closest(extra, allowed);
      return new ConfigError(
        map.locate([...path, extra], true),
        `unknown key "${extra}" in ${dotted(path)}`,
        near ? `did you mean "${near}"? allowed keys: ${allowed.join(", ")}` : `allowed keys: ${allowed.join(", ")}`,
      );
    }
    case "required":
      return new ConfigError(
        map.locate(path),
        `${dotted(path)} is missing "${e.params.missingProperty}"`,
        `add ${e.params.missingProperty}: to ${dotted(path)}`,
      );
    case "type":
      return new ConfigError(
        map.locate(path),
        `${dotted(path)} must be ${article(String(e.params.type))}`,
        `got ${describeValue(valueAt(root, path))}`,
      );
    default:
      return new ConfigError(map.locate(path), `${dotted(path)} ${e.message ?? "is invalid"}`);
  }
}

function article(type: string): string {
  if (type === "object") return "a mapping (key: value)";
  if (type === "array") return "a list";
  return /^[aeiou]/.test(type) ? `an ${type}` : `a ${type}`;
}

function toPath(instancePath: string): YamlPath {
  if (!instancePath) return [];
  return instancePath
    .slice(1)
    .split("/")
    .map((s) => s.replace(/~1/g, "/").replace(/~0/g, "~"))
    .map((s) => (/^\d+$/.test(s) ? Number(s) : s));
}

function valueAt(root: unknown, path: YamlPath): unknown {
  let v: any = root;
  for (const p of path) v = v?.[p];
  return v;
}

function describeValue(v: unknown): string {
  if (v === null || v === undefined) return "nothing";
  if (Array.isArray(v)) return "a list";
  if (typeof v === "object") return "a mapping";
  return `${typeof v} ${JSON.stringify(v)}`;
}

/** The sub-schema that describes the object at `path` (for listing the keys it allows). */
function schemaAt(path: YamlPath): any {
  let s: any = bakeFileSchema;
  for (const p of path) {
    if (!s) return undefined;
    if (s.type === "array") s = s.items;
    else if (s.properties && typeof p === "string" && s.properties[p]) s = s.properties[p];
    else if (s.patternProperties) s = Object.values(s.patternProperties)[0];
    else return undefined;
    if (s?.anyOf) s = s.anyOf.find((x: any) => x.type === "object") ?? s;
  }
  return s;
}

function closest(word: string, candidates: string[]): string | undefined {
  let best: string | undefined;
  let bestDistance = Infinity;
  for (const c of candidates) {
    const d = levenshtein(word, c);
    if (d < bestDistance) [best, bestDistance] = [c, d];
  }
  return bestDistance <= Math.max(2, Math.floor(word.length / 3)) ? best : undefined;
}

function levenshtein(a: string, b: string): number {
  const row = Array.from({ length: b.length + 1 }, (_, i) => i);
  for (let i = 1; i <= a.length; i++) {
    let prev = row[0];
    row[0] = i;
    for (let j = 1; j <= b.length; j++) {
      const tmp = row[j];
      row[j] = Math.min(row[j] + 1, row[j - 1] + 1, prev + (a[i - 1] === b[j - 1] ? 0 : 1));
      prev = tmp;
    }
  }
  return row[b.length];
}
