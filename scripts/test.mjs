#!/usr/bin/env node
// Runs every uvu suite, one test file per process, in three lanes (the VM file alone on the third),
// streams its output, and ends with one line `N passed, N failed` summing them all. Exits non-zero on any failure, including a file that
// crashed. Before that line: the ten slowest files and the ten slowest tests, with their seconds;
// every timing is written to .bake/test-timings.json, so that suite time is visible in each CI log.
import { execFileSync, spawn } from "node:child_process";
import { existsSync, mkdirSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";

const TIMING = fileURLToPath(new URL("./uvu-timing.mjs", import.meta.url));

// --fast leaves out the slowest files: booted local hosts and VMs, the AWS Packer run, the faults,
// the interrupts, the installed package's bake of a user's project, the property tests of rendering.
const SLOW = /^(ami-local|ami-vm|ami-aws-property|aws-packer|faults|interrupts|install)\.test\.js$/;
const fast = process.argv.includes("--fast");
// Lanes. Every file uses a project name and folder of its own, no fixed host port, a moto of its
// own (test/helpers/moto), and counts only its own containers and parent tags, so any two files
// run side by side. The VM file (QEMU emulating one CPU: the longest file by far) has a lane to
// itself at the machine's normal priority; every other file runs in one of two more lanes, at a
// lower priority (nice), longest first, so that the VM keeps its core and the other core and
// every idle moment go to the rest. Once the VM file ends, its lane takes files too.
const VM = /^it\/ami-vm\.test\.js$/;
// Files that count what the whole engine holds (BuildKit's records of the files sent to it):
// they run last, with nothing beside them.
const ALONE = /^it\/buildkit\.test\.js$/;
const BESIDE_VM = ["nice", "-n", "10"];
// The files' environment is this one without NODE_EXTRA_CA_CERTS: some of these machines set it to
// the system's whole CA bundle, which every Node process then reads and parses at its start (~50 ms
// of CPU; the suite starts Node a few thousand times, bake's CLI mostly: a fifth of make test-fast's
// CPU). No test needs it: test traffic stays on 127.0.0.1, over TLS only with certificates the
// tests make and name. (bench/ leaves it out too.)
const testEnv = { ...process.env };
delete testEnv.NODE_EXTRA_CA_CERTS;
const names = process.argv.slice(2).filter((a) => a !== "--fast");
const suites = (names.length ? names : ["unit", "it"]).filter((s) => existsSync(`dist/test/${s}`));
const timingsDir = path.resolve(".bake");
const testLines = path.join(timingsDir, `test-timings-${process.pid}.jsonl`);
mkdirSync(timingsDir, { recursive: true });
rmSync(testLines, { force: true });

const started = Date.now();
const cpuAtStart = machineTicks();
const engineAtStart = engineCpu();
let passed = 0;
let failed = 0;
const files = [];
const jobs = suites.flatMap((suite) =>
  readdirSync(`dist/test/${suite}`)
    .filter((f) => f.endsWith(".test.js") && !(fast && SLOW.test(f)))
    .sort()
    .map((file) => ({ suite, file })),
);
// Longest first: by each file's seconds the last time this checkout ran it, else the slow ones
// first. Kept apart from the run's own timings, so that a run of a few files forgets no other's.
const durationsFile = path.join(timingsDir, "test-durations.json");
const last = (() => {
  try {
    return new Map(Object.entries(JSON.parse(readFileSync(durationsFile, "utf8"))));
  } catch {
    return new Map();
  }
})();
const expected = (j) => last.get(`${j.suite}/${j.file}`) ?? (SLOW.test(j.file) ? 100 : 10);
const alone = jobs.filter((j) => ALONE.test(`${j.suite}/${j.file}`));
const vm = jobs.filter((j) => VM.test(`${j.suite}/${j.file}`));
const pool = jobs.filter((j) => !alone.includes(j) && !vm.includes(j)).sort((a, b) => expected(b) - expected(a));
// The first lane streams its output; the others print each file's output whole when it ends.
const fromPool = async () => pool.shift();
await Promise.all([
  runLane({ next: fromPool }, { buffered: false, prefix: BESIDE_VM }),
  runLane({ next: fromPool }, { buffered: true, prefix: BESIDE_VM }),
  runLane({ next: async () => vm.shift() ?? pool.shift() }, { buffered: true, prefix: [] }),
]);
await runLane({ next: async () => alone.shift() }, { buffered: false, prefix: [] });
for (const suite of suites) {
  const of = files.filter((f) => f.suite === suite);
  console.log(`suite ${suite}: ${of.length} files, ${of.reduce((n, f) => n + f.seconds, 0).toFixed(1)} s of file time`);
}

/** Runs the files `queue.next()` hands out, one after another, until it hands out none. */
async function runLane(queue, { buffered, prefix }) {
  for (let job = await queue.next(); job; job = await queue.next()) {
    const { suite, file } = job;
    const fileStarted = Date.now();
    const { code, output } = await runFile(suite, file, buffered, prefix);
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
    files.push({
      suite,
      file,
      seconds: (Date.now() - fileStarted) / 1000,
      passed: Number.isNaN(ok) ? 0 : ok,
      failed: bad,
      beside: buffered,
    });
  }
}

const lines = existsSync(testLines)
  ? readFileSync(testLines, "utf8")
      .split("\n")
      .filter(Boolean)
      .map((l) => JSON.parse(l))
  : [];
const tests = lines.filter((l) => l.test !== undefined);
for (const l of lines.filter((l) => l.cpu !== undefined)) {
  const f = files.find((f) => `${f.suite}/${f.file}` === l.file);
  if (f) f.cpu = l.cpu;
}
const machineCpu = busySince(cpuAtStart);
const engineNow = engineCpu();
const engine =
  engineAtStart && engineNow
    ? {
        dockerd: engineNow.dockerd - engineAtStart.dockerd,
        containers: engineNow.containers - engineAtStart.containers,
      }
    : undefined;
rmSync(testLines, { force: true });
const seconds = (Date.now() - started) / 1000;
writeFileSync(
  path.join(timingsDir, "test-timings.json"),
  `${JSON.stringify({ finished: new Date().toISOString(), seconds, fast, cpu: machineCpu, engine, files, tests }, null, 2)}\n`,
);
for (const f of files) last.set(`${f.suite}/${f.file}`, f.seconds);
writeFileSync(durationsFile, `${JSON.stringify(Object.fromEntries(last), null, 2)}\n`);
// CPU: the machine is CPU-bound while the suite runs, so its time follows the CPU the files use.
const filesCpu = files.reduce((n, f) => n + (f.cpu ?? 0), 0);
console.log(`\nslowest files (of ${files.length}, ${seconds.toFixed(0)} s in all):`);
for (const f of [...files].sort((a, b) => b.seconds - a.seconds).slice(0, 10))
  console.log(
    `  ${f.seconds.toFixed(1).padStart(7)} s  ${f.cpu === undefined ? "" : `${f.cpu.toFixed(0).padStart(5)} s CPU  `}${f.suite}/${f.file}`,
  );
if (machineCpu)
  console.log(
    `CPU: ${machineCpu.busy.toFixed(0)} s busy of ${machineCpu.total.toFixed(0)} s (${machineCpu.cores} cores); the test files and what they waited for ${filesCpu.toFixed(0)} s, the rest the engine, its containers and the services`,
  );
if (engine)
  console.log(
    `  of which the engine: dockerd ${engine.dockerd.toFixed(0)} s (builds, commits, image saves and loads), its containers ${engine.containers.toFixed(0)} s`,
  );
console.log(`slowest tests (of ${tests.length}):`);
for (const t of [...tests].sort((a, b) => b.seconds - a.seconds).slice(0, 10))
  console.log(
    `  ${t.seconds.toFixed(1).padStart(7)} s  ${t.file}: ${t.test.length > 90 ? `${t.test.slice(0, 87)}...` : t.test}`,
  );
// Failures last, just above the summary line, so that the tail of a CI log names them.
const failures = tests.filter((t) => t.error);
for (const f of files.filter((f) => f.failed && !failures.some((t) => t.file === `${f.suite}/${f.file}`)))
  failures.push({
    file: `${f.suite}/${f.file}`,
    test: "(the file failed outside its tests: see its output)",
    error: "",
  });
if (failures.length) console.log(`failed (${failures.length}):`);
for (const t of failures) {
  console.log(`  ${t.file}: ${t.test}`);
  for (const line of t.error.split("\n").filter(Boolean)) console.log(`      ${line.slice(0, 200)}`);
}
console.log(`every timing: ${path.relative(process.cwd(), path.join(timingsDir, "test-timings.json"))}`);
console.log(`${passed} passed, ${failed} failed`);
process.exit(failed ? 1 : 0);

function runFile(suite, file, buffered, prefix) {
  return new Promise((resolve) => {
    if (buffered) console.log(`== ${suite}/${file} started beside the others (its output follows when it ends)`);
    else console.log(`== ${suite}/${file}`);
    const pattern = `^${file.replace(/[.*+?^${}()|[\]\\]/g, "\\$&")}$`;
    const node = [process.execPath, "--import", TIMING, "node_modules/uvu/bin.js", `dist/test/${suite}`, pattern];
    const child = spawn([...prefix, ...node][0], [...prefix, ...node].slice(1), {
      stdio: ["ignore", "pipe", buffered ? "pipe" : "inherit"],
      env: { ...testEnv, FORCE_COLOR: "0", BAKE_TEST_TIMINGS: testLines, BAKE_TEST_FILE: `${suite}/${file}` },
    });
    let output = "";
    let errors = "";
    child.stdout.on("data", (d) => {
      output += d;
      if (!buffered) process.stdout.write(d);
    });
    child.stderr?.on("data", (d) => (errors += d));
    child.on("close", (code) => {
      if (buffered) {
        console.log(`== ${suite}/${file} (ran beside the others)`);
        process.stdout.write(output);
        if (errors) process.stderr.write(errors);
      }
      resolve({ code, output });
    });
  });
}

/** The machine's CPU ticks (all cores) from /proc/stat: busy and in all; undefined off Linux. */
function machineTicks() {
  try {
    const [, ...fields] = readFileSync("/proc/stat", "utf8").split("\n")[0].trim().split(/\s+/);
    const ticks = fields.map(Number);
    const idle = ticks[3] + (ticks[4] ?? 0);
    const cores = readFileSync("/proc/stat", "utf8")
      .split("\n")
      .filter((l) => /^cpu\d/.test(l)).length;
    return { total: ticks.slice(0, 8).reduce((n, t) => n + t, 0), idle, cores };
  } catch {
    return undefined;
  }
}

/**
 * The engine's CPU seconds so far, where this machine lets us read them (as root, cgroup v1 or
 * v2 with the cgroupfs driver): dockerd's own (with what it waited for), and its containers' (the
 * "docker" cgroup, which keeps the time of containers since removed). Undefined otherwise.
 */
function engineCpu() {
  try {
    const pid = execFileSync("pgrep", ["-xo", "dockerd"], { encoding: "utf8" }).trim();
    const f = readFileSync(`/proc/${pid}/stat`, "utf8").split(") ")[1].split(" ");
    const dockerd = (Number(f[11]) + Number(f[12]) + Number(f[13]) + Number(f[14])) / 100;
    const v1 = "/sys/fs/cgroup/cpuacct/docker/cpuacct.usage";
    const containers = existsSync(v1)
      ? Number(readFileSync(v1, "utf8")) / 1e9
      : Number(/usage_usec (\d+)/.exec(readFileSync("/sys/fs/cgroup/docker/cpu.stat", "utf8"))[1]) / 1e6;
    return Number.isFinite(dockerd) && Number.isFinite(containers) ? { dockerd, containers } : undefined;
  } catch {
    return undefined;
  }
}

/** Busy and total core-seconds since `before` (100 ticks a second). */
function busySince(before) {
  const now = machineTicks();
  if (!before || !now) return undefined;
  const total = (now.total - before.total) / 100;
  return { busy: total - (now.idle - before.idle) / 100, total, cores: now.cores };
}
