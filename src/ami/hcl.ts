/**
 * Values into HCL2 quoted strings. Safe for quotes, backslashes, newlines and control
 * characters, and for HCL's template sequences `${` and `%{` (written `$${` and `%%{`).
 */
export function hclEscape(value: string): string {
  let out = "";
  for (let i = 0; i < value.length; i++) {
    const c = value[i];
    const next = value[i + 1];
    if (c === "\\") out += "\\\\";
    else if (c === '"') out += '\\"';
    else if (c === "\n") out += "\\n";
    else if (c === "\r") out += "\\r";
    else if (c === "\t") out += "\\t";
    else if ((c === "$" || c === "%") && next === "{") out += `${c}${c}`;
    else if (c < " " || c === "\u007f") out += `\\u${c.charCodeAt(0).toString(16).padStart(4, "0")}`;
    else out += c;
  }
  return out;
}

/**
 * Packer renders most builder and provisioner fields once more as Go templates, so a literal
 * `{{` must be written as the template expression {{"{{"}}. `}}` outside an action is literal.
 */
export function goTemplateEscape(value: string): string {
  return value.replace(/\{\{/g, '{{"{{"}}');
}

/** A value for a field Packer interpolates: HCL-escaped and Go-template-escaped. */
export function packerString(value: unknown): string {
  return hclString(typeof value === "string" ? goTemplateEscape(value) : value);
}

export function hclString(value: unknown): string {
  if (typeof value !== "string" && typeof value !== "number" && typeof value !== "boolean") {
    throw new Error(`hcl: expected a string, got ${value === undefined ? "undefined" : typeof value}`);
  }
  return `"${hclEscape(String(value))}"`;
}

export function hclList(values: unknown): string {
  if (!Array.isArray(values)) throw new Error("hclList: expected a list");
  return `[${values.map(packerString).join(", ")}]`;
}

/**
 * A map bake writes itself (tags) as an HCL object, one line per key, keys quoted (tag names
 * hold ':'). Values are not Go-template-escaped: bake puts {{ .SourceAMI }} in them on purpose,
 * and the rest are names and hex keys.
 */
export function hclMap(map: unknown, indent = "  "): string {
  if (!map || typeof map !== "object") throw new Error("hclMap: expected a mapping");
  const entries = Object.entries(map as Record<string, unknown>);
  if (!entries.length) return "{}";
  return `{\n${entries.map(([k, v]) => `${indent}  ${hclString(k)} = ${hclString(v)}`).join("\n")}\n${indent}}`;
}
