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

export function hclString(value: unknown): string {
  if (typeof value !== "string" && typeof value !== "number" && typeof value !== "boolean") {
    throw new Error(`hcl: expected a string, got ${value === undefined ? "undefined" : typeof value}`);
  }
  return `"${hclEscape(String(value))}"`;
}

export function hclList(values: unknown): string {
  if (!Array.isArray(values)) throw new Error("hclList: expected a list");
  return `[${values.map(hclString).join(", ")}]`;
}

/** A map as an HCL object expression on one line per key, keys quoted (tag names hold ':'). */
export function hclMap(map: unknown, indent = "  "): string {
  if (!map || typeof map !== "object") throw new Error("hclMap: expected a mapping");
  const entries = Object.entries(map as Record<string, unknown>);
  if (!entries.length) return "{}";
  return `{\n${entries.map(([k, v]) => `${indent}  ${hclString(k)} = ${hclString(v)}`).join("\n")}\n${indent}}`;
}
