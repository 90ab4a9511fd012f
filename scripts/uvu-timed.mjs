// uvu's `test` and `suite`, each test timed: {file, test, seconds} per line in BAKE_TEST_TIMINGS, and
// for a test that threw, `error`: what it threw, in short (printed again at the end of the run).
import { appendFileSync, readFileSync } from "node:fs";
import { suite as uvuSuite, test as uvuTest } from "uvu";

const out = process.env.BAKE_TEST_TIMINGS;
const file = process.env.BAKE_TEST_FILE ?? "";

// The file's CPU seconds when it ends: its own and every process it waited for (bake, and what bake
// ran: Packer, Ansible, QEMU…), from /proc/self/stat (utime, stime, cutime, cstime; 100 ticks a second).
// The engine's work (builds, containers) is the engine's, not counted here.
if (out)
  process.on("exit", () => {
    try {
      const fields = readFileSync("/proc/self/stat", "utf8").split(") ")[1].split(" ");
      const ticks = fields.slice(11, 15).reduce((n, f) => n + Number(f), 0);
      appendFileSync(out, `${JSON.stringify({ file, cpu: ticks / 100 })}\n`);
    } catch {
      // not Linux: no CPU figure
    }
  });

function timed(s) {
  const run = (name, fn) =>
    fn
      ? async (context) => {
          const started = performance.now();
          let error;
          try {
            return await fn(context);
          } catch (e) {
            error = summary(String(e?.stack ?? e));
            throw e;
          } finally {
            if (out)
              appendFileSync(
                out,
                `${JSON.stringify({ file, test: name, seconds: (performance.now() - started) / 1000, error })}\n`,
              );
          }
        }
      : fn;
  const t = (name, fn) => s(name, run(name, fn));
  t.only = (name, fn) => s.only(name, run(name, fn));
  for (const k of ["before", "after", "skip", "run"]) t[k] = s[k];
  return t;
}

export const test = timed(uvuTest);
export const suite = (...args) => timed(uvuSuite(...args));

/**
 * What a failure's summary keeps: the message's first 2 lines and its last 14 (a command's output
 * given as the message ends with the command's own error), then the stack's first 2 frames.
 */
function summary(stack) {
  const lines = stack.split("\n").filter((l) => !/node_modules|uvu-timed|node:internal/.test(l));
  const at = lines.findIndex((l) => /^\s+at /.test(l));
  const message = at < 0 ? lines : lines.slice(0, at);
  const frames = at < 0 ? [] : lines.slice(at, at + 2);
  const kept = message.length > 16 ? [...message.slice(0, 2), "      …", ...message.slice(-14)] : message;
  return [...kept, ...frames].join("\n");
}
