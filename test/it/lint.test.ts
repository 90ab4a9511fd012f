/** The playbooks and roles bake ships pass ansible-lint (production profile) and a syntax check. */
import { test } from "uvu";
import * as assert from "uvu/assert";
import { execa } from "execa";
import { ROOT } from "../helpers/bake.js";

const PLAYBOOKS = [
  "ansible/host.yml",
  "ansible/bake/host-before.yml",
  "ansible/bake/host-after.yml",
  "ansible/bake/up.yml",
  "ansible/bake/ec2-ami-tools.yml",
];

test("ansible-lint passes on the reference host.yml and on bake's own playbooks with their roles", async () => {
  const r = await execa("ansible-lint", ["-p", "--profile", "production", ...PLAYBOOKS], {
    cwd: ROOT,
    reject: false,
    env: { NO_COLOR: "1" },
  });
  assert.is(r.exitCode, 0, `${r.stdout}\n${r.stderr}`);
});

test("ansible-playbook --syntax-check accepts the playbooks", async () => {
  for (const playbook of PLAYBOOKS) {
    const r = await execa("ansible-playbook", ["--syntax-check", "-i", "localhost,", playbook], {
      cwd: ROOT,
      reject: false,
    });
    assert.is(r.exitCode, 0, `${playbook}: ${r.stderr}`);
  }
});

test.run();
