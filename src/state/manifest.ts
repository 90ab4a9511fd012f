/** bake-manifest.json: what the last successful run produced (PRODUCT.md's shape). */
import path from "node:path";
import { readJsonFile, writeJsonFile } from "../files/json-file.js";
import { projectLock, withLock } from "../files/process-lock.js";
import { writeProvenance, type Statement } from "./provenance-file.js";

export interface ManifestImage {
  key: string;
  id: string;
  digest?: string;
  tags: string[];
  /** `sha256:` of each SBOM format bake sbom writes for this image (same bytes every time). */
  sbom?: Record<string, string>;
}

export interface ManifestAmi {
  key: string;
  target: string;
  regions: Record<string, string>;
  /** The digests the key was made of (digests only): what a later plan names as changed. */
  inputs?: Record<string, string>;
  /** The vm target's disk: its path in the project, format and size in bytes. */
  vm?: { path: string; format: string; bytes: number };
  /** `sha256:` of each SBOM format bake sbom writes for this AMI (its host and the images it ships). */
  sbom?: Record<string, string>;
  /** The local or vm target's boot test: passed, and how long it took. */
  boot?: { ok: boolean; seconds: number };
  /** A staged bake: the stages below the AMI it was built on, bottom first. */
  stages?: { name: string; node: string; key: string }[];
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
  const m = readJsonFile(manifestPath(dir), "the manifest") as Partial<Manifest> | undefined;
  return { revision: m?.revision ?? null, images: m?.images ?? {}, amis: m?.amis ?? {} };
}

/**
 * Merges new entries into the manifest (and their statements into the provenance file beside it)
 * and writes it atomically, holding the project's manifest lock: two bakes that finish together
 * both land their entries.
 */
export async function updateManifest(
  dir: string,
  change: {
    revision?: string;
    images?: Record<string, ManifestImage>;
    amis?: Record<string, ManifestAmi>;
    provenance?: Statement[];
  },
): Promise<Manifest> {
  const merged = (current: Manifest): Manifest => ({
    revision: change.revision ?? current.revision,
    images: { ...current.images, ...change.images },
    amis: { ...current.amis, ...change.amis },
  });
  // A run that adds nothing (a no-op build) leaves the file as it is, without waiting for its lock.
  const before = readManifest(dir);
  if (!change.provenance?.length && JSON.stringify(merged(before)) === JSON.stringify(before)) return before;
  return withLock(projectLock(dir, "manifest"), async () => {
    const next = merged(readManifest(dir));
    writeJsonFile(manifestPath(dir), next);
    if (change.provenance?.length) writeProvenance(dir, change.provenance);
    return next;
  });
}
