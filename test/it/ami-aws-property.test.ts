/**
 * Property tests of the aws target's rendering: arbitrary strings (quotes, backslashes, `${`,
 * `%{`, newlines, non-ASCII) in config values reach Packer literally. Part of `make test`, not of
 * `make test-fast` (a dozen Packer runs): the render itself is covered there by ami-aws.test.
 */
import { test } from "uvu";
import * as assert from "uvu/assert";
import { writeFileSync } from "node:fs";
import path from "node:path";
import { execa } from "execa";
import { bake, tempDir } from "../helpers/bake.js";
import { motoEnv, registerAmi, resetMoto } from "../helpers/moto.js";
import { awsFixture, packerEnv, suffix } from "../helpers/aws-project.js";
import { hclString } from "../../src/ami/hcl.js";

test.before(async () => {
  await resetMoto();
  await registerAmi(`aws-src-${suffix}-1`);
});

const ALPHABET = [
  '"',
  "\\",
  "$",
  "{",
  "}",
  "%",
  "\n",
  "\t",
  "\r",
  "'",
  "`",
  "é",
  "✓",
  " ",
  "a",
  "Z",
  "0",
  ":",
  "/",
  "*",
  "[",
  "]",
  "=",
  "#",
];
const PIECES = ["${", "%{", "$${", "%%{", "{{", "}}", "\\n", '\\"', "${var.x}", "%{ if true }"];
function arbitrary(seed: number): string {
  let x = (seed * 2654435761) % 2 ** 32;
  const next = () => (x = (x * 1664525 + 1013904223) % 2 ** 32) / 2 ** 32;
  let s = "";
  const length = 1 + Math.floor(next() * 24);
  for (let i = 0; i < length; i++)
    s += next() < 0.25 ? PIECES[Math.floor(next() * PIECES.length)] : ALPHABET[Math.floor(next() * ALPHABET.length)];
  return s;
}

test("property: arbitrary strings through the hcl helper reach Packer literally", async () => {
  const values = Array.from({ length: 60 }, (_, i) => arbitrary(i + 1));
  const dir = tempDir("bake-hcl-property-");
  writeFileSync(
    path.join(dir, "t.pkr.hcl"),
    `locals {\n${values.map((v, i) => `  v${i} = ${hclString(v)}`).join("\n")}\n}\nsource "null" "n" {\n  communicator = "none"\n}\nbuild {\n  sources = ["source.null.n"]\n}\n`,
  );
  const { stdout } = await execa("packer", ["console", "-config-type=hcl2", dir], {
    input: `jsonencode([${values.map((_, i) => `local.v${i}`).join(", ")}])\n`,
  });
  assert.equal(JSON.parse(stdout.trim()), values);
});

test("property: arbitrary strings in config values render to HCL that packer validate accepts", async () => {
  for (let i = 0; i < 6; i++) {
    const name = arbitrary(100 + i).replace(/[\n\r]/g, " ");
    const playbook = `play ${arbitrary(200 + i).replace(/[\n\r\t/\\]/g, "_")}.yml`;
    const dir = await awsFixture("    local: { image: base }\n", "ebs", name, playbook);
    for (const target of ["aws", "local"]) {
      const out = path.join(dir, `rendered-${target}`);
      const r = await bake(["render", "host", "--target", target, "--out", out], { cwd: dir, env: motoEnv });
      assert.is(r.code, 0, `${JSON.stringify(name)} ${JSON.stringify(playbook)}: ${r.stderr}`);
      await execa("packer", ["validate", out], { env: packerEnv() }).catch((e) =>
        assert.unreachable(`${target} ${JSON.stringify(name)} ${JSON.stringify(playbook)}: ${e.stderr}`),
      );
    }
  }
});

test.run();
