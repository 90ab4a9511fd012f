/** Reads bake.yml: YAML with positions → ${VAR} interpolation → schema → semantic checks. */
import { readFile } from "node:fs/promises";
import path from "node:path";
import { LineCounter, parseDocument, visit, Scalar } from "yaml";
import { ConfigError, ConfigErrors, UsageError } from "../errors.js";
import { interpolate, type Env } from "./interpolate.js";
import { SourceMap } from "./source-map.js";
import { checkShape } from "./validate-shape.js";
import { checkSemantics } from "./semantic.js";
import type { BakeConfig } from "./model.js";
import type { BakeFile } from "./schema.js";

export async function loadConfig(file: string, env: Env = process.env): Promise<BakeConfig> {
  const absolute = path.resolve(file);
  let text: string;
  try {
    text = await readFile(absolute, "utf8");
  } catch (e: any) {
    if (e?.code === "ENOENT") throw new UsageError(`${file} does not exist; pass --file <path to bake.yml>`);
    throw new UsageError(`cannot read ${file}: ${e?.message ?? e}`);
  }
  return parseConfig(text, file, path.dirname(absolute), env);
}

/** Pure apart from checking that named files exist. `file` is the name used in messages. */
export function parseConfig(text: string, file: string, dir: string, env: Env): BakeConfig {
  const lines = new LineCounter();
  const doc = parseDocument(text, { lineCounter: lines, prettyErrors: false, uniqueKeys: true });
  const map = new SourceMap(file, doc, lines);
  if (doc.errors.length) {
    throw fail(
      doc.errors.map(
        (e) =>
          new ConfigError(
            map.at(e.pos[0]),
            `invalid YAML: ${firstLine(e.message)}`,
            "check indentation, quoting and that every key appears once",
          ),
      ),
    );
  }
  const problems: ConfigError[] = [];
  visit(doc, {
    Scalar(key, node: Scalar) {
      if (key === "key" || typeof node.value !== "string" || !node.value.includes("$")) return;
      const result = interpolate(node.value, env);
      if (result.ok) {
        node.value = result.value;
        return;
      }
      const quoted = node.type === Scalar.QUOTE_DOUBLE || node.type === Scalar.QUOTE_SINGLE ? 1 : 0;
      const start =
        (node.range?.[0] ?? 0) + quoted + (node.type === Scalar.PLAIN || quoted ? result.problem.offset : 0);
      problems.push(new ConfigError(map.at(start), result.problem.message, result.problem.hint));
    },
  });
  if (problems.length) throw fail(problems);
  let value: unknown;
  try {
    value = doc.toJS();
  } catch (e) {
    // The YAML library stops an alias that expands without end ("billion laughs") with a ReferenceError.
    let alias = 0;
    visit(doc, { Alias: (_k, node) => void (alias ||= node.range?.[0] ?? 0) });
    throw fail([
      new ConfigError(
        map.at(alias),
        `YAML aliases expand too far: ${firstLine((e as Error).message)}`,
        "write the values out instead of nesting aliases",
      ),
    ]);
  }
  if (value === null || value === undefined || typeof value !== "object" || Array.isArray(value)) {
    throw fail([
      new ConfigError(map.at(0), `${file} must be a mapping with project: and images:`, "see schema/bake.schema.json"),
    ]);
  }
  const shape = checkShape(value, map);
  if (shape.length) throw fail(shape);
  const { config, errors } = checkSemantics(value as BakeFile, map, dir, env);
  if (errors.length) throw fail(errors);
  return { ...config, file };
}

function fail(errors: ConfigError[]): ConfigError | ConfigErrors {
  return errors.length === 1 ? errors[0] : new ConfigErrors(errors);
}

function firstLine(s: string): string {
  return s.split("\n")[0].replace(/ at line \d+, column \d+:?$/, "");
}
