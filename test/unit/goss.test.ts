/** goss's arguments and output, read purely; the test: key as bake.yml gives it. */
import { test } from "uvu";
import * as assert from "uvu/assert";
import { parseConfig } from "../../src/config/load.js";
import { ConfigErrors, ConfigError } from "../../src/errors.js";
import { gossFailures, gossSummary, validateArgs } from "../../src/tools/goss.js";
import { imageInputs } from "../../src/graph/inputs.js";
import { tempTree } from "../helpers/bake.js";

const OUTPUT = `File: /nonexistent: exists:
Expected
    false
to equal
    true
Failures/Skipped:

File: /nonexistent: exists:
Expected
    false
to equal
    true

Total Duration: 0.002s
Count: 4, Failed: 1, Skipped: 0
Retrying in 1s (elapsed/timeout time: 0.002s/2s)


Attempt #2:
Failures/Skipped:

File: /other: exists:
Expected
    false
to equal
    true

Total Duration: 0.002s
Count: 5, Failed: 2, Skipped: 0
Error: timeout of 2s reached before tests entered a passing state
`;

test("validate arguments: the spec and vars in bake's folder, .Vars.bake (never a \"}}\" Packer would read), goss's retry options", () => {
  assert.equal(
    validateArgs({
      retryTimeout: "30s",
      sleep: "1s",
      withVars: false,
      bake: { project: "arcade", node: "web", booted: true },
    }),
    [
      "--gossfile",
      "/tmp/bake-goss/goss.yaml",
      "--vars-inline",
      '{"bake":{"project":"arcade","node":"web","booted":true} }',
      "validate",
      "--format",
      "documentation",
      "--no-color",
      "--retry-timeout",
      "30s",
      "--sleep",
      "1s",
    ],
  );
  assert.equal(
    validateArgs({
      retryTimeout: "5s",
      sleep: "500ms",
      withVars: true,
      bake: { project: "arcade", node: "host", booted: false },
    }).slice(0, 6),
    [
      "--gossfile",
      "/tmp/bake-goss/goss.yaml",
      "--vars",
      "/tmp/bake-goss/vars.yaml",
      "--vars-inline",
      '{"bake":{"project":"arcade","node":"host","booted":false} }',
    ],
  );
});

test("goss's output: the last attempt's summary and failures, as goss printed them", () => {
  assert.equal(gossSummary(OUTPUT), { count: 5, failed: 2, skipped: 0 });
  assert.equal(gossFailures(OUTPUT), [
    "File: /other: exists:",
    "Expected",
    "    false",
    "to equal",
    "    true",
    "Total Duration: 0.002s",
    "Count: 5, Failed: 2, Skipped: 0",
    "Error: timeout of 2s reached before tests entered a passing state",
  ]);
  assert.is(gossSummary("nothing"), undefined);
});

test("test: a path or { spec, vars, retry_timeout, sleep }; a missing spec names its line; the key covers the spec and settings", async () => {
  const dir = tempTree({ "r.tar": "x", "t.yaml": "file: {}\n", "v.yaml": "a: 1\n" });
  const yml = (test: string) => `project: p\nimages:\n  base:\n    rootfs: { tar: r.tar }\n    test: ${test}\n`;
  const plain = parseConfig(yml("t.yaml"), "bake.yml", dir, {}).images[0].test!;
  assert.equal([plain.spec, plain.vars, plain.retryTimeout, plain.sleep], [`${dir}/t.yaml`, undefined, "30s", "1s"]);
  const full = parseConfig(yml("{ spec: t.yaml, vars: v.yaml, retry_timeout: 5s, sleep: 200ms }"), "bake.yml", dir, {})
    .images[0].test!;
  assert.equal([full.vars, full.retryTimeout, full.sleep], [`${dir}/v.yaml`, "5s", "200ms"]);
  try {
    parseConfig(yml("missing.yaml"), "bake.yml", dir, {});
    assert.unreachable();
  } catch (e) {
    const first = e instanceof ConfigErrors ? e.errors[0] : (e as ConfigError);
    assert.equal([first.line, first.message], [5, "goss spec missing.yaml does not exist"]);
  }
  assert.throws(() => parseConfig(yml("{ spec: t.yaml, retry_timeout: soon }"), "bake.yml", dir, {}), /retry_timeout/);
  const node = (t: string) => parseConfig(yml(t), "bake.yml", dir, {}).images[0];
  const [a, b] = [await imageInputs(node("t.yaml")), await imageInputs(node("{ spec: t.yaml, retry_timeout: 5s }"))];
  assert.ok(a.test && b.test && a.test !== b.test, "the retry settings are part of the key");
});

test.run();
