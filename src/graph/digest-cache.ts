/**
 * Digests of large files remembered by (size, mtime, ctime, inode), as git's index does, so a
 * big build context is read once per change instead of once per run. A file modified within
 * the last seconds is never trusted from the cache (the "racy" case).
 */
import { mkdirSync, readFileSync, type Stats } from "node:fs";
import writeFileAtomic from "write-file-atomic";
import path from "node:path";

type Entry = [size: number, mtimeMs: number, ctimeMs: number, ino: number, digest: string];

export const CACHED_FROM_BYTES = 1 << 20;
const RACY_MS = 3000;

export class DigestCache {
  private entries: Record<string, Entry> = {};
  private dirty = false;

  constructor(private readonly file?: string) {
    if (!file) return;
    try {
      this.entries = JSON.parse(readFileSync(file, "utf8"));
    } catch {
      this.entries = {};
    }
  }

  static forProject(dir: string): DigestCache {
    return new DigestCache(path.join(dir, ".bake", "digests.json"));
  }

  get(abs: string, st: Stats): string | undefined {
    const e = this.entries[abs];
    if (!e || Date.now() - st.mtimeMs < RACY_MS) return undefined;
    return e[0] === st.size && e[1] === st.mtimeMs && e[2] === st.ctimeMs && e[3] === st.ino ? e[4] : undefined;
  }

  set(abs: string, st: Stats, digest: string): void {
    if (Date.now() - st.mtimeMs < RACY_MS) return;
    this.entries[abs] = [st.size, st.mtimeMs, st.ctimeMs, st.ino, digest];
    this.dirty = true;
  }

  save(): void {
    if (!this.file || !this.dirty) return;
    mkdirSync(path.dirname(this.file), { recursive: true });
    // Atomic: a concurrent bake reads the old or the new cache. Of two writers the last wins,
    // which costs only digests computed again.
    writeFileAtomic.sync(this.file, JSON.stringify(this.entries));
    this.dirty = false;
  }
}
