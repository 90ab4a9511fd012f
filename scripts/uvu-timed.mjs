// uvu's `test` and `suite`, each test timed: {file, test, seconds} per line in BAKE_TEST_TIMINGS, and
// for a test that threw, `error`: the first lines of what it threw (printed again at the end of the run).
import { appendFileSync } from "node:fs";
import { suite as uvuSuite, test as uvuTest } from "uvu";

const out = process.env.BAKE_TEST_TIMINGS;
const file = process.env.BAKE_TEST_FILE ?? "";

function timed(s) {
  const run = (name, fn) =>
    fn
      ? async (context) => {
          const started = performance.now();
          let error;
          try {
            return await fn(context);
          } catch (e) {
            error = String(e?.stack ?? e)
              .split("\n")
              .filter((l) => !/node_modules|uvu-timed|node:internal/.test(l))
              .slice(0, 6)
              .join("\n");
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
