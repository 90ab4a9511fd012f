// uvu's `test` and `suite`, each test timed: {file, test, seconds} per line in BAKE_TEST_TIMINGS.
import { appendFileSync } from "node:fs";
import { suite as uvuSuite, test as uvuTest } from "uvu";

const out = process.env.BAKE_TEST_TIMINGS;
const file = process.env.BAKE_TEST_FILE ?? "";

function timed(s) {
  const run = (name, fn) =>
    fn
      ? async (context) => {
          const started = performance.now();
          try {
            return await fn(context);
          } finally {
            if (out)
              appendFileSync(
                out,
                `${JSON.stringify({ file, test: name, seconds: (performance.now() - started) / 1000 })}\n`,
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
