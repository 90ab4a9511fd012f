/** Full tool logs of a run: .bake/logs/<run-id>/<node>.log beside bake.yml, readable by the owner only (0600). */
import { createWriteStream, mkdirSync, type WriteStream } from "node:fs";
import { randomBytes } from "node:crypto";
import path from "node:path";
import { BakeError } from "../errors.js";

export function newRunId(now = new Date()): string {
  const stamp = now.toISOString().replace(/[-:]/g, "").replace("T", "-").slice(0, 15);
  return `${stamp}-${randomBytes(2).toString("hex")}`;
}

export class RunLogs {
  readonly dir: string;
  private readonly files = new Map<string, WriteStream>();
  /** The first write that failed (a full disk): the run fails with it when the logs close. */
  private failure?: Error;

  constructor(
    baseDir: string,
    readonly runId = newRunId(),
  ) {
    this.dir = path.join(baseDir, ".bake", "logs", runId);
  }

  pathOf(node: string): string {
    return path.join(this.dir, `${node}.log`);
  }

  line(node: string, text: string): void {
    let file = this.files.get(node);
    if (!file) {
      // Tool output can hold what a tool printed of its environment: for the owner only.
      mkdirSync(this.dir, { recursive: true, mode: 0o700 });
      file = createWriteStream(this.pathOf(node), { flags: "a", mode: 0o600 });
      file.on("error", (e) => (this.failure ??= e));
      this.files.set(node, file);
    }
    file.write(`${text}\n`);
  }

  /** Ends every log; throws when one could not be written, since the run then left no full record. */
  async close(): Promise<void> {
    await Promise.all(
      [...this.files.values()].map((f) => new Promise<void>((resolve) => (f.destroyed ? resolve() : f.end(resolve)))),
    );
    this.files.clear();
    if (this.failure)
      throw new BakeError(`cannot write the run's logs under ${this.dir}: ${this.failure.message}`, {
        cause: this.failure,
      });
  }
}
