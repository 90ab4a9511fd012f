/**
 * The executable (dist/src/bake.cjs): it runs the bundled CLI through a V8 code cache kept per
 * command. A missing, foreign or damaged cache must never change what a command does.
 */
import { test } from "uvu";
import * as assert from "uvu/assert";
import { readdirSync, readFileSync, statSync, writeFileSync } from "node:fs";
import path from "node:path";
import { bake, ROOT, tempTree, removeTree } from "../helpers/bake.js";

const CACHE_DIR = path.join(ROOT, "dist/bundle/.v8-cache");
let dir = "";

const cacheFiles = (command: string) => readdirSync(CACHE_DIR).filter((f) => f.endsWith(`-${command}.bin`));

test.before(() => {
  // One base from a "rootfs tarball": plan hashes the file and asks the engine, nothing more.
  dir = tempTree({
    "bake.yml": "project: exe\nimages:\n  base: { rootfs: { tar: rootfs.tar } }\n",
    "rootfs.tar": "not really a tar, but a file: the key hashes it\n",
  });
});

test.after(() => removeTree(dir));

test("each command writes its own cache, and a damaged cache is rejected and rewritten", async () => {
  const first = await bake(["plan", "--json", "--target", "local"], { cwd: dir });
  assert.is(first.code, 0, first.stderr);
  const [file] = cacheFiles("plan");
  assert.ok(file, `no cache for plan in ${readdirSync(CACHE_DIR).join(", ")}`);
  const cache = path.join(CACHE_DIR, file);
  const good = statSync(cache).size;
  assert.ok(good > 10_000, `cache of ${good} bytes`);

  writeFileSync(cache, Buffer.alloc(good, 7));
  const again = await bake(["plan", "--json", "--target", "local"], { cwd: dir });
  assert.is(again.code, 0, again.stderr);
  assert.equal(JSON.parse(again.stdout), JSON.parse(first.stdout));
  assert.is.not(readFileSync(cache)[0], 7, "the damaged cache was not rewritten");
});

test("a usage error exits 2 with its message whether or not a cache exists", async () => {
  for (let i = 0; i < 2; i++) {
    const r = await bake(["build", "--concurrency", "0"], { cwd: dir });
    assert.is(r.code, 2);
    assert.match(r.stderr, /--concurrency must be a whole number of at least 1, not 0/);
  }
});

test.run();
