/**
 * SBOMs from package lists: CycloneDX 1.6 JSON (through the CycloneDX project's own library)
 * and SPDX 2.3 JSON. Both are functions of what was built alone — no clock, no random serial —
 * so the same node always yields the same bytes and the manifest can record their digests.
 */
import { shortKey } from "../config/model.js";
import { createHash } from "node:crypto";
import { createRequire } from "node:module";
import type * as CdxModels from "@cyclonedx/cyclonedx-library/Models";
import type * as CdxEnums from "@cyclonedx/cyclonedx-library/Enums";
import type * as CdxSerialize from "@cyclonedx/cyclonedx-library/Serialize";
import type * as CdxSpec from "@cyclonedx/cyclonedx-library/Spec";
import type * as Purl from "packageurl-js";
import type { InstalledPackage, PackageList } from "./packages.js";

// Loaded when an SBOM is written, not by every command that reaches this module: a no-op
// `bake build` never pays for them (scripts/bundle.mjs leaves them out of the bundle).
const load = (id: string): unknown => createRequire(import.meta.url)(id);
const cdx = () => ({
  ...(load("@cyclonedx/cyclonedx-library/Models") as typeof CdxModels),
  ...(load("@cyclonedx/cyclonedx-library/Enums") as typeof CdxEnums),
  ...(load("@cyclonedx/cyclonedx-library/Serialize") as typeof CdxSerialize),
  ...(load("@cyclonedx/cyclonedx-library/Spec") as typeof CdxSpec),
});

export const SBOM_FORMATS = ["spdx-json", "cyclonedx-json"] as const;
export type SbomFormat = (typeof SBOM_FORMATS)[number];

/** What an SBOM describes: one image, or an AMI (its host and the images it ships). */
export interface SbomSubject {
  project: string;
  node: string;
  kind: "image" | "ami";
  key: string;
  /** The image id, or for an AMI what identifies it (`us-east-1:ami-…`, a local image id, a disk). */
  ids: string[];
  /** When the subject was made (the image's creation time): the SBOM's own timestamp. */
  created: string;
  /** The image's own list; for an AMI, "host" first, then each image it ships. */
  parts: { name: string; kind: "image" | "host"; key?: string; id?: string; list: PackageList }[];
  /** An AMI baked in stages: the stages below it, bottom first, each with its key. */
  stages?: { name: string; key: string }[];
  bakeVersion: string;
}

export function packageUrl(p: InstalledPackage, list: PackageList): string {
  const qualifiers: Record<string, string> = {};
  if (p.arch) qualifiers.arch = p.arch;
  if (list.distro)
    qualifiers.distro = list.distro.versionId ? `${list.distro.id}-${list.distro.versionId}` : list.distro.id;
  if (p.source) qualifiers.upstream = p.source;
  const namespace = list.distro?.id ?? (p.type === "apk" ? "alpine" : "debian");
  const { PackageURL } = load("packageurl-js") as typeof Purl;
  return new PackageURL(
    p.type,
    namespace,
    p.name,
    p.version,
    Object.keys(qualifiers).length ? qualifiers : undefined,
    undefined,
  ).toString();
}

/** A UUID made from the subject: the same node and key always carry the same serial number. */
function stableUuid(subject: SbomSubject): string {
  const h = createHash("sha256")
    .update(`bake-sbom\n${subject.project}\n${subject.kind}\n${subject.node}\n${subject.key}`)
    .digest("hex");
  // Version 5-shaped (name-based) with the RFC 4122 variant bits.
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-5${h.slice(13, 16)}-${((parseInt(h[16], 16) & 0x3) | 0x8).toString(16)}${h.slice(17, 20)}-${h.slice(20, 32)}`;
}

function title(subject: SbomSubject): string {
  return `${subject.project}/${subject.node}`;
}

export function cycloneDx(subject: SbomSubject): string {
  const { Bom, Component, ComponentType, Property, JsonSerializer, JSON: CdxJson, Spec1dot6 } = cdx();
  const bom = new Bom({ serialNumber: `urn:uuid:${stableUuid(subject)}` });
  bom.metadata.timestamp = new Date(subject.created);
  bom.metadata.tools.components.add(new Component(ComponentType.Application, "bake", { version: subject.bakeVersion }));
  const root = new Component(
    subject.kind === "image" ? ComponentType.Container : ComponentType.Platform,
    title(subject),
    { bomRef: `${subject.kind}:${subject.node}`, version: subject.key },
  );
  for (const id of subject.ids)
    root.properties.add(new Property(subject.kind === "image" ? "bake:image-id" : "bake:ami", id));
  root.properties.add(new Property("bake:key", subject.key));
  for (const stage of subject.stages ?? [])
    root.properties.add(new Property("bake:stage", `${stage.name}=${stage.key}`));
  bom.metadata.component = root;
  for (const part of subject.parts) {
    // An image's own packages hang off the BOM; an AMI's parts are components that hold theirs.
    const holder =
      subject.kind === "image"
        ? undefined
        : new Component(
            part.kind === "host" ? ComponentType.OperatingSystem : ComponentType.Container,
            part.kind === "host" ? "host" : `${subject.project}/${part.name}`,
            { bomRef: `${part.kind}:${part.name}`, ...(part.key ? { version: part.key } : {}) },
          );
    if (holder && part.id) holder.properties.add(new Property("bake:image-id", part.id));
    if (part.list.note) (holder ?? root).properties.add(new Property("bake:packages-note", part.list.note));
    for (const p of part.list.packages) {
      const purl = packageUrl(p, part.list);
      const component = new Component(ComponentType.Library, p.name, {
        bomRef: holder ? `${part.kind}:${part.name}:${purl}` : purl,
        version: p.version,
        purl: purl as any,
      });
      if (holder) holder.components.add(component);
      else bom.components.add(component);
    }
    if (holder) bom.components.add(holder);
  }
  const serializer = new JsonSerializer(new CdxJson.Normalize.Factory(Spec1dot6));
  return `${serializer.serialize(bom, { sortLists: true, space: 2 })}\n`;
}

/** SPDXIDs allow letters, digits, `.` and `-` only. */
function spdxId(...parts: string[]): string {
  return `SPDXRef-${parts.join("-").replace(/[^A-Za-z0-9.-]+/g, "-")}`;
}

export function spdx(subject: SbomSubject): string {
  const rootId = spdxId(subject.kind, subject.node);
  const packages: Record<string, unknown>[] = [];
  const relationships: Record<string, string>[] = [
    { spdxElementId: "SPDXRef-DOCUMENT", relationshipType: "DESCRIBES", relatedSpdxElement: rootId },
  ];
  const pkg = (id: string, name: string, version: string, extra: Record<string, unknown> = {}) => ({
    SPDXID: id,
    name,
    versionInfo: version,
    downloadLocation: "NOASSERTION",
    filesAnalyzed: false,
    licenseConcluded: "NOASSERTION",
    licenseDeclared: "NOASSERTION",
    copyrightText: "NOASSERTION",
    ...extra,
  });
  const comment = (list: PackageList) => (list.note ? { comment: list.note } : {});
  packages.push(
    pkg(rootId, title(subject), subject.key, {
      primaryPackagePurpose: subject.kind === "image" ? "CONTAINER" : "OPERATING-SYSTEM",
      summary: `bake ${subject.kind} ${subject.node}: ${subject.ids.join(", ")}${(subject.stages ?? []).map((st) => `; built on stage ${st.name} ${st.key}`).join("")}`,
      ...(subject.kind === "image" ? comment(subject.parts[0].list) : {}),
    }),
  );
  for (const part of subject.parts) {
    let holderId = rootId;
    if (subject.kind === "ami") {
      holderId = spdxId(part.kind, part.name);
      packages.push(
        pkg(holderId, part.kind === "host" ? "host" : `${subject.project}/${part.name}`, part.key ?? subject.key, {
          primaryPackagePurpose: part.kind === "host" ? "OPERATING-SYSTEM" : "CONTAINER",
          ...(part.id ? { summary: part.id } : {}),
          ...comment(part.list),
        }),
      );
      relationships.push({ spdxElementId: rootId, relationshipType: "CONTAINS", relatedSpdxElement: holderId });
    }
    part.list.packages.forEach((p, i) => {
      const id = spdxId(part.kind, part.name, p.type, String(i), p.name);
      packages.push(
        pkg(id, p.name, p.version, {
          ...(p.source
            ? { sourceInfo: `built from the ${p.type === "deb" ? "source package" : "origin"} ${p.source}` }
            : {}),
          externalRefs: [
            { referenceCategory: "PACKAGE-MANAGER", referenceType: "purl", referenceLocator: packageUrl(p, part.list) },
          ],
        }),
      );
      relationships.push({ spdxElementId: holderId, relationshipType: "CONTAINS", relatedSpdxElement: id });
    });
  }
  const doc = {
    spdxVersion: "SPDX-2.3",
    dataLicense: "CC0-1.0",
    SPDXID: "SPDXRef-DOCUMENT",
    name: `${title(subject)}@${shortKey(subject.key)}`,
    documentNamespace: `urn:uuid:${stableUuid(subject)}`,
    creationInfo: {
      created: new Date(subject.created).toISOString().replace(/\.\d{3}Z$/, "Z"),
      creators: [`Tool: bake-${subject.bakeVersion}`],
    },
    packages,
    relationships,
  };
  return `${JSON.stringify(doc, null, 2)}\n`;
}

export function renderSbom(subject: SbomSubject, format: SbomFormat): string {
  return format === "spdx-json" ? spdx(subject) : cycloneDx(subject);
}

/** `sha256:<hex>` of each format's bytes: what the manifest records. */
export function sbomDigests(subject: SbomSubject): Record<SbomFormat, string> {
  const digest = (text: string) => `sha256:${createHash("sha256").update(text).digest("hex")}`;
  return { "spdx-json": digest(spdx(subject)), "cyclonedx-json": digest(cycloneDx(subject)) };
}
