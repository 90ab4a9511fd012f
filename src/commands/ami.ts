/** `bake ami <ami>`: build what the AMI needs, bake it (or find it by key), tag, copy, share, manifest (ami-bake/run.ts). */
import { runAmi, type AmiOptions, type BakeResult } from "../ami-bake/run.js";
import type { Tools } from "../state/read.js";

export type { AmiOptions };

export function amiCommand(
  options: AmiOptions,
  tools: Tools,
  out: (t: string) => void,
  err: (t: string) => void,
): Promise<BakeResult> {
  return runAmi(options, tools, out, err);
}
