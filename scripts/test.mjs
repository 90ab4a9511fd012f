#!/usr/bin/env node
// Runs every uvu suite, one test file per process, streams its output, and ends with one line
// `N passed, N failed` summing them all. Exits non-zero on any failure, including a file that
// crashed. Before that line: the ten slowest files and the ten slowest tests, with their seconds;
// every timing is written to .bake/test-timings.json, so that suite time is visible in each CI log.
import { spawn } from "node:child_process";
import { existsSync, mkdirSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";

const TIMING = fileURLToPath(new URL("./uvu-timing.mjs", import.meta.url));

// --fast leaves out the slowest files: booted local hosts and VMs, the AWS Packer run, the engine restart, the interrupts.
const SLOW = /^(ami-local|ami-vm|aws-packer|faults|interrupts)\.test\.js$/;
const fast = process.argv.includes("--fast");
const names = process.argv.slice(2).filter((a) => a !== "--fast");
const suites = (names.length ? names : ["unit", "it"]).filter((s) => existsSync(`dist/test/${s}`));
const timingsDir = path.resolve(".bake");
const testLines = path.join(timingsDir, `test-timings-${process.pid}.jsonl`);
mkdirSync(timingsDir, { recursive: true });
rmSync(testLines, { force: true });

const started = Date.now();
let passed = 0;
let failed = 0;
const files = [];
for (const suite of suites) {
  const suiteStarted = Date.now();
  const list = readdirSync(`dist/test/${suite}`).filter((f) => f.endsWith(".test.js") && !(fast && SLOW.test(f))).sort();
  for (const file of list) {
    const fileStarted = Date.now();
    const { code, output } = await runFile(suite, file);
    const plain = output.replace(/\u001b\[[0-9;]*m/g, "");
    const total = Number(/Total:\s+(\d+)/.exec(plain)?.[1] ?? NaN);
    const ok = Number(/Passed:\s+(\d+)/.exec(plain)?.[1] ?? NaN);
    const skipped = Number(/Skipped:\s+(\d+)/.exec(plain)?.[1] ?? 0);
    let bad;
    if (Number.isNaN(total) || Number.isNaN(ok)) {
      console.log(`${suite}/${file} did not finish (exit ${code})`);
      bad = 1;
    } else {
      passed += ok;
      bad = Math.max(0, total - ok - skipped) || (code === 0 ? 0 : 1);
    }
    failed += bad;
    files.push({ suite, file, seconds: (Date.now() - fileStarted) / 1000, passed: Number.isNaN(ok) ? 0 : ok, failed: bad });
  }
  console.log(`suite ${suite}: ${((Date.now() - suiteStarted) / 1000).toFixed(1)}s`);
}

const tests = existsSync(testLines) ? readFileSync(testLines, "utf8").split("\n").filter(Boolean).map((l) => JSON.parse(l)) : [];
rmSync(testLines, { force: true });
const seconds = (Date.now() - started) / 1000;
writeFileSync(path.join(timingsDir, "test-timings.json"), `${JSON.stringify({ finished: new Date().toISOString(), seconds, fast, files, tests }, null, 2)}\n`);
console.log(`\nslowest files (of ${files.length}, ${seconds.toFixed(0)} s in all):`);
for (const f of [...files].sort((a, b) => b.seconds - a.seconds).slice(0, 10)) console.log(`  ${f.seconds.toFixed(1).padStart(7)} s  ${f.suite}/${f.file}`);
console.log(`slowest tests (of ${tests.length}):`);
for (const t of [...tests].sort((a, b) => b.seconds - a.seconds).slice(0, 10)) console.log(`  ${t.seconds.toFixed(1).padStart(7)} s  ${t.file}: ${t.test.length > 90 ? `${t.test.slice(0, 87)}...` : t.test}`);
console.log(`every timing: ${path.relative(process.cwd(), path.join(timingsDir, "test-timings.json"))}`);
console.log(`${passed} passed, ${failed} failed`);
process.exit(failed ? 1 : 0);

function runFile(suite, file) {
  return new Promise((resolve) => {
    console.log(`== ${suite}/${file}`);
    const pattern = `^${file.replace(/[.*+?^${}()|[\]\\]/g, "\\$&")}$`;
    const child = spawn(process.execPath, ["--import", TIMING, "node_modules/uvu/bin.js", `dist/test/${suite}`, pattern], {
      stdio: ["ignore", "pipe", "inherit"],
      env: { ...process.env, FORCE_COLOR: "0", BAKE_TEST_TIMINGS: testLines, BAKE_TEST_FILE: `${suite}/${file}` },
    });
    let output = "";
    child.stdout.on("data", (d) => {
      output += d;
      process.stdout.write(d);
    });
    child.on("close", (code) => resolve({ code, output }));
  });
}
