#!/usr/bin/env node
/**
 * bake's executable: runs the bundled CLI (dist/bundle/cli.cjs, made by scripts/bundle.mjs)
 * through a V8 code cache kept beside it. Most of a no-op command's time is spent compiling
 * JavaScript; with the cache, the functions an earlier run compiled arrive compiled.
 *
 * V8 checks a cache only against the source's length, so the cache file is named after the
 * bundle's size and mtime and the Node.js version; a missing or rejected cache is written anew.
 * Each command has its own: a cache holds what one run compiled, and `bake build` compiles
 * other functions than `bake ami`.
 */
import { mkdirSync, readdirSync, readFileSync, renameSync, rmSync, statSync, writeFileSync } from "node:fs";
import { createRequire } from "node:module";
import path from "node:path";
import v8 from "node:v8";
import vm from "node:vm";

// A build streams its context through 1 MiB buffers; with incremental marking, V8 counted
// that memory against its soft limits and ran 20-40 full collections per GiB (~0.3 s of a
// 3.5 s build). A short-lived command gains nothing from shorter pauses: collections now run
// when a limit is actually reached. Set before anything is compiled or allocated; peak memory
// measured the same (~107 MB for a 1 GiB context).
v8.setFlagsFromString("--no-incremental-marking");

const bundle = path.join(__dirname, "..", "bundle", "cli.cjs");
const cacheDir = path.join(path.dirname(bundle), ".v8-cache");
const stat = statSync(bundle, { throwIfNoEntry: false });
if (!stat) {
  process.stderr.write(`error: ${bundle} is missing: run make setup (or npm run build)\n`);
  process.exit(1);
}
const bundleStamp = `${process.version}-${process.arch}-${stat.size}-${Math.trunc(stat.mtimeMs)}`;
const command = /^[a-z]+$/.test(process.argv[2] ?? "") ? process.argv[2] : "other";
const cacheFile = path.join(cacheDir, `${bundleStamp}-${command}.bin`);

let cachedData: Buffer | undefined;
try {
  cachedData = readFileSync(cacheFile);
} catch {
  cachedData = undefined;
}

const script = new vm.Script(
  `(function (exports, require, module, __filename, __dirname) {${readFileSync(bundle, "utf8").replace(/^#!.*/, "")}\n})`,
  {
    filename: bundle,
    cachedData,
  },
);

if (!cachedData || script.cachedDataRejected) {
  // Written at exit, so that it holds every function this run compiled, not only the top level.
  process.once("exit", () => {
    try {
      mkdirSync(cacheDir, { recursive: true });
      for (const old of readdirSync(cacheDir))
        if (!old.startsWith(`${bundleStamp}-`)) rmSync(path.join(cacheDir, old), { force: true });
      const partial = `${cacheFile}.${process.pid}`;
      writeFileSync(partial, script.createCachedData());
      renameSync(partial, cacheFile);
    } catch {
      // A read-only install runs without the cache.
    }
  });
}

const cjsModule = { exports: {} };
script.runInThisContext()(cjsModule.exports, createRequire(bundle), cjsModule, bundle, path.dirname(bundle));
