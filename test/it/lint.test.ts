/** The playbooks and roles bake ships pass ansible-lint (production profile) and a syntax check. */
import { test } from "uvu";
import * as assert from "uvu/assert";
import { execa } from "execa";
import { ROOT } from "../helpers/bake.js";

test("ansible-lint passes on host.yml, up.yml and ec2-ami-tools.yml with their roles", async () => {
  const r = await execa("ansible-lint", ["-p", "--profile", "production", "ansible/host.yml", "ansible/up.yml", "ansible/ec2-ami-tools.yml"], { cwd: ROOT, reject: false, env: { NO_COLOR: "1" } });
  assert.is(r.exitCode, 0, `${r.stdout}\n${r.stderr}`);
});

test("ansible-playbook --syntax-check accepts the playbooks", async () => {
  for (const playbook of ["ansible/host.yml", "ansible/up.yml", "ansible/ec2-ami-tools.yml"]) {
    const r = await execa("ansible-playbook", ["--syntax-check", "-i", "localhost,", playbook], { cwd: ROOT, reject: false });
    assert.is(r.exitCode, 0, `${playbook}: ${r.stderr}`);
  }
});

test.run();
