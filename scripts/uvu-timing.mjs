// Loaded with `node --import`: every test file's `import { test } from "uvu"` gets uvu's own
// suite wrapped so that each test's seconds are appended to BAKE_TEST_TIMINGS (JSON lines).
import { register } from "node:module";

register("./uvu-timing-hooks.mjs", import.meta.url);
