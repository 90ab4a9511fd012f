/**
 * The only module that runs Graphviz: @viz-js/viz, Graphviz compiled to WebAssembly, so a picture
 * renders offline, with no `dot` installed. Loaded when first used (it is a few megabytes).
 */
import { createRequire } from "node:module";
import { BakeError } from "../errors.js";

interface Viz {
  renderString(dot: string, options: { format: "svg" }): string;
}

let viz: Promise<Viz> | undefined;

/** The SVG Graphviz draws of a DOT graph; a graph it cannot read is a BakeError naming why. */
export async function renderSvg(dot: string): Promise<string> {
  viz ??= (createRequire(import.meta.url)("@viz-js/viz") as { instance: () => Promise<Viz> }).instance();
  try {
    return (await viz).renderString(dot, { format: "svg" });
  } catch (e) {
    throw new BakeError(`graphviz could not draw the graph: ${(e as Error).message}`);
  }
}
