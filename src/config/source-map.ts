/** Finds the line and column of a path inside a parsed YAML document. */
import { isMap, isPair, isScalar, type Document, type LineCounter, type Node } from "yaml";
import type { SourcePosition } from "../errors.js";

export type YamlPath = readonly (string | number)[];

export class SourceMap {
  constructor(
    readonly file: string,
    private readonly doc: Document,
    private readonly lines: LineCounter,
  ) {}

  at(offset: number): SourcePosition {
    const { line, col } = this.lines.linePos(offset);
    return { file: this.file, line, column: col };
  }

  /**
   * Position of the value at `path`, or of its key when `key` is set. Falls back to the nearest
   * ancestor that exists, so a missing entry points at the map that should hold it.
   */
  locate(path: YamlPath, key = false): SourcePosition {
    for (let n = path.length; n >= 0; n--) {
      const prefix = path.slice(0, n);
      if (key && n === path.length && n > 0) {
        const parent = prefix.length > 1 ? this.doc.getIn(prefix.slice(0, -1), true) : this.doc.contents;
        const last = prefix[prefix.length - 1];
        if (isMap(parent)) {
          const pair = parent.items.find((p) => isPair(p) && isScalar(p.key) && String(p.key.value) === String(last));
          const range = pair && (pair.key as Node | null)?.range;
          if (range) return this.at(range[0]);
        }
      }
      const node = (prefix.length === 0 ? this.doc.contents : this.doc.getIn(prefix, true)) as Node | null | undefined;
      if (node && typeof node === "object" && "range" in node && node.range) return this.at(node.range[0]);
    }
    return { file: this.file, line: 1, column: 1 };
  }
}

export function dotted(path: YamlPath): string {
  return path.length === 0 ? "the top level" : path.map(String).join(".");
}
