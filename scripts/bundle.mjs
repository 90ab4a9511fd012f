// Bundles the compiled CLI (dist/src/cli.js) into one CommonJS file, dist/bundle/cli.cjs, that
// bake's executable (src/bake.cts → dist/src/bake.cjs) runs through a V8 code cache. Start-up
// of a no-op `bake build` is mostly reading and compiling JavaScript: one file instead of ~200,
// compiled once per machine, cuts it.
import { chmodSync, readFileSync } from "node:fs";
import { createRequire } from "node:module";
import { build } from "esbuild";

const require = createRequire(import.meta.url);

// yargs 17's ES module build lays out help with a naive wrap that cuts words in half; its
// CommonJS build wraps at word boundaries (wrap-ansi). The bundle is CommonJS anyway.
const yargsCommonJs = {
  name: "yargs-commonjs",
  setup(b) {
    b.onResolve({ filter: /^yargs(\/helpers)?$/ }, (args) => ({ path: require.resolve(args.path) }));
  },
};

await build({
  entryPoints: ["dist/src/cli.js"],
  outfile: "dist/bundle/cli.cjs",
  bundle: true,
  format: "cjs",
  platform: "node",
  target: "node20",
  define: { "import.meta.url": "__bakeModuleUrl" },
  banner: { js: 'const __bakeModuleUrl = require("node:url").pathToFileURL(__filename).href;' },
  // Loaded from node_modules when first used: the SDKs, with native or data files of their own.
  // The SBOM libraries too (src/sbom/sbom.ts loads them when it writes one).
  // Graphviz (WebAssembly, megabytes) only for `bake plan --format svg`.
  external: [
    "dockerode",
    "@aws-sdk/*",
    "ajv",
    "@grpc/grpc-js",
    "protobufjs",
    "@cyclonedx/*",
    "packageurl-js",
    "@viz-js/viz",
  ],
  plugins: [yargsCommonJs],
  legalComments: "none",
  // A third less to read and to check against the code cache on every start (a no-op build:
  // ~147 → ~141 ms here). Names stay as written, so a --verbose stack still names functions.
  minifyWhitespace: true,
  minifySyntax: true,
  logLevel: "warning",
});

// The executable runs the bundle in a vm.Script, which has no loader for import(): modules
// loaded at run time must come through require() (see tools/docker.ts, tools/ec2.ts).
const dynamicImport = /[^\w.$]import\(/.exec(readFileSync("dist/bundle/cli.cjs", "utf8"));
if (dynamicImport) {
  console.error(
    `bundle: dist/bundle/cli.cjs still calls import() at offset ${dynamicImport.index}; use createRequire instead`,
  );
  process.exit(1);
}

// tsc writes files 0644; the package's bin must run as `bake` from a checkout and once installed.
chmodSync("dist/src/bake.cjs", 0o755);
