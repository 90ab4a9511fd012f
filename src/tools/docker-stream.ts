/**
 * Parsers for the Docker engine's JSON progress streams (build, pull, push, import). Pure.
 * A failed build arrives inside a 200 response: the error is a message in the stream.
 */

export interface StreamMessage {
  stream?: string;
  status?: string;
  id?: string;
  progress?: string;
  error?: string;
  errorDetail?: { code?: number; message?: string };
  aux?: { ID?: string; Digest?: string; Tag?: string; Size?: number };
}

/** Splits newline-delimited JSON arriving in arbitrary chunks into messages. */
export class JsonLines {
  private partial = "";
  push(chunk: Buffer | string): StreamMessage[] {
    const text = this.partial + chunk.toString();
    const lines = text.split(/\r?\n/);
    this.partial = lines.pop() ?? "";
    return lines.flatMap(parseLine);
  }
  end(): StreamMessage[] {
    const rest = this.partial;
    this.partial = "";
    return parseLine(rest);
  }
}

function parseLine(line: string): StreamMessage[] {
  const trimmed = line.trim();
  if (!trimmed) return [];
  try {
    return [JSON.parse(trimmed) as StreamMessage];
  } catch {
    return [{ stream: `${trimmed}\n` }];
  }
}

/** What a build stream said: the image id, or the error and the instruction it failed at. */
export class BuildProgress {
  imageId?: string;
  error?: string;
  /** "Step 3/5 : RUN make" of the classic builder: the instruction being run. */
  step?: string;
  readonly tail: string[] = [];

  constructor(private readonly tailSize = 20) {}

  /** Takes one message; returns the lines of output it carried (for logs and progress). */
  accept(m: StreamMessage): string[] {
    if (m.aux?.ID) this.imageId = m.aux.ID;
    if (m.error || m.errorDetail) {
      this.error = (m.errorDetail?.message ?? m.error ?? "build failed").trim();
      return [`ERROR: ${this.error}`];
    }
    const text = m.stream ?? (m.status ? `${m.status}${m.progress ? ` ${m.progress}` : ""}\n` : "");
    const lines = text
      .split("\n")
      .filter((l, i, all) => l !== "" || i < all.length - 1)
      .map((l) => l.replace(/\r/g, ""));
    for (const line of lines) {
      const step = /^Step \d+\/\d+ : (.*)$/.exec(line);
      if (step) this.step = line;
      const built = /^Successfully built ([0-9a-f]{12,64})$/.exec(line);
      if (built && !this.imageId) this.imageId = built[1];
      if (line.trim()) {
        this.tail.push(line);
        if (this.tail.length > this.tailSize) this.tail.shift();
      }
    }
    return lines;
  }
}

/** The digest a push reported (aux.Digest, or the "digest: sha256:… size: N" status line). */
export function pushDigest(messages: StreamMessage[]): string | undefined {
  for (const m of messages) {
    if (m.aux?.Digest) return m.aux.Digest;
    const d = /digest: (sha256:[0-9a-f]{64})/.exec(m.status ?? "");
    if (d) return d[1];
  }
  return undefined;
}

export function streamError(messages: StreamMessage[]): string | undefined {
  const m = messages.find((x) => x.error || x.errorDetail);
  return m ? (m.errorDetail?.message ?? m.error ?? "").trim() : undefined;
}
