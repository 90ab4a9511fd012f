/** bake-manifest.json: what the last successful run produced (PRODUCT.md's shape). */
import { readFileSync, renameSync, writeFileSync } from "node:fs";
import path from "node:path";

export interface ManifestImage {
  key: string;
  id: string;
  digest?: string;
  tags: string[];
}

export interface ManifestAmi {
  key: string;
  target: string;
  regions: Record<string, string>;
  /** The digests the key was made of (digests only): what a later plan names as changed. */
  inputs?: Record<string, string>;
  /** The local target's boot test: passed, and how long it took. */
  boot?: { ok: boolean; seconds: number };
}

export interface Manifest {
  revision: string | null;
  images: Record<string, ManifestImage>;
  amis: Record<string, ManifestAmi>;
}

export function manifestPath(dir: string): string {
  return path.join(dir, "bake-manifest.json");
}

export function readManifest(dir: string): Manifest {
  try {
    const m = JSON.parse(readFileSync(manifestPath(dir), "utf8"));
    return { revision: m.revision ?? null, images: m.images ?? {}, amis: m.amis ?? {} };
  } catch {
    return { revision: null, images: {}, amis: {} };
  }
}

/** Merges new entries into the manifest and writes it atomically. */
export function updateManifest(dir: string, change: { revision?: string; images?: Record<string, ManifestImage>; amis?: Record<string, ManifestAmi> }): Manifest {
  const current = readManifest(dir);
  const next: Manifest = {
    revision: change.revision ?? current.revision,
    images: { ...current.images, ...change.images },
    amis: { ...current.amis, ...change.amis },
  };
  const file = manifestPath(dir);
  const partial = `${file}.partial-${process.pid}`;
  writeFileSync(partial, `${JSON.stringify(next, null, 2)}\n`);
  renameSync(partial, file);
  return next;
}
