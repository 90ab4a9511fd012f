/**
 * Build secrets (`secrets:` on an image) read when the build runs: from an environment variable
 * or a file, handed to BuildKit through the session for `RUN --mount=type=secret`, redacted from
 * the build's output, never in a layer, label, key or log.
 */
import { readFileSync } from "node:fs";
import type { BakeConfig, ImageNode } from "../config/model.js";
import { UsageError } from "../errors.js";

/** Every secret of the images about to build; a missing one is a usage error before anything builds. */
export function readBuildSecrets(
  config: BakeConfig,
  names: string[],
  env = process.env,
): Map<string, Map<string, Buffer>> {
  const out = new Map<string, Map<string, Buffer>>();
  const missing: string[] = [];
  for (const img of config.images.filter((i) => names.includes(i.name) && i.secrets)) {
    const values = new Map<string, Buffer>();
    for (const [id, from] of Object.entries(img.secrets!)) {
      if (from.env !== undefined) {
        const v = env[from.env];
        if (v === undefined) missing.push(`${from.env} (secret ${id} of ${img.name})`);
        else values.set(id, Buffer.from(v));
      } else values.set(id, readFileSync(from.file!));
    }
    out.set(img.name, values);
  }
  if (missing.length) throw new UsageError(`build secrets not set: ${missing.join(", ")}: export them before building`);
  return out;
}

/** The classic builder cannot mount secrets: such an image is refused there, never built without them. */
export function refuseClassic(node: ImageNode, why: string): void {
  if (node.secrets && Object.keys(node.secrets).length) {
    throw new UsageError(`${node.name} mounts build secrets (secrets:), which only BuildKit builds can serve; ${why}`);
  }
}
