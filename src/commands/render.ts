/** `bake render <ami>`: the Packer HCL2 folder for an AMI, as `bake ami` would run it. */
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { readPipeline, type Tools } from "../state/read.js";
import type { Target } from "../graph/keys.js";
import { amiNodeOf, requireVariables } from "../ami/bake-ami.js";
import { packerTool } from "../tools/packer.js";
import { targetOf } from "../targets/index.js";
import { findGoss, GOSS_ENV } from "../tools/goss.js";
import { readRevision } from "../tools/git.js";

export async function renderCommand(
  options: { file: string; ami: string; target: Target; out?: string },
  tools: Tools,
  out: (text: string) => void,
  err: (text: string) => void,
): Promise<string> {
  const pipeline = await readPipeline({ file: options.file, target: options.target, nodes: [options.ami] }, tools);
  const ami = amiNodeOf(pipeline, options.ami);
  // The local target renders from the host image bake.yml names, the vm target from its disk: without one there is nothing to render.
  const target = targetOf(options.target);
  target.needs(ami);
  requireVariables(ami, target.variables(ami).sensitive, " before rendering");
  const key = pipeline.keys.get(ami.name)!;
  if (!key.key)
    err(
      `note: ${ami.name}'s key is unknown (${(key as { unknownBecause?: string }).unknownBecause}); tags carry "unknown" and the source AMI is found by filter`,
    );
  const dir = options.out ? path.resolve(options.out) : mkdtempSync(path.join(tmpdir(), "bake-render-"));
  const source = pipeline.keys.get(ami.name)?.inputs.source;
  const folder = await target.render(pipeline, ami, dir, packerTool(), {
    sourceAmi: options.target === "aws" ? source : undefined,
    revision: readRevision(pipeline.config.dir),
  });
  if (ami.test && options.target === "aws" && !process.env[GOSS_ENV]) {
    err(
      `note: the folder uploads goss from var.goss_binary: set ${GOSS_ENV} to a goss binary${findGoss() ? ` (bake uses ${findGoss()})` : ""} before packer validate or build`,
    );
  }
  if (options.out) {
    out(folder.dir);
  } else {
    out(readFileSync(folder.hclFile, "utf8"));
    rmSync(dir, { recursive: true, force: true });
  }
  return folder.dir;
}
