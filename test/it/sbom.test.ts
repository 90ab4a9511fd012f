/**
 * What is inside: package lists read from images, SBOMs checked by each format's own validator
 * (CycloneDX's JSON schema through the CycloneDX library, SPDX through the SPDX project's
 * pyspdxtools), the manifest's SBOM digests, provenance statements and `bake verify`.
 */
import { test } from "uvu";
import * as assert from "uvu/assert";
import { createHash } from "node:crypto";
import { mkdirSync, readFileSync, symlinkSync, writeFileSync, copyFileSync } from "node:fs";
import path from "node:path";
import { execa } from "execa";
import { JsonStrictValidator } from "@cyclonedx/cyclonedx-library/Validation";
import { Version } from "@cyclonedx/cyclonedx-library/Spec";
import { bake, tempTree, writeTree } from "../helpers/bake.js";
import { busyboxImage, busyboxRootfs, docker, removeProject, uniqueProject } from "../helpers/engine.js";
import http from "node:http";
import { connectDocker } from "../../src/tools/docker.js";

const project = uniqueProject("sbom-it");

test.after(async () => {
  await removeProject(project);
});

const DPKG_STATUS = (openssl: string) =>
  [
    `Package: openssl\nStatus: install ok installed\nPriority: optional\nArchitecture: amd64\nVersion: ${openssl}\nDescription: Secure Sockets Layer toolkit\n this is a continuation line\n .\n and another\n`,
    `Package: libssl3\nStatus: install ok installed\nArchitecture: amd64\nSource: openssl\nVersion: ${openssl}\n`,
    "Package: oldpkg\nStatus: deinstall ok config-files\nArchitecture: amd64\nVersion: 0.9\n",
    "Package: base-files\nStatus: install ok installed\nArchitecture: amd64\nVersion: 12.4+deb12u5\n",
  ].join("\n");

const APK_INSTALLED =
  "C:Q1abc=\nP:musl\nV:1.2.5-r0\nA:x86_64\nL:MIT\no:musl\n\nC:Q1def=\nP:busybox-binsh\nV:1.36.1-r29\nA:x86_64\nL:GPL-2.0-only\no:busybox\n";

/** A rootfs tarball: busybox, an os-release behind a link (as Debian has it), and these files. */
async function rootfs(dir: string, name: string, files: Record<string, string>): Promise<string> {
  const root = path.join(dir, `${name}-root`);
  mkdirSync(path.join(root, "bin"), { recursive: true });
  copyFileSync("/bin/busybox", path.join(root, "bin/busybox"));
  for (const c of ["sh", "cat", "true"]) symlinkSync("busybox", path.join(root, "bin", c));
  writeTree(root, files);
  const tar = path.join(dir, `${name}.tar`);
  await execa("tar", ["-C", root, "-cf", tar, "."]);
  return tar;
}

/** The debian rootfs again with another dpkg database. */
async function newDatabase(dir: string, status: string): Promise<void> {
  writeFileSync(path.join(dir, "deb-root/var/lib/dpkg/status"), status);
  await execa("tar", ["-C", path.join(dir, "deb-root"), "-cf", path.join(dir, "deb.tar"), "."]);
}

const sha256 = (text: string) => `sha256:${createHash("sha256").update(text).digest("hex")}`;

async function fixture() {
  const dir = tempTree({
    "app/Dockerfile": "ARG BAKE_PARENT\nFROM ${BAKE_PARENT}\nCOPY hello.txt /srv/hello.txt\n",
    "app/hello.txt": "hello\n",
  });
  const os = {
    "usr/lib/os-release": 'PRETTY_NAME="Debian GNU/Linux 12 (bookworm)"\nID=debian\nVERSION_ID="12"\n',
    "etc/os-release": "->../usr/lib/os-release",
  };
  await rootfs(dir, "deb", { ...os, "var/lib/dpkg/status": DPKG_STATUS("3.0.13-1~deb12u1") });
  await rootfs(dir, "alpine", {
    "etc/os-release": "ID=alpine\nVERSION_ID=3.20.1\n",
    "lib/apk/db/installed": APK_INSTALLED,
  });
  await rootfs(dir, "bare", {});
  writeFileSync(
    path.join(dir, "bake.yml"),
    `project: ${project}\nimages:\n  base: { rootfs: { tar: deb.tar } }\n  app: { parent: base, dockerfile: app/Dockerfile }\n  alp: { rootfs: { tar: alpine.tar } }\n  bare: { rootfs: { tar: bare.tar } }\n`,
  );
  return dir;
}

test("package lists are read from the images' databases; both SBOM formats pass their validators; the manifest holds their digests", async () => {
  const dir = await fixture();
  const r = await bake(["build", "--json"], { cwd: dir });
  assert.is(r.code, 0, r.stderr);
  const built = JSON.parse(r.stdout).images;
  const manifest = JSON.parse(readFileSync(path.join(dir, "bake-manifest.json"), "utf8"));

  for (const node of ["base", "app", "alp", "bare"]) {
    for (const format of ["spdx-json", "cyclonedx-json"]) {
      const out = path.join(dir, `${node}.${format === "spdx-json" ? "spdx.json" : "cdx.json"}`);
      const s = await bake(["sbom", node, "--format", format, "--out", out], { cwd: dir });
      assert.is(s.code, 0, s.stderr);
      const text = readFileSync(out, "utf8");
      assert.is(
        sha256(text),
        manifest.images[node].sbom[format],
        `${node} ${format}: the manifest's digest is the SBOM's`,
      );
      const stdout = await bake(["sbom", node, "--format", format], { cwd: dir });
      assert.is(`${stdout.stdout}\n`, text, "stdout and --out carry the same bytes");
      if (format === "cyclonedx-json")
        assert.is(await new JsonStrictValidator(Version.v1dot6).validate(text), null, `${node}: CycloneDX 1.6 schema`);
      else {
        const v = await execa("pyspdxtools", ["-i", out], { reject: false });
        assert.is(v.exitCode, 0, `${node}: pyspdxtools: ${v.stderr}${v.stdout}`);
      }
    }
  }

  const cdx = (node: string) => JSON.parse(readFileSync(path.join(dir, `${node}.cdx.json`), "utf8"));
  const purls = (node: string) => (cdx(node).components ?? []).map((c: any) => c.purl);
  // Installed packages only (oldpkg has only its config files left), with the os-release behind a link.
  assert.equal(purls("base"), [
    "pkg:deb/debian/base-files@12.4+deb12u5?arch=amd64&distro=debian-12",
    "pkg:deb/debian/libssl3@3.0.13-1~deb12u1?arch=amd64&distro=debian-12&upstream=openssl",
    "pkg:deb/debian/openssl@3.0.13-1~deb12u1?arch=amd64&distro=debian-12",
  ]);
  assert.equal(purls("app"), purls("base"), "a child holds its parent's packages");
  assert.equal(purls("alp"), [
    "pkg:apk/alpine/busybox-binsh@1.36.1-r29?arch=x86_64&distro=alpine-3.20.1&upstream=busybox",
    "pkg:apk/alpine/musl@1.2.5-r0?arch=x86_64&distro=alpine-3.20.1",
  ]);
  assert.equal(purls("bare"), []);
  assert.match(
    JSON.stringify(cdx("bare").metadata.component.properties),
    /no package database \(dpkg, apk or rpm\) in the image/,
  );
  assert.is(cdx("app").metadata.component.properties.find((p: any) => p.name === "bake:image-id").value, built.app.id);
  const spdx = JSON.parse(readFileSync(path.join(dir, "base.spdx.json"), "utf8"));
  assert.equal(
    spdx.packages.slice(1).map((p: any) => [p.name, p.versionInfo]),
    [
      ["base-files", "12.4+deb12u5"],
      ["libssl3", "3.0.13-1~deb12u1"],
      ["openssl", "3.0.13-1~deb12u1"],
    ],
  );

  // Nothing ran in the images to read them: no container of theirs is left, stopped or not.
  const left = await docker.listContainers({
    all: true,
    filters: JSON.stringify({ ancestor: Object.values(built).map((b: any) => b.id) }),
  });
  assert.equal(left, []);
});

test("a rebuilt base: build output lists each package's version change; provenance and bake verify follow the working tree", async () => {
  const dir = await fixture();
  let r = await bake(["build", "base", "app", "--json"], { cwd: dir });
  assert.is(r.code, 0, r.stderr);
  const first = JSON.parse(r.stdout).images;

  const statements = () =>
    Object.fromEntries(
      readFileSync(path.join(dir, "bake-provenance.intoto.jsonl"), "utf8")
        .trim()
        .split("\n")
        .map((l) => JSON.parse(l))
        .map((s) => [s.subject[0].annotations["bake.node"], s]),
    );
  const app = statements().app;
  assert.is(app._type, "https://in-toto.io/Statement/v1");
  assert.is(app.predicateType, "https://slsa.dev/provenance/v1");
  assert.equal(app.subject[0].digest, { sha256: first.app.id.slice(7) });
  assert.is(app.predicate.buildDefinition.internalParameters.key, first.app.key);
  const deps = app.predicate.buildDefinition.resolvedDependencies;
  assert.equal(deps.find((d: any) => d.uri === "file:app/hello.txt").digest, { sha256: sha256("hello\n").slice(7) });
  assert.equal(deps.find((d: any) => d.name === "image:base").digest, { sha256: first.base.id.slice(7) });
  assert.match(app.predicate.runDetails.builder.version["docker-engine"], /^\d+\.\d+/);
  assert.ok(app.predicate.runDetails.metadata.invocationId, "the run that built it");

  let v = await bake(["verify", "app"], { cwd: dir });
  assert.is(v.code, 0, v.stdout + v.stderr);
  assert.match(v.stdout, /^app: verified\n {2}ok +working tree: the working tree's key is the recorded one/);

  // The same size, other content: the key moves, and verify names the file.
  writeFileSync(path.join(dir, "app/hello.txt"), "HELLO\n");
  v = await bake(["verify", "app", "--json"], { cwd: dir });
  assert.is(v.code, 1, v.stdout + v.stderr);
  const result = JSON.parse(v.stdout);
  assert.equal(
    result.checks.map((c: any) => [c.name, c.ok]),
    [
      ["working tree", false],
      ["image", true],
      ["manifest", true],
    ],
  );
  assert.match(result.checks[0].detail, /inputs changed: context; changed: app\/hello\.txt$/);
  writeFileSync(path.join(dir, "app/hello.txt"), "hello\n");
  v = await bake(["verify", "app"], { cwd: dir });
  assert.is(v.code, 0, "back as it was, verified again");

  // A new upstream: openssl moves, a package is added.
  await newDatabase(
    dir,
    `${DPKG_STATUS("3.0.15-1~deb12u1")}\nPackage: newpkg\nStatus: install ok installed\nArchitecture: all\nVersion: 2.0\n`,
  );
  r = await bake(["build", "base", "app", "--json"], { cwd: dir });
  assert.is(r.code, 0, r.stderr);
  const second = JSON.parse(r.stdout).images;
  for (const node of ["base", "app"]) {
    assert.equal(second[node].packages, {
      since: first[node].id,
      added: [{ name: "newpkg", type: "deb", version: "2.0" }],
      removed: [],
      changed: [
        { name: "libssl3", type: "deb", before: "3.0.13-1~deb12u1", after: "3.0.15-1~deb12u1" },
        { name: "openssl", type: "deb", before: "3.0.13-1~deb12u1", after: "3.0.15-1~deb12u1" },
      ],
    });
  }
  assert.is(statements().app.subject[0].digest.sha256, second.app.id.slice(7), "the statement follows the new image");

  // Human output: the change under each rebuilt image.
  await newDatabase(dir, DPKG_STATUS("3.0.16-1~deb12u1"));
  r = await bake(["build", "base"], { cwd: dir });
  assert.is(r.code, 0, r.stderr);
  assert.match(
    r.stdout,
    /^base +built .*\n +packages since [0-9a-f]{12}: libssl3 3\.0\.15-1~deb12u1 → 3\.0\.16-1~deb12u1, openssl 3\.0\.15-1~deb12u1 → 3\.0\.16-1~deb12u1, -newpkg 2\.0$/,
  );

  // The recorded image is removed from the engine: verify fails on it and says which.
  await docker.getImage(second.app.id).remove({ force: true });
  v = await bake(["verify", "app"], { cwd: dir });
  assert.is(v.code, 1);
  assert.match(
    v.stdout,
    new RegExp(`FAILED image: the engine has no image ${second.app.id.slice(0, 19)}, the statement's subject`),
  );
});

test("an image with an rpm database beside dpkg's: the image's own rpm lists it (no network, nothing left), dpkg's packages too", async () => {
  const dir = tempTree({
    "bake.yml": `project: ${project}-rpm
images:
  base:
    rootfs:
      debootstrap: { suite: bookworm, variant: minbase, include: [python3, ca-certificates] }
  rpmimg: { parent: base, dockerfile: rpm/Dockerfile }
`,
    "rpm/fixture.spec":
      "Name: bake-fixture\nVersion: 1.2.3\nRelease: 4\nEpoch: 2\nSummary: fixture\nLicense: MIT\nBuildArch: noarch\n%description\nfixture\n%files\n",
    "rpm/Dockerfile": [
      "ARG BAKE_PARENT",
      "FROM ${BAKE_PARENT}",
      "RUN apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends rpm >/dev/null && rm -rf /var/lib/apt/lists/*",
      // Debian's rpm keeps its database in ~/.rpmdb; rpm distributions keep it in /var/lib/rpm.
      "RUN mkdir -p /etc/rpm && echo '%_dbpath /var/lib/rpm' > /etc/rpm/macros",
      "COPY fixture.spec /tmp/fixture.spec",
      "RUN rpmbuild -bb --quiet --define '_topdir /tmp/rpm' /tmp/fixture.spec && rpm -i --nodeps /tmp/rpm/RPMS/noarch/bake-fixture-1.2.3-4.noarch.rpm && rm -rf /tmp/rpm /tmp/fixture.spec",
      "",
    ].join("\n"),
  });
  const r = await bake(["build", "--json"], { cwd: dir });
  assert.is(r.code, 0, r.stderr);
  const id = JSON.parse(r.stdout).images.rpmimg.id;
  const sbom = await bake(["sbom", "rpmimg", "--format", "cyclonedx-json"], { cwd: dir });
  assert.is(sbom.code, 0, sbom.stderr);
  const components = JSON.parse(sbom.stdout).components;
  const fixture = components.find((c: any) => c.name === "bake-fixture");
  assert.equal(
    [fixture.version, fixture.purl],
    ["2:1.2.3-4", "pkg:rpm/debian/bake-fixture@2:1.2.3-4?arch=noarch&distro=debian-12"],
  );
  // The reference: rpm itself, run in the image.
  const query = await execa("docker", [
    "run",
    "--rm",
    "--entrypoint",
    "rpm",
    id,
    "-qa",
    "--qf",
    "%{NAME} %|EPOCH?{%{EPOCH}:}:{}|%{VERSION}-%{RELEASE}\\n",
  ]);
  assert.equal(
    components
      .filter((c: any) => c.purl.startsWith("pkg:rpm/"))
      .map((c: any) => `${c.name} ${c.version}`)
      .sort(),
    query.stdout
      .split("\n")
      .filter((l) => l && !l.startsWith("gpg-pubkey"))
      .sort(),
  );
  assert.ok(
    components.some((c: any) => c.name === "rpm" && c.purl.startsWith("pkg:deb/debian/rpm@")),
    "dpkg's packages are listed too",
  );
  const left = await docker.listContainers({ all: true, filters: JSON.stringify({ ancestor: [id] }) });
  assert.equal(left, [], "the container rpm ran in is removed");
  await removeProject(`${project}-rpm`);
});

test("an image whose own rpm fails or hangs: the build and its manifest go on, the list says why, bounded in time, nothing left running", async () => {
  const name = `${project}-badrpm`;
  const rpm = (body: string) =>
    `ARG BAKE_PARENT\nFROM \${BAKE_PARENT}\nRUN mkdir -p /var/lib/rpm /usr/bin && echo db > /var/lib/rpm/Packages && printf '#!/bin/sh\\n${body}\\n' > /usr/bin/rpm && chmod 755 /usr/bin/rpm\n`;
  const dir = tempTree({
    "bake.yml": `project: ${name}\nimages:\n  base: { rootfs: { tar: ${await busyboxRootfs()} } }\n  failing: { parent: base, dockerfile: failing/Dockerfile }\n  hanging: { parent: base, dockerfile: hanging/Dockerfile }\n`,
    "failing/Dockerfile": rpm("echo rpmdb: damaged >&2; exit 3"),
    "hanging/Dockerfile": rpm("exec sleep 600"),
  });
  try {
    const started = Date.now();
    const r = await bake(["build", "--json"], { cwd: dir, env: { BAKE_RPM_TIMEOUT_SECONDS: "3" } });
    assert.is(r.code, 0, r.stderr);
    assert.ok(Date.now() - started < 300_000, "bounded by the timeout, not by the hanging rpm (600 s)");
    const built = JSON.parse(r.stdout).images;
    const manifest = JSON.parse(readFileSync(path.join(dir, "bake-manifest.json"), "utf8"));
    for (const node of ["failing", "hanging"])
      assert.is(manifest.images[node].id, built[node].id, `${node} is in the manifest`);
    const note = async (node: string) => {
      const sbom = await bake(["sbom", node, "--format", "cyclonedx-json"], {
        cwd: dir,
        env: { BAKE_RPM_TIMEOUT_SECONDS: "3" },
      });
      assert.is(sbom.code, 0, sbom.stderr);
      return (
        JSON.parse(sbom.stdout).metadata.component.properties.find((p: any) => p.name === "bake:packages-note")
          ?.value ?? ""
      );
    };
    assert.match(
      await note("failing"),
      /the image's rpm could not list its packages \(\/usr\/bin\/rpm -qa in image sha256:[0-9a-f]+ exited 3: rpmdb: damaged\)/,
    );
    assert.match(await note("hanging"), /did not finish within 3 s/);
    for (const node of ["failing", "hanging"]) {
      assert.equal(
        await docker.listContainers({ all: true, filters: JSON.stringify({ ancestor: [built[node].id] }) }),
        [],
        `no ${node} container left`,
      );
    }
  } finally {
    await removeProject(name);
  }
});

test("reading an image's files leaves no connection to the engine busy (a busy one kept every build of a busybox image alive 5-10 s after its output)", async () => {
  // busybox has /bin/rpm (an applet): the rpm probe's HEAD answers 200, and its response must be read.
  const image = await busyboxImage();
  const tool = connectDocker();
  const files = await tool.readImageFiles(
    image,
    ["/etc/os-release", "/var/lib/dpkg/status"],
    ["/bin/rpm", "/bin/busybox", "/var/lib/rpm/Packages"],
  );
  assert.equal([...files.keys()].sort(), ["/bin/busybox", "/bin/rpm"], "what is there is found, what is not is not");
  await new Promise((r) => setImmediate(r));
  const busy = Object.values(http.globalAgent.sockets).flat().length;
  assert.is(busy, 0, "every request's connection went back to the pool or was closed");
});

test("bake sbom and verify: bad usage is exit 2, a node never built is exit 1 with the command to run", async () => {
  const dir = await fixture();
  let r = await bake(["sbom", "nope"], { cwd: dir });
  assert.is(r.code, 2);
  assert.match(r.stderr, /unknown node nope/);
  r = await bake(["sbom", "base", "--format", "xml"], { cwd: dir });
  assert.is(r.code, 2);
  assert.match(r.stderr, /Invalid values:\s+Argument: format, Given: "xml"/);
  r = await bake(["sbom", "base", "--out", "no/such/folder/base.json"], { cwd: dir });
  assert.is(r.code, 2);
  assert.match(r.stderr, /--out no\/such\/folder\/base\.json: the folder .*no\/such\/folder does not exist/);
  r = await bake(["sbom", "alp"], { cwd: dir });
  assert.is(r.code, 1);
  assert.match(r.stderr, /no image with alp's current key [0-9a-f]{12}: run bake build alp first/);
  r = await bake(["verify", "alp"], { cwd: dir });
  assert.is(r.code, 1);
  assert.match(
    r.stdout,
    /FAILED provenance: no statement for alp in .*bake-provenance\.intoto\.jsonl: run bake build alp/,
  );
});

test.run();
