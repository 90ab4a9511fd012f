/** Everything Ansible can read for a playbook is an input of the AMI's key, by a stable name. */
import { test } from "uvu";
import * as assert from "uvu/assert";
import { readFileSync, writeFileSync } from "node:fs";
import path from "node:path";
import {
  ansibleConfigFile,
  ansibleInputs,
  configuredRolesPaths,
  iniValue,
  roleDependencies,
} from "../../src/graph/playbook-inputs.js";
import { ConfigError } from "../../src/errors.js";
import { amiInputs } from "../../src/graph/inputs.js";
import { keyOf } from "../../src/graph/keys.js";
import { changedInputs, describeInputs } from "../../src/plan/plan.js";
import { bake, tempTree } from "../helpers/bake.js";
import type { AmiNode } from "../../src/config/model.js";

const HOME = { HOME: "/nonexistent-home" };

function project(): string {
  return tempTree({
    "bake.yml": "project: p\n",
    "ansible/host.yml": [
      "- hosts: all",
      "  vars_files: [../shared/site.yml]",
      "  roles: [web, { role: from_path }]",
      "  tasks:",
      "    - ansible.builtin.include_tasks: ../shared/extra.yml",
      "    - block:",
      "        - include_vars: { file: vars/more.yml }",
      "",
    ].join("\n"),
    "ansible/group_vars/all.yml": "port: 80\n",
    "ansible/host_vars/localhost.yml": "x: 1\n",
    "ansible/vars/more.yml": "y: 2\n",
    "ansible/files/motd": "hello\n",
    "ansible/roles/web/tasks/main.yml": "- ansible.builtin.import_tasks: ../../../../shared/role-extra.yml\n",
    "ansible/ansible.cfg": "[defaults]\n# comment\nroles_path = ../vendor/roles:~/nowhere\n",
    "ansible/.bakeignore": "*.md\nscratch\n",
    "ansible/README.md": "notes\n",
    "ansible/scratch/tmp.txt": "t\n",
    "ansible/x.retry": "host\n",
    "shared/site.yml": "site: a\n",
    "shared/extra.yml": "- debug: msg=x\n",
    "shared/role-extra.yml": "- debug: msg=y\n",
    "shared/unrelated.yml": "not read\n",
    "vendor/roles/from_path/tasks/main.yml": "- debug: msg=z\n",
    "vendor/roles/other/tasks/main.yml": "- debug: msg=other\n",
  });
}

test("the inputs: the playbook's folder less .bakeignore, ansible.cfg, roles_path, files named outside the folder", () => {
  const dir = project();
  const names = ansibleInputs(path.join(dir, "ansible/host.yml"), dir, HOME).map((i) => i.name);
  assert.equal(names, [
    ".bakeignore",
    "ansible.cfg",
    "files/motd",
    "group_vars/all.yml",
    "host.yml",
    "host_vars/localhost.yml",
    "roles/web/tasks/main.yml",
    "shared/extra.yml",
    "shared/role-extra.yml",
    "shared/site.yml",
    "vars/more.yml",
    "vendor/roles/from_path/tasks/main.yml",
    "vendor/roles/other/tasks/main.yml",
  ]);
});

test("the ansible.cfg Ansible reads: ANSIBLE_CONFIG, then the playbook's folder, then the project's", () => {
  const dir = project();
  const playbook = path.join(dir, "ansible/host.yml");
  assert.is(ansibleConfigFile(playbook, dir, HOME), path.join(dir, "ansible/ansible.cfg"));
  writeFileSync(path.join(dir, "own.cfg"), "[defaults]\n");
  assert.is(ansibleConfigFile(playbook, dir, { ...HOME, ANSIBLE_CONFIG: "own.cfg" }), path.join(dir, "own.cfg"));
  const bare = tempTree({ "pb/site.yml": "- hosts: all\n", "ansible.cfg": "[defaults]\n" });
  assert.is(ansibleConfigFile(path.join(bare, "pb/site.yml"), bare, HOME), path.join(bare, "ansible.cfg"));
  assert.equal(configuredRolesPaths(path.join(dir, "ansible/ansible.cfg"), dir, HOME), [
    path.join(dir, "vendor/roles"),
    "/nonexistent-home/nowhere",
  ]);
  assert.equal(configuredRolesPaths(undefined, dir, { ...HOME, ANSIBLE_ROLES_PATH: "r1:/abs" }), [
    path.join(dir, "r1"),
    "/abs",
  ]);
  assert.is(
    iniValue("[other]\nroles_path=x\n[defaults]\nroles_path: a:b ; not a comment here\n", "defaults", "roles_path"),
    "a:b ; not a comment here",
  );
});

test("an edit of any file Ansible reads moves the AMI's key, and the change is named", async () => {
  const dir = project();
  const ami = {
    name: "host",
    builder: "ebs",
    region: "us-east-1",
    source: {},
    instanceType: "t3.small",
    playbook: path.join(dir, "ansible/host.yml"),
    releaseImages: [],
  } as unknown as AmiNode;
  const before = await amiInputs(ami, dir);
  for (const [file, name] of [
    ["ansible/group_vars/all.yml", "group_vars/all.yml"],
    ["ansible/host_vars/localhost.yml", "host_vars/localhost.yml"],
    ["ansible/files/motd", "files/motd"],
    ["ansible/ansible.cfg", "ansible.cfg"],
    ["shared/extra.yml", "shared/extra.yml"],
    ["shared/site.yml", "shared/site.yml"],
    ["shared/role-extra.yml", "shared/role-extra.yml"],
    ["vendor/roles/other/tasks/main.yml", "vendor/roles/other/tasks/main.yml"],
  ]) {
    const original = readFileSync(path.join(dir, file), "utf8");
    writeFileSync(path.join(dir, file), `${original}# edited\n`);
    const after = await amiInputs(ami, dir);
    assert.is.not(keyOf(after), keyOf(before), file);
    assert.is(describeInputs(changedInputs(before, after)!), `playbook input ${name}`);
    writeFileSync(path.join(dir, file), original);
  }
  // What .bakeignore leaves out, bake's own state and files Ansible is not pointed at do not count.
  for (const file of ["ansible/README.md", "ansible/scratch/tmp.txt", "ansible/x.retry", "shared/unrelated.yml"])
    writeFileSync(path.join(dir, file), "changed\n");
  assert.is(keyOf(await amiInputs(ami, dir)), keyOf(before));
});

test("a role dependency that names no role is a config error at its line, through the CLI too (exit 2, no stack trace)", async () => {
  const dir = tempTree({
    "bake.yml":
      "project: p\nimages:\n  base: { rootfs: { tar: r.tar } }\namis:\n  host:\n    builder: ebs\n    region: us-east-1\n    source: { owners: [self], name: x }\n    instance_type: t3.small\n    playbook: ansible/host.yml\n    preload: [base]\n",
    "r.tar": "x",
    "ansible/host.yml": "- hosts: all\n  roles: [web]\n",
    "ansible/roles/web/meta/main.yml": "---\ndependencies:\n  - role: common\n  - when: true\n",
  });
  assert.throws(
    () => roleDependencies(path.join(dir, "ansible/roles/web/meta/main.yml"), dir),
    (e: any) =>
      e instanceof ConfigError &&
      e.describe().startsWith("ansible/roles/web/meta/main.yml:4:5: a role dependency names no role"),
  );
  const r = await bake(["plan", "--target", "local"], { cwd: dir, env: { DOCKER_HOST: "unix:///nonexistent.sock" } });
  assert.is(r.code, 2, r.stderr);
  assert.match(r.stderr, /^error: ansible\/roles\/web\/meta\/main\.yml:4:5: a role dependency names no role/m);
  assert.not.match(r.stderr, /\n\s+at /);
});

test("a playbook that names one of bake's own roles is a config error at its line (exit 2); a project's own role of that name is its own", async () => {
  const files = {
    "bake.yml":
      "project: p\nimages:\n  base: { rootfs: { tar: r.tar } }\namis:\n  host:\n    builder: ebs\n    region: us-east-1\n    source: { owners: [self], name: x }\n    instance_type: t3.small\n    playbook: ansible/host.yml\n    preload: [base]\n",
    "r.tar": "x",
    "ansible/host.yml": "- name: Host\n  hosts: all\n  roles:\n    - role: web\n    - role: preload\n",
    "ansible/roles/web/tasks/main.yml": "- ansible.builtin.include_role:\n    name: docker_host\n",
  };
  const dir = tempTree(files);
  assert.throws(
    () => ansibleInputs(path.join(dir, "ansible/host.yml"), dir, HOME),
    (e: any) =>
      e instanceof ConfigError &&
      /^ansible\/roles\/web\/tasks\/main\.yml:2:11: role "docker_host" is bake's own/.test(e.describe()),
  );
  const r = await bake(["plan", "--target", "local"], { cwd: dir, env: { DOCKER_HOST: "unix:///nonexistent.sock" } });
  assert.is(r.code, 2, r.stderr);
  assert.match(
    r.stderr,
    /^error: ansible\/roles\/web\/tasks\/main\.yml:2:11: role "docker_host" is bake's own: bake installs the engine/m,
  );
  assert.match(r.stderr, /fix: remove it from the playbook/);
  assert.not.match(r.stderr, /\n\s+at /);
  // The role named in the play itself, at its line.
  writeFileSync(path.join(dir, "ansible/roles/web/tasks/main.yml"), "- ansible.builtin.debug: { msg: hi }\n");
  assert.throws(
    () => ansibleInputs(path.join(dir, "ansible/host.yml"), dir, HOME),
    (e: any) =>
      e instanceof ConfigError && e.describe().startsWith('ansible/host.yml:5:13: role "preload" is bake\'s own'),
  );
  // A project that has a role of that name uses its own.
  const own = tempTree({
    ...files,
    "ansible/roles/web/tasks/main.yml": "- ansible.builtin.debug: { msg: hi }\n",
    "ansible/roles/preload/tasks/main.yml": "- ansible.builtin.debug: { msg: mine }\n",
  });
  assert.ok(
    ansibleInputs(path.join(own, "ansible/host.yml"), own, HOME).some((i) => i.name === "roles/preload/tasks/main.yml"),
  );
});

test("bake's own provisioning is an input of every AMI's key, named in the plan when it changes; an AMI needs no playbook", async () => {
  const dir = project();
  const ami = {
    name: "host",
    builder: "ebs",
    region: "us-east-1",
    source: {},
    instanceType: "t3.small",
    engine: "bake",
    releaseImages: [],
  } as unknown as AmiNode;
  const inputs = await amiInputs(ami, dir);
  assert.match(inputs.provisioning, /^[0-9a-f]{64}$/);
  assert.equal(
    Object.keys(inputs).filter((k) => k.startsWith("ansible:")),
    [],
    "no playbook, no playbook inputs",
  );
  assert.is(
    describeInputs(changedInputs({ ...inputs, provisioning: "0".repeat(64) }, inputs)!),
    "bake's host provisioning",
  );
  const own = await amiInputs({ ...ami, engine: "own" } as AmiNode, dir);
  assert.is.not(keyOf(own), keyOf(inputs), "engine: own is another key");
});

test("many changed files are summed up", () => {
  assert.is(
    describeInputs(["ansible:a", "ansible:b", "spec", "ansible:c", "ansible:d", "ansible:e", "ansible:f", "ansible:g"]),
    "AMI settings, playbook inputs a, b, c, d, e and 2 more",
  );
});

test.run();
