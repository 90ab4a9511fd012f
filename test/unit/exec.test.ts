/** Redaction: every form a secret takes in a tool's output becomes ***. */
import { test } from "uvu";
import * as assert from "uvu/assert";
import { redact, renderCommand, run, secretForms } from "../../src/tools/exec.js";
import { ToolFailedError } from "../../src/errors.js";
import { parseMachineLine, uiText } from "../../src/tools/packer-output.js";

const PEM =
  "-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASC\nBKcwggSjAgEAAoIBAQC7\n-----END PRIVATE KEY-----";
const JSON_SECRET = '{"user":"svc","password":"hunter2,hunter3"}';

test("a tool stopped at its timeout: returned as timed out with reject false, thrown otherwise; an abort always throws", async () => {
  const started = Date.now();
  const r = await run("sleep", ["30"], { timeoutMs: 300, reject: false });
  assert.equal([r.exitCode, r.timedOut], [undefined, true]);
  assert.ok(Date.now() - started < 10_000);
  const thrown = await run("sleep", ["30"], { timeoutMs: 300 }).catch((e) => e);
  assert.instance(thrown, ToolFailedError);
  const abort = new AbortController();
  setTimeout(() => abort.abort(), 300);
  const aborted = await run("sleep", ["30"], { timeoutMs: 20_000, signal: abort.signal, reject: false }).catch(
    (e) => e,
  );
  assert.instance(aborted, Error);
  assert.equal((await run("sh", ["-c", "exit 3"], { reject: false })).exitCode, 3);
});

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
