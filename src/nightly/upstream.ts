/**
 * Upstream change detection for bases: a debootstrap base's Debian release index (InRelease,
 * which changes whenever any package in the suite does), a `from:` image's registry digest.
 */
import { createHash } from "node:crypto";
import { readFileSync, readdirSync } from "node:fs";
import path from "node:path";
import type { ImageNode } from "../config/model.js";
import { basicAuth, stripCredentials } from "../config/url-credentials.js";

export interface UpstreamCheck {
  node: string;
  kind: "debootstrap" | "from" | "tar";
  before?: string;
  after?: string;
  changed: boolean;
  note?: string;
}

/** The first Debian mirror the machine's apt sources name (one-line and deb822 formats). */
export function aptMirror(root = "/etc/apt"): string | undefined {
  const files: string[] = [];
  try {
    files.push(path.join(root, "sources.list"));
    for (const f of readdirSync(path.join(root, "sources.list.d")).sort())
      files.push(path.join(root, "sources.list.d", f));
  } catch {
    /* no sources.list.d */
  }
  for (const file of files) {
    let text = "";
    try {
      text = readFileSync(file, "utf8");
    } catch {
      continue;
    }
    const oneLine = /^\s*deb\s+(?:\[[^\]]*\]\s+)?(https?:\/\/\S+)\s+\S+/m.exec(text)?.[1];
    const deb822 = /^URIs:\s*(https?:\/\/\S+)/m.exec(text)?.[1];
    const url = oneLine ?? deb822;
    if (url && !/security/.test(url)) return stripCredentials(url).replace(/\/+$/, "");
  }
  return undefined;
}

export function releaseIndexUrl(mirror: string, suite: string): string {
  return `${mirror.replace(/\/+$/, "")}/dists/${suite}/InRelease`;
}

/** sha256 of the suite's InRelease file, or a note saying why it could not be read. */
export async function debootstrapRelease(
  image: ImageNode,
  fallbackMirror: string | undefined,
  timeoutMs = 15_000,
): Promise<{ digest?: string; url?: string; note?: string }> {
  const spec = image.rootfs!.debootstrap!;
  const mirror = spec.mirror ?? fallbackMirror;
  if (!mirror)
    return { note: "no mirror known: set rootfs.debootstrap.mirror, or list a Debian mirror in the apt sources" };
  const url = releaseIndexUrl(mirror, spec.suite);
  try {
    // The mirror's credentials (kept apart from its URL since bake.yml was read) go in a header.
    const c = image.rootfs!.mirrorCredentials;
    const res = await fetch(url, {
      signal: AbortSignal.timeout(timeoutMs),
      headers: c ? { Authorization: basicAuth(c) } : {},
    });
    if (!res.ok) return { url, note: `${url} answered HTTP ${res.status}` };
    return {
      url,
      digest: `sha256:${createHash("sha256")
        .update(Buffer.from(await res.arrayBuffer()))
        .digest("hex")}`,
    };
  } catch (e) {
    return { url, note: `${url}: ${(e as Error).message}` };
  }
}
