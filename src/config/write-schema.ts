/** Writes schema/bake.schema.json from the same TypeBox source the validator uses (`make schema`). */
import { writeFileSync } from "node:fs";
import { jsonSchemaDocument } from "./schema.js";

export function schemaText(): string {
  return `${JSON.stringify(jsonSchemaDocument(), null, 2)}\n`;
}

if (process.argv[1] && import.meta.url === new URL(process.argv[1], "file://").href) {
  writeFileSync(process.argv[2] ?? "schema/bake.schema.json", schemaText());
}
