/** Values bake hands Ansible arrive as written: every string is `!unsafe`, never templated. */
import { test } from "uvu";
import * as assert from "uvu/assert";
import { parse as parseYaml } from "yaml";
import { localPlaybookArgs, unsafeExtraVars } from "../../src/tools/ansible.js";

test("every string is tagged !unsafe, keys and other scalars are plain, and the YAML reads back to the same value", () => {
  const vars = {
    bake_services: [
      {
        env: { LOG_FMT: "{{.Time}}", PROBE: "{{ lookup('pipe', 'id') }}" },
        ports: ["127.0.0.1::8080/tcp"],
        retries: 3,
        health: null,
        on: true,
      },
    ],
    quote: 'a "b" \\ c\nd',
  };
  const text = unsafeExtraVars(vars);
  assert.is(
    text,
    '{"bake_services": [{"env": {"LOG_FMT": !unsafe "{{.Time}}", "PROBE": !unsafe "{{ lookup(\'pipe\', \'id\') }}"}, "ports": [!unsafe "127.0.0.1::8080/tcp"], "retries": 3, "health": null, "on": true}], "quote": !unsafe "a \\"b\\" \\\\ c\\nd"}\n',
  );
  const tagged: string[] = [];
  const back = parseYaml(text, { customTags: [{ tag: "!unsafe", resolve: (v: string) => (tagged.push(v), v) }] });
  assert.equal(back, vars);
  assert.equal(tagged.length, 4);
});

test("ansible-playbook against this machine", () => {
  assert.equal(localPlaybookArgs("/p/up.yml", "/t/vars.yml"), [
    "-i",
    "localhost,",
    "-c",
    "local",
    "/p/up.yml",
    "--extra-vars",
    "@/t/vars.yml",
  ]);
});

test.run();
