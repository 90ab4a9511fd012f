/** Parser for `packer build -machine-readable` lines. Pure. */

export interface MachineLine {
  timestamp: string;
  target: string;
  type: string;
  data: string[];
}

/** Packer writes commas inside fields as %!(PACKER_COMMA) and newlines as literal \n. */
export function unescapeField(field: string): string {
  return field.replace(/%!\(PACKER_COMMA\)/g, ",").replace(/\\n/g, "\n").replace(/\\r/g, "\r");
}

export function parseMachineLine(line: string): MachineLine | undefined {
  const parts = line.split(",");
  if (parts.length < 3 || !/^\d+$/.test(parts[0])) return undefined;
  return { timestamp: parts[0], target: parts[1], type: parts[2], data: parts.slice(3).map(unescapeField) };
}

export interface Artifact {
  builder: string;
  index: number;
  id: string;
}

/** The artifacts a build reported: `TS,docker.ami,artifact,0,id,sha256:…`. */
export function artifactsOf(lines: MachineLine[]): Artifact[] {
  return lines.filter((l) => l.type === "artifact" && l.data[1] === "id").map((l) => ({ builder: l.target, index: Number(l.data[0]), id: l.data[2] }));
}

/** `us-east-1:ami-1,eu-west-1:ami-2` → { "us-east-1": "ami-1", … } (amazon builders' artifact id). */
export function amiIdsByRegion(id: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const part of id.split(",")) {
    const m = /^([a-z0-9-]+):(ami-[0-9a-f]+)$/.exec(part.trim());
    if (m) out[m[1]] = m[2];
  }
  return out;
}

/** What a human should see of a line: ui say/message/error text, without Packer's framing. */
export function uiText(line: MachineLine): string | undefined {
  if (line.type !== "ui") return undefined;
  const [kind, text] = line.data;
  if (!text || !["say", "message", "error"].includes(kind)) return undefined;
  return kind === "error" ? `ERROR: ${text}` : text;
}
