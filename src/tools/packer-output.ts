/** Parser for `packer build -machine-readable` lines. Pure. */

export interface MachineLine {
  timestamp: string;
  target: string;
  type: string;
  data: string[];
}

/** Packer writes commas inside fields as %!(PACKER_COMMA) and newlines as literal \n. */
export function unescapeField(field: string): string {
  return field
    .replace(/%!\(PACKER_COMMA\)/g, ",")
    .replace(/\\n/g, "\n")
    .replace(/\\r/g, "\r");
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
  return lines
    .filter((l) => l.type === "artifact" && l.data[1] === "id")
    .map((l) => ({ builder: l.target, index: Number(l.data[0]), id: l.data[2] }));
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

/** What an amazon build's output says of a failure: where it stopped, on which instance, what Packer removed and what it could not. */
export interface AwsFailure {
  /** The step Packer was in ("Provisioning with Ansible..."), and the Ansible task that failed. */
  step?: string;
  task?: string;
  instance?: string;
  /** Clean-up Packer did ("Terminating the source AWS instance", …). */
  cleaned: string[];
  /** Clean-up that failed: what may be left in the account. */
  leftBehind: string[];
}

const CLEANUP =
  /^(Terminating the source AWS instance|Deleting temporary security group|Deleting temporary keypair|Deleting the created EBS volume|Cleaning up any extra volumes)/;
const CLEANUP_FAILED = /^(Error terminating instance|Error cleaning up|Error deleting|Error removing)/i;

/** Reads the ui lines of an amazon-ebs / amazon-instance build. Pure. */
export function awsFailure(uiLines: string[]): AwsFailure {
  const said = uiLines.flatMap((l) => {
    const m = /^(==>|\s+)\s*amazon-[a-z]+\.\w+: (.*)$/.exec(l);
    return m ? [{ announced: m[1] === "==>", text: m[2].trim() }] : [];
  });
  const failure: AwsFailure = { cleaned: [], leftBehind: [] };
  let cleaning = false;
  for (const { announced, text } of said) {
    if (/^Provisioning step had errors|^Build was cancelled/.test(text) || CLEANUP.test(text)) cleaning = true;
    const instance = /^Instance ID: (i-[0-9a-f]+)/.exec(text);
    if (instance) failure.instance = instance[1];
    if (CLEANUP_FAILED.test(text)) failure.leftBehind.push(text);
    else if (CLEANUP.test(text)) failure.cleaned.push(text.replace(/\.\.\.$/, ""));
    if (cleaning) continue;
    const task = /^TASK \[(.+?)\]/.exec(text);
    if (task) failure.task = task[1];
    // A step is what Packer itself announces with ==>, not a provisioner's output.
    if (announced && !/^(Executing Ansible|Uploading |Adding tag)/.test(text))
      failure.step = text.replace(/\.\.\.$/, "");
  }
  return failure;
}
