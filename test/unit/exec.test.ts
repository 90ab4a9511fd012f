/** Redaction: every form a secret takes in a tool's output becomes ***. */
import { test } from "uvu";
import * as assert from "uvu/assert";
import { redact, renderCommand, secretForms } from "../../src/tools/exec.js";
import { parseMachineLine, uiText } from "../../src/tools/packer-output.js";

const PEM =
  "-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASC\nBKcwggSjAgEAAoIBAQC7\n-----END PRIVATE KEY-----";
const JSON_SECRET = '{"user":"svc","password":"hunter2,hunter3"}';

test("a secret with commas or newlines is redacted in Packer's machine-readable lines, before they are unescaped", () => {
  const escaped = (s: string) => s.replace(/,/g, "%!(PACKER_COMMA)").replace(/\n/g, "\\n");
  for (const secret of [JSON_SECRET, PEM, "a,b,c,d"]) {
    const raw = `1700000000,docker.ami,ui,message,    docker.ami: value: ${escaped(secret)}`;
    const clean = redact(raw, [secret]);
    const shown = uiText(parseMachineLine(clean)!) ?? "";
    assert.not.ok(shown.includes(secret), `${JSON.stringify(secret)} in ${shown}`);
    assert.match(shown, /value: \*\*\*/);
  }
});

test("JSON-escaped and line by line: a PEM key printed a line at a time, or inside a JSON document", () => {
  for (const line of PEM.split("\n")) if (line.length >= 8) assert.is(redact(`  ${line}  `, [PEM]), "  ***  ");
  assert.is(redact(`{"env": ${JSON.stringify(PEM)}}`, [PEM]), '{"env": "***"}');
  assert.ok(secretForms(PEM).includes(JSON.stringify(PEM).slice(1, -1)));
});

test("secrets of 4 characters or more are redacted anywhere; shorter ones where they stand as a whole token", () => {
  assert.is(redact("token=s3cr3t; again s3cr3t!", ["s3cr3t"]), "token=***; again ***!");
  assert.is(redact("pin=ab9 in ab9x and xab9 and ab9", ["ab9"]), "pin=*** in ab9x and xab9 and ***");
  assert.is(redact("nothing here", ["", "zz"]), "nothing here");
  assert.is(redact(renderCommand("tool", ["--password", "pa ss"]), ["pa ss"]), "tool --password '***'");
});

test.run();
