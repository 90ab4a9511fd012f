/**
 * Writes the schema validator as standalone code (ajv's code generation), so a command does
 * not compile the schema at every start. Run by `make setup` (and `npm run build`) after tsc.
 */
import { writeFileSync } from "node:fs";
import { Ajv } from "ajv";
import standaloneCode from "ajv/dist/standalone/index.js";
import { BakeFileSchema } from "./schema.js";

export function validatorSource(): string {
  const ajv = new Ajv({ allErrors: true, strict: false, code: { source: true, esm: true } });
  const generate = ((standaloneCode as any).default ?? standaloneCode) as (ajv: Ajv, validate: unknown) => string;
  // The generated module still require()s ajv's small runtime helpers (ucs2length).
  // The schema itself rides along as plain JSON: error messages list the keys it allows.
  return `import { createRequire } from "node:module";\nconst require = createRequire(import.meta.url);\n${generate(ajv, ajv.compile(BakeFileSchema))}\nexport const schema = ${JSON.stringify(BakeFileSchema)};\n`;
}

if (process.argv[1] && import.meta.url === new URL(process.argv[1], "file://").href) {
  writeFileSync(process.argv[2] ?? new URL("./bake-validator.js", import.meta.url), validatorSource());
}
