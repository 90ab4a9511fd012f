/**
 * Installing bake as a newcomer does: `make setup` leaves this checkout's `bake` on PATH, and the
 * packed package installs with `npm install -g` into a fresh prefix and works from any folder.
 */
import { test } from "uvu";
import * as assert from "uvu/assert";
import { readFileSync, realpathSync, rmSync } from "node:fs";
import path from "node:path";
import { execa } from "execa";
import { ROOT, tempTree, testEnv, tempDir } from "../helpers/bake.js";
import { busyboxRootfs, docker, removeProject, uniqueProject } from "../helpers/engine.js";
import { WEB_CHECKS, webRole } from "../fixtures/web-role.js";

const project = uniqueProject("install");
const work = tempDir("bake-install-");
const version = JSON.parse(readFileSync(path.join(ROOT, "package.json"), "utf8")).version;
let installedPrefix = "";

test.after(async () => {
  rmSync(work, { recursive: true, force: true });
  await removeProject(project);
});

test("make setup put this checkout's bake on PATH, executable", async () => {
  const which = (await execa("sh", ["-c", "command -v bake"], { reject: false })).stdout.trim();
  assert.ok(which, "bake is on PATH");
  assert.is(realpathSync(which), path.join(ROOT, "dist/src/bake.cjs"));
  const r = await execa("bake", ["--version"], { env: testEnv(), reject: false });
  assert.equal([r.exitCode, r.stdout], [0, `bake ${version}`]);
});

test("npm pack, then npm install -g into a fresh prefix: bake runs from another folder and builds", async () => {
  const pack = await execa("npm", ["pack", "--ignore-scripts", "--pack-destination", work], { cwd: ROOT });
  const tarball = path.join(work, pack.stdout.trim().split("\n").at(-1)!);
  const listing = (await execa("tar", ["-tvzf", tarball])).stdout.split("\n");
  assert.ok(
    listing.some((l) => /^-rwxr-xr-x .* package\/dist\/src\/bake\.cjs$/.test(l)),
    "the bin is executable in the package",
  );
  for (const shipped of [
    "dist/bundle/cli.cjs",
    "packer/ami.pkr.hcl.hbs",
    "packer/partials/ansible.hbs",
    "ansible/bake/host-before.yml",
    "ansible/bake/host-after.yml",
    "ansible/bake/up.yml",
    "ansible/bake/roles/service/tasks/main.yml",
    "schema/bake.schema.json",
  ]) {
    assert.ok(
      listing.some((l) => l.endsWith(`package/${shipped}`)),
      `${shipped} is in the package`,
    );
  }
  // The reference pipeline is a project, not part of the package.
  assert.not.ok(
    listing.some((l) => / package\/(ansible\/host\.yml|ansible\/roles\/|containers\/|bake\.yml)/.test(l)),
    "no reference project files in the package",
  );
  assert.not.ok(
    listing.some((l) => / package\/(src|test)\//.test(l)),
    "no sources or tests in the package",
  );

  const prefix = path.join(work, "prefix");
  installedPrefix = prefix;
  await execa("npm", [
    "install",
    "-g",
    "--prefix",
    prefix,
    tarball,
    "--no-audit",
    "--no-fund",
    "--prefer-offline",
    "--loglevel=error",
  ]);
  const env = testEnv({ PATH: `${path.join(prefix, "bin")}:/usr/sbin:/usr/bin:/sbin:/bin` });
  const installed = (args: string[], cwd: string) => execa("bake", args, { cwd, env, extendEnv: false, reject: false });
  assert.is(realpathSync(path.join(prefix, "bin/bake")), path.join(prefix, "lib/node_modules/bake/dist/src/bake.cjs"));
  const v = await installed(["--version"], work);
  assert.equal([v.exitCode, v.stdout], [0, `bake ${version}`]);

  const dir = tempTree({
    "bake.yml": `project: ${project}\nimages:\n  base: { rootfs: { tar: ${await busyboxRootfs()} } }\n  svc: { parent: base, dockerfile: svc/Dockerfile }\namis:\n  host:\n    builder: ebs\n    region: us-east-1\n    source: { owners: ["136693071363"], name: "debian-12-amd64-*" }\n    instance_type: t3.small\n    playbook: host.yml\n    preload: [base]\n`,
    "svc/Dockerfile": "ARG BAKE_PARENT\nFROM ${BAKE_PARENT}\nRUN echo installed > /v\n",
    "host.yml": "- hosts: all\n  tasks: []\n",
  });
  const build = await installed(["build", "--json"], dir);
  assert.is(build.exitCode, 0, build.stderr);
  const svc = JSON.parse(build.stdout).images.svc;
  assert.is((await docker.getImage(svc.id).inspect()).Config.Labels["bake.key"], svc.key);
  // The SBOM libraries load from the installed package's own dependencies.
  const sbom = await installed(["sbom", "svc", "--format", "cyclonedx-json"], dir);
  assert.is(sbom.exitCode, 0, sbom.stderr);
  assert.equal(
    [JSON.parse(sbom.stdout).bomFormat, JSON.parse(sbom.stdout).metadata.component.version],
    ["CycloneDX", svc.key],
  );
  const render = await installed(["render", "host"], dir);
  assert.is(render.exitCode, 0, render.stderr);
  assert.match(render.stdout, /source "amazon-ebs" "ami"/);
});

test("the installed bake bakes a user's project on --target local from bake's default host: its own playbook with a public-style role, bake's contract around it, the boot test and its spec", async () => {
  assert.ok(installedPrefix, "the package was installed by the test before");
  const env = testEnv({
    PATH: `${path.join(installedPrefix, "bin")}:/usr/sbin:/usr/bin:/sbin:/bin:/usr/local/bin`,
    HOME: process.env.HOME,
  });
  const installed = (args: string[], cwd: string) =>
    execa("bake", args, { cwd, env, extendEnv: false, reject: false, timeout: 600_000 });
  // A folder holding only the user's files: bake.yml, a playbook with a role of its own, a goss
  // spec. No local: and no Dockerfile: the local host is bake's default (Debian 12 with systemd).
  const dir = tempTree({
    "bake.yml": [
      `project: ${project}-web`,
      "images:",
      `  tools: { rootfs: { tar: ${await busyboxRootfs()} } }`,
      "amis:",
      "  web:",
      "    builder: ebs",
      "    region: us-east-1",
      '    source: { owners: ["136693071363"], name: "debian-12-amd64-*" }',
      "    instance_type: t3.small",
      "    playbook: ansible/site.yml",
      "    preload: [tools]",
      "    test: web.goss.yaml",
      "",
    ].join("\n"),
    "ansible/site.yml":
      '---\n- name: Web host\n  hosts: all\n  become: true\n  pre_tasks:\n    - name: The engine bake installed answers during the bake\n      ansible.builtin.command: docker version --format \'{{ "{{" }}.Server.Version{{ "}}" }}\'\n      changed_when: false\n  roles:\n    - role: web\n',
    ...webRole("ansible"),
    "web.goss.yaml": `service:\n  lighttpd:\n    enabled: true\n    running: true\n${WEB_CHECKS}`,
  });
  try {
    const r = await installed(["ami", "web", "--target", "local", "--json"], dir);
    assert.is(r.exitCode, 0, String(r.stderr).slice(-4000));
    assert.match(String(r.stderr), /boot test: ok preload /);
    assert.match(String(r.stderr), /boot test: ok test web\.goss\.yaml \([\d.]+ s\): 6 of 6 checks passed/);
    // bake's provisioning, from the installed package, ran around the project's playbook.
    assert.match(
      String(r.stderr),
      /TASK \[docker_host : Install the Docker engine\][\s\S]*TASK \[web : Install lighttpd\][\s\S]*TASK \[service : /,
    );
    const id = JSON.parse(r.stdout).regions.local;
    assert.is((await docker.getImage(`${project}-web/web:${JSON.parse(r.stdout).key.slice(0, 12)}`).inspect()).Id, id);
    // Nothing changed: a no-op.
    const again = await installed(["ami", "web", "--target", "local", "--json"], dir);
    assert.is(again.exitCode, 0, String(again.stderr));
    assert.is(JSON.parse(again.stdout).regions.local, id);
    assert.match(String(again.stderr), /nothing to bake/);
  } finally {
    await removeProject(`${project}-web`);
  }
});

test.run();
