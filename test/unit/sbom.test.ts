/** Package databases, diffs, SBOM documents, provenance statements and verify's comparisons: pure parts. */
import { test } from "uvu";
import * as assert from "uvu/assert";
import path from "node:path";
import {
  APK_INSTALLED,
  DPKG_STATUS,
  RPM_QUERY,
  parseRpmQuery,
  rpmQueryArgs,
  packageListFrom,
  parseApkInstalled,
  parseDpkgStatus,
  parseOsRelease,
} from "../../src/sbom/packages.js";
import { describeDiff, diffPackages } from "../../src/sbom/package-diff.js";
import { hostPackageChanges, keepHostPackages, readHostPackages } from "../../src/sbom/host-packages.js";
import { execa } from "execa";
import { mkdirSync, writeFileSync } from "node:fs";
import { cycloneDx, packageUrl, sbomDigests, spdx, type SbomSubject } from "../../src/sbom/sbom.js";
import { contextMaterials, imageStatement } from "../../src/sbom/provenance.js";
import { fileChanges, imageCheck, inputChanges, keyCheck } from "../../src/sbom/verify.js";
import { ansibleInputs } from "../../src/graph/playbook-inputs.js";
import { firstTarEntry } from "../../src/tools/tar.js";
import tarStream from "tar-stream";
import { Readable } from "node:stream";
import { tempTree } from "../helpers/bake.js";

const STATUS = [
  "Package: libc6\nStatus: install ok installed\nArchitecture: amd64\nSource: glibc\nVersion: 2.36-9+deb12u7\nDescription: GNU C Library\n first continuation\n .\n second",
  "Package: gone\nStatus: deinstall ok config-files\nArchitecture: amd64\nVersion: 1.0",
  "Package: half\nStatus: install reinstreq half-installed\nVersion: 1.0",
  "Package: held\nStatus: hold ok installed\nArchitecture: all\nSource: held (1.0-1)\nVersion: 1.0-1+b1",
  "Package: tzdata\nStatus: install ok installed\nArchitecture: all\nSource: tzdata\nVersion: 2024a-0+deb12u1",
].join("\n\n");

test("dpkg status: installed and held packages, source package without its version, a name equal to its source left out", () => {
  assert.equal(parseDpkgStatus(STATUS), [
    { type: "deb", name: "libc6", version: "2.36-9+deb12u7", arch: "amd64", source: "glibc" },
    { type: "deb", name: "held", version: "1.0-1+b1", arch: "all" },
    { type: "deb", name: "tzdata", version: "2024a-0+deb12u1", arch: "all" },
  ]);
});

test("apk installed database and os-release", () => {
  assert.equal(
    parseApkInstalled(
      "C:Q1=\nP:musl\nV:1.2.5-r0\nA:x86_64\nL:MIT\no:musl\n\nP:ssl_client\nV:1.36.1-r29\nA:x86_64\no:busybox\n",
    ),
    [
      { type: "apk", name: "musl", version: "1.2.5-r0", arch: "x86_64", license: "MIT" },
      { type: "apk", name: "ssl_client", version: "1.36.1-r29", arch: "x86_64", source: "busybox" },
    ],
  );
  assert.equal(
    parseOsRelease(
      'PRETTY_NAME="Debian GNU/Linux 12 (bookworm)"\nNAME="Debian GNU/Linux"\nVERSION_ID="12"\nID=debian\n',
    ),
    { id: "debian", versionId: "12", name: "Debian GNU/Linux 12 (bookworm)" },
  );
  assert.is(parseOsRelease("NAME=x\n"), undefined);
});

test("rpm: the image's own rpm lists its database (epoch, arch, source rpm, license); gpg keys are not packages", () => {
  assert.equal(rpmQueryArgs(), [
    "-qa",
    "--qf",
    "%{NAME}\\t%|EPOCH?{%{EPOCH}:}:{}|%{VERSION}-%{RELEASE}\\t%{ARCH}\\t%{SOURCERPM}\\t%{LICENSE}\\n",
  ]);
  assert.equal(
    parseRpmQuery(
      "openssl-libs\t1:3.0.7-27.el9\tx86_64\topenssl-3.0.7-27.el9.src.rpm\tASL 2.0\ngpg-pubkey\tfd431d51-4ae0493b\t(none)\t(none)\tpubkey\nbash\t5.1.8-9.el9\tx86_64\tbash-5.1.8-9.el9.src.rpm\tGPLv3+\n",
    ),
    [
      {
        type: "rpm",
        name: "openssl-libs",
        version: "1:3.0.7-27.el9",
        arch: "x86_64",
        source: "openssl",
        license: "ASL 2.0",
      },
      { type: "rpm", name: "bash", version: "5.1.8-9.el9", arch: "x86_64", license: "GPLv3+" },
    ],
  );
});

test("a package list says why it is empty, and when an rpm database could not be read", () => {
  assert.match(packageListFrom("sha256:1", new Map()).note!, /no package database \(dpkg, apk or rpm\)/);
  const rpm = packageListFrom("sha256:1", new Map([["/var/lib/rpm/rpmdb.sqlite", Buffer.alloc(0)]]));
  assert.match(rpm.note!, /an rpm database without an rpm program to read it/);
  const read = packageListFrom(
    "sha256:1",
    new Map([
      ["/var/lib/rpm/rpmdb.sqlite", Buffer.alloc(0)],
      [RPM_QUERY, Buffer.from("bash\t5.1-1\tx86_64\tbash-5.1-1.src.rpm\tGPL\n")],
    ]),
  );
  assert.equal([read.managers, read.packages.map((p) => p.name), read.note], [["rpm"], ["bash"], undefined]);
  const both = packageListFrom(
    "sha256:1",
    new Map([
      [DPKG_STATUS, Buffer.from(STATUS)],
      [APK_INSTALLED, Buffer.from("P:musl\nV:1\n")],
    ]),
  );
  assert.equal(
    [both.managers, both.packages.map((p) => `${p.type}:${p.name}`), both.note],
    [["dpkg", "apk"], ["apk:musl", "deb:held", "deb:libc6", "deb:tzdata"], undefined],
  );
});

test("package diff: changed, added and removed, by name and architecture; one line for people", () => {
  const was = parseDpkgStatus(STATUS);
  const now = parseDpkgStatus(
    STATUS.replace("2.36-9+deb12u7", "2.36-9+deb12u8").replace("Package: tzdata", "Package: tzdata-legacy"),
  );
  const d = diffPackages(was, now);
  assert.equal(d, {
    added: [{ name: "tzdata-legacy", type: "deb", version: "2024a-0+deb12u1" }],
    removed: [{ name: "tzdata", type: "deb", version: "2024a-0+deb12u1" }],
    changed: [{ name: "libc6", type: "deb", before: "2.36-9+deb12u7", after: "2.36-9+deb12u8" }],
  });
  assert.is(
    describeDiff(d),
    "libc6 2.36-9+deb12u7 → 2.36-9+deb12u8, +tzdata-legacy 2024a-0+deb12u1, -tzdata 2024a-0+deb12u1",
  );
  assert.is(describeDiff(diffPackages(was, was)), "no package changes");
});

const list = packageListFrom(
  "sha256:" + "1".repeat(64),
  new Map([
    [DPKG_STATUS, Buffer.from(STATUS)],
    ["/etc/os-release", Buffer.from("ID=debian\nVERSION_ID=12\n")],
  ]),
);
const subject: SbomSubject = {
  project: "p",
  node: "base",
  kind: "image",
  key: "a".repeat(64),
  ids: ["sha256:" + "1".repeat(64)],
  created: "2026-12-04T10:11:12.345Z",
  parts: [{ name: "base", kind: "image", list }],
  bakeVersion: "0.1.0",
};

test("package URLs carry the distro, the architecture and the source package", () => {
  assert.is(packageUrl(list.packages[0], list), "pkg:deb/debian/held@1.0-1+b1?arch=all&distro=debian-12");
  assert.is(
    packageUrl(list.packages[1], list),
    "pkg:deb/debian/libc6@2.36-9+deb12u7?arch=amd64&distro=debian-12&upstream=glibc",
  );
});

test("SBOMs are the same bytes for the same subject, differ with its key, and carry no clock of their own", () => {
  assert.equal(sbomDigests(subject), sbomDigests(structuredClone(subject)));
  const other = sbomDigests({ ...subject, key: "b".repeat(64) });
  assert.is.not(other["spdx-json"], sbomDigests(subject)["spdx-json"]);
  assert.is.not(other["cyclonedx-json"], sbomDigests(subject)["cyclonedx-json"]);
  const doc = JSON.parse(spdx(subject));
  assert.is(doc.creationInfo.created, "2026-12-04T10:11:12Z");
  assert.match(doc.documentNamespace, /^urn:uuid:[0-9a-f]{8}-[0-9a-f]{4}-5[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/);
  assert.equal(doc.relationships.slice(0, 2), [
    { spdxElementId: "SPDXRef-DOCUMENT", relationshipType: "DESCRIBES", relatedSpdxElement: "SPDXRef-image-base" },
    {
      spdxElementId: "SPDXRef-image-base",
      relationshipType: "CONTAINS",
      relatedSpdxElement: "SPDXRef-image-base-deb-0-held",
    },
  ]);
  const bom = JSON.parse(cycloneDx(subject));
  assert.is(bom.metadata.timestamp, "2026-12-04T10:11:12.345Z");
  assert.is(bom.serialNumber, doc.documentNamespace);
});

test("an AMI's SBOM: the host and each shipped image as parts, each holding its own packages", () => {
  const ami: SbomSubject = {
    ...subject,
    kind: "ami",
    node: "host",
    parts: [
      { name: "host", kind: "host", list },
      { name: "base", kind: "image", key: "c".repeat(64), id: "sha256:2", list },
    ],
  };
  const bom = JSON.parse(cycloneDx(ami));
  assert.equal(
    bom.components.map((c: any) => [c.type, c["bom-ref"], c.components.length]),
    [
      ["operating-system", "host:host", 3],
      ["container", "image:base", 3],
    ],
  );
  const doc = JSON.parse(spdx(ami));
  assert.equal(new Set(doc.packages.map((p: any) => p.SPDXID)).size, doc.packages.length, "SPDXIDs are unique");
});

test("provenance: the subject is the image id (and the pushed digest), materials are the key's inputs, the parent and the context's files", () => {
  const dir = tempTree({ "bake.yml": "project: p\n" });
  const files = contextMaterials(dir, path.join(dir, "app"), [
    { path: "main.py", type: "file", executable: false, size: 1, digest: "d".repeat(64) },
    { path: "lib", type: "dir", executable: true, size: 0 },
  ]);
  assert.equal(files, [{ path: "app/main.py", digest: "d".repeat(64) }]);
  const s = imageStatement({
    project: "p",
    node: "app",
    repo: "127.0.0.1:5000/p/app",
    key: "k".repeat(64),
    id: `sha256:${"1".repeat(64)}`,
    digest: `sha256:${"2".repeat(64)}`,
    inputs: {
      kind: "image",
      parent: "9".repeat(64),
      dockerfile: "3".repeat(64),
      context: "4".repeat(64),
      args: "5".repeat(64),
    },
    contextFiles: files,
    parent: { node: "base", id: `sha256:${"6".repeat(64)}`, key: "9".repeat(64) },
    dockerfile: "app/Dockerfile",
    args: { A: "1" },
    sbom: { "spdx-json": `sha256:${"7".repeat(64)}` },
    versions: { bake: "0.1.0", "docker-engine": "20.10.24" },
  });
  assert.equal(
    s.subject.map((x) => [x.name, x.digest.sha256]),
    [
      ["127.0.0.1:5000/p/app", "1".repeat(64)],
      [`127.0.0.1:5000/p/app@sha256:${"2".repeat(64)}`, "2".repeat(64)],
    ],
  );
  assert.equal(
    s.predicate.buildDefinition.resolvedDependencies.map((d) => d.name ?? d.uri),
    ["input:args", "input:context", "input:dockerfile", "image:base", "file:app/main.py"],
  );
  assert.equal(s.predicate.runDetails.metadata, {}, "no run: a statement for an image this run did not build");
  assert.equal(
    fileChanges(s, [
      { path: "app/main.py", digest: "e".repeat(64) },
      { path: "app/new.py", digest: "f".repeat(64) },
    ]),
    { changed: ["app/main.py"], added: ["app/new.py"], removed: [] },
  );
  assert.equal(inputChanges({ a: "1", b: "2" }, { a: "1", b: "3", c: "4" }), ["b", "c"]);
  assert.equal(keyCheck(s, "k".repeat(64), {}, files).ok, true);
  assert.match(
    keyCheck(
      s,
      "z".repeat(64),
      { ...(s.predicate.buildDefinition.internalParameters.inputs as object), context: "0".repeat(64) },
      [],
    ).detail,
    /^the working tree's key zzzzzzzzzzzz is not the recorded kkkkkkkkkkkk; inputs changed: context; removed: app\/main\.py$/,
  );
  assert.match(
    imageCheck(s, { id: "x", labels: { "bake.key": "q".repeat(64) } }).detail,
    /labelled bake\.key=qqqqqqqqqqqq, the statement says kkkkkkkkkkkk/,
  );
});

test("bake's own state beside the playbook (manifest, provenance) is not an input of an AMI's key", () => {
  const dir = tempTree({
    "host.yml": "- hosts: all\n  tasks: []\n",
    "bake-manifest.json": "{}",
    "bake-provenance.intoto.jsonl": "{}\n",
  });
  assert.equal(
    ansibleInputs(path.join(dir, "host.yml"), dir, { HOME: "/nonexistent-home" }).map((i) => i.name),
    ["host.yml"],
  );
});

test("an AMI's host list: read from the archive the provisioners download, kept by key; the nightly diff between two bakes", async () => {
  const dir = tempTree({ "bake.yml": "project: p\n" });
  const archive = async (status: string, name: string, rpm?: string) => {
    const root = path.join(dir, `${name}-root`);
    mkdirSync(path.join(root, "var/lib/dpkg"), { recursive: true });
    mkdirSync(path.join(root, "etc"), { recursive: true });
    writeFileSync(path.join(root, "var/lib/dpkg/status"), status);
    if (rpm) writeFileSync(path.join(root, "bake-rpm-qa"), rpm);
    writeFileSync(path.join(root, "etc/os-release"), "ID=debian\nVERSION_ID=12\n");
    // As the provisioner makes it: tar -C $d -cf … . (entries start with ./)
    await execa("tar", ["-C", root, "-cf", path.join(dir, `${name}.tar`), "."]);
    return path.join(dir, `${name}.tar`);
  };
  const first = await keepHostPackages(dir, "host", "aws", "k1", await archive(STATUS, "one"), "us-east-1:ami-1");
  assert.equal(
    [first.managers, first.distro?.id, first.packages.length, first.image],
    [["dpkg"], "debian", 3, "us-east-1:ami-1"],
  );
  const second = await keepHostPackages(
    dir,
    "host",
    "aws",
    "k2",
    await archive(
      STATUS.replace("2.36-9+deb12u7", "2.36-9+deb12u9"),
      "two",
      "tzdata\t2024a-1\tnoarch\ttzdata-2024a-1.src.rpm\tPublic Domain\n",
    ),
    "us-east-1:ami-2",
  );
  assert.equal(
    [second.managers, second.packages.filter((p) => p.type === "rpm").map((p) => `${p.name} ${p.version}`)],
    [["dpkg", "rpm"], ["tzdata 2024a-1"]],
    "what the host's own rpm listed",
  );
  assert.equal(readHostPackages(dir, "host", "aws", "k1")?.packages, first.packages);
  assert.is(readHostPackages(dir, "host", "local", "k1"), undefined, "kept per target");
  assert.equal(hostPackageChanges(dir, "host", "aws", "k1", "k2"), {
    since: "us-east-1:ami-1",
    added: [{ name: "tzdata", type: "rpm", version: "2024a-1" }],
    removed: [],
    changed: [{ name: "libc6", type: "deb", before: "2.36-9+deb12u7", after: "2.36-9+deb12u9" }],
  });
  assert.is(
    hostPackageChanges(dir, "host", "aws", undefined, "k2"),
    undefined,
    "a first bake has nothing to compare with",
  );
  assert.is(hostPackageChanges(dir, "host", "aws", "k2", "k2"), undefined);
});

test("what is read of a file in an image is bounded by type and size: a folder (a link to /) or a huge file is not read", async () => {
  // The first entry a folder, a huge file, or a small one; 64 MiB follow in the first case.
  const archive = (first: "dir" | "big" | "small") => {
    const pack = tarStream.pack();
    if (first === "dir") pack.entry({ name: "./", type: "directory" });
    if (first === "small") pack.entry({ name: "status" }, "Package: a\n");
    const big = Buffer.alloc(64 << 20, 0x61);
    pack.entry({ name: first === "big" ? "status" : "etc/huge", size: big.length }, big);
    pack.finalize();
    return { stream: Readable.from(pack as AsyncIterable<Buffer>) };
  };
  const dir = archive("dir");
  assert.equal(await firstTarEntry(dir.stream, 1 << 20), { name: "./", type: "directory", size: 0 });
  const big = archive("big");
  const entry = await firstTarEntry(big.stream, 1 << 20);
  assert.equal([entry?.type, entry?.size, entry?.content], ["file", 64 << 20, undefined]);
  const small = await firstTarEntry(archive("small").stream, 1 << 20);
  assert.is(small?.content?.toString(), "Package: a\n");
});

test.run();
