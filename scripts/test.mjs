#!/usr/bin/env node
// Runs every uvu suite, streams its output, and ends with one line `N passed, N failed`
// summing them all. Exits non-zero on any failure, including a suite that crashed.
import { spawn } from "node:child_process";
import { existsSync } from "node:fs";

// --fast leaves out the slowest files: booted local hosts and VMs, the AWS Packer run, the engine restart, the interrupts.
const SLOW = "(ami-local|ami-vm|aws-packer|faults|interrupts)\\.test\\.js$";
const fast = process.argv.includes("--fast");
const names = process.argv.slice(2).filter((a) => a !== "--fast");
const suites = (names.length ? names : ["unit", "it"]).filter((s) => existsSync(`dist/test/${s}`));
let passed = 0;
let failed = 0;
for (const suite of suites) {
  const started = Date.now();
  const { code, output } = await runSuite(suite);
  const plain = output.replace(/\u001b\[[0-9;]*m/g, "");
  const total = Number(/Total:\s+(\d+)/.exec(plain)?.[1] ?? NaN);
  const ok = Number(/Passed:\s+(\d+)/.exec(plain)?.[1] ?? NaN);
  const skipped = Number(/Skipped:\s+(\d+)/.exec(plain)?.[1] ?? 0);
  if (Number.isNaN(total) || Number.isNaN(ok)) {
    console.log(`suite ${suite} did not finish (exit ${code})`);
    failed += 1;
  } else {
    passed += ok;
    const bad = total - ok - skipped;
    failed += bad > 0 ? bad : code === 0 ? 0 : 1;
  }
  console.log(`suite ${suite}: ${((Date.now() - started) / 1000).toFixed(1)}s`);
}
console.log(`${passed} passed, ${failed} failed`);
process.exit(failed ? 1 : 0);

function runSuite(suite) {
  return new Promise((resolve) => {
    console.log(`== ${suite}`);
    const child = spawn(process.execPath, ["node_modules/uvu/bin.js", `dist/test/${suite}`, "\\.test\\.js$", ...(fast ? ["--ignore", SLOW] : [])], {
      stdio: ["ignore", "pipe", "inherit"],
      env: { ...process.env, FORCE_COLOR: "0" },
    });
    let output = "";
    child.stdout.on("data", (d) => {
      output += d;
      process.stdout.write(d);
    });
    child.on("close", (code) => resolve({ code, output }));
  });
}
