/** A BuildKit build's progress: the engine's trace messages decoded, and the stream read into lines, the image id and the failed step. */
import { loadWire } from "./buildkit.js";

/** A trace message's payload (base64 of BuildKit's StatusResponse), decoded; empty when it cannot be. */
export function decodeTrace(base64: string): { vertexes: TraceVertex[]; logs: TraceLog[] } {
  const { types } = loadWire();
  let m: any;
  try {
    m = types.StatusResponse.toObject(types.StatusResponse.decode(Buffer.from(base64, "base64")), {
      longs: Number,
      defaults: true,
    });
  } catch {
    return { vertexes: [], logs: [] }; // progress only: the build's result comes in other messages
  }
  return {
    vertexes: m.vertexes.map((v: any) => ({
      digest: v.digest,
      name: v.name,
      cached: v.cached,
      started: Boolean(v.started),
      completed: Boolean(v.completed),
      error: v.error || undefined,
    })),
    logs: m.logs.map((l: any) => ({ vertex: l.vertex, text: Buffer.from(l.msg).toString("utf8") })),
  };
}

export interface TraceVertex {
  digest: string;
  name: string;
  cached: boolean;
  started: boolean;
  completed: boolean;
  error?: string;
}
export interface TraceLog {
  vertex: string;
  text: string;
}

/** A BuildKit build's stream: trace messages, the image id, or the error and the step it failed at. */
export class BuildKitProgress {
  imageId?: string;
  error?: string;
  /** "[2/3] RUN make": the instruction running, then the one that failed. */
  step?: string;
  readonly tail: string[] = [];
  private readonly names = new Map<string, string>();
  private readonly announced = new Set<string>();

  constructor(private readonly tailSize = 20) {}

  /** Takes one stream message (its trace already decoded); returns lines for logs and progress. */
  accept(
    m: { id?: string; aux?: any; error?: string; errorDetail?: { message?: string } },
    trace?: { vertexes: TraceVertex[]; logs: TraceLog[] },
  ): string[] {
    const lines: string[] = [];
    if (m.id === "moby.image.id" && m.aux?.ID) this.imageId = m.aux.ID;
    if (trace) {
      for (const v of trace.vertexes) {
        this.names.set(v.digest, v.name);
        if (v.started && !this.announced.has(v.digest)) {
          this.announced.add(v.digest);
          if (/^\[.*\d+\/\d+\]/.test(v.name) && !this.error) this.step = v.name;
          lines.push(`#${this.announced.size} ${v.name}${v.cached ? " (cached)" : ""}`);
        }
        // Steps running beside a failed one end "context canceled": the first real error names the failure.
        if (v.error && (!this.error || (/context canceled/.test(this.error) && !/context canceled/.test(v.error)))) {
          this.step = v.name;
          this.error = v.error;
        }
      }
      for (const l of trace.logs) {
        for (const line of l.text.split("\n").filter((x, i, all) => x !== "" || i < all.length - 1)) {
          lines.push(line.replace(/\r/g, ""));
          if (line.trim()) {
            this.tail.push(line.replace(/\r/g, ""));
            if (this.tail.length > this.tailSize) this.tail.shift();
          }
        }
      }
    }
    if (m.error || m.errorDetail) {
      const message = (m.errorDetail?.message ?? m.error ?? "build failed").trim();
      this.error ??= message;
      lines.push(`ERROR: ${message}`);
    }
    return lines;
  }
}
