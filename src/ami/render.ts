/**
 * Renders an AMI's Packer HCL2 from the Handlebars templates in packer/. Strict: a value the
 * template needs and the context lacks is an error naming the template and line.
 */
import { readFileSync, readdirSync } from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";
import Handlebars from "handlebars";
import { BakeError } from "../errors.js";
import { hclEscape, hclList, hclMap, hclString } from "./hcl.js";

export const TEMPLATE_DIR = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../../../packer");
export const MAIN_TEMPLATE = "ami.pkr.hcl.hbs";

export interface TemplateContext {
  amiName: string;
  target: "aws" | "local";
  local: boolean;
  instanceStore: boolean;
  requiredPlugins: boolean;
  sourceRef: string;
  sensitive: { name: string; env: string }[];
  passEnv: { name: string; variable: string }[];
  preloadArchive: string;
  playbookPath: string;
  ansibleUser: string;
  keyTag: string;
  // aws
  region?: string;
  instanceType?: string;
  sshUsername?: string;
  amiNameValue?: string;
  sourceAmi?: string;
  sourceOwners?: string[];
  sourceName?: string;
  tags?: Record<string, string>;
  bundle?: { accountId: string; s3Bucket: string };
  // local
  baseImageId?: string;
  dockerChanges?: string[];
  localRepository?: string;
}

/** The template files (main and partials), by name, for rendering and for the AMI's key. */
export function readTemplates(dir = TEMPLATE_DIR): Map<string, string> {
  const files = new Map<string, string>([[MAIN_TEMPLATE, readFileSync(path.join(dir, MAIN_TEMPLATE), "utf8")]]);
  for (const f of readdirSync(path.join(dir, "partials")).sort()) {
    if (f.endsWith(".hbs")) files.set(`partials/${f}`, readFileSync(path.join(dir, "partials", f), "utf8"));
  }
  return files;
}

export function renderTemplate(templates: Map<string, string>, context: TemplateContext): string {
  const hb = Handlebars.create();
  hb.registerHelper("hcl", (v: unknown) => hclString(v));
  hb.registerHelper("hclRaw", (v: unknown) => hclEscape(String(v)));
  hb.registerHelper("hclList", (v: unknown) => hclList(v));
  hb.registerHelper("hclMap", (v: unknown) => hclMap(v));
  hb.registerHelper("varRef", (v: unknown) => `\${var.${hclEscape(String(v))}}`);
  let current = MAIN_TEMPLATE;
  for (const [name, text] of templates) {
    if (name.startsWith("partials/")) {
      const partial = path.basename(name, ".hbs");
      hb.registerPartial(partial, (ctx: unknown, options: any) => {
        const outer = current;
        current = name;
        try {
          return hb.compile(text, { strict: true, noEscape: true, preventIndent: true })(ctx, options);
        } catch (e) {
          (e as { template?: string }).template ??= name;
          throw e;
        } finally {
          current = outer;
        }
      });
    }
  }
  try {
    return hb.compile(templates.get(MAIN_TEMPLATE)!, { strict: true, noEscape: true, preventIndent: true })(context);
  } catch (e) {
    const message = (e as Error).message.replace(/ - (\d+):(\d+)$/, "");
    const where = /(\d+):(\d+)$/.exec((e as Error).message);
    throw new BakeError(`packer/${(e as { template?: string }).template ?? current}${where ? `:${where[1]}` : ""}: ${message}`);
  }
}
