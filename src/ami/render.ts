/**
 * Renders an AMI's Packer HCL2 from the Handlebars templates in packer/. Strict: a value the
 * template needs and the context lacks is an error naming the template and line.
 */
import { readFileSync, readdirSync } from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";
import Handlebars from "handlebars";
import { BakeError } from "../errors.js";
import { goTemplateEscape, hclEscape, hclList, hclMap, hclString, packerString } from "./hcl.js";

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
  // Strict mode checks plain lookups; a helper's argument is checked here, with its line.
  const helper = (name: string, fn: (v: any) => string) =>
    hb.registerHelper(name, (v: unknown, options: { loc?: { start: { line: number } } }) => {
      if (v === undefined || v === null) throw Object.assign(new Error(`a value for {{${name}}} is missing`), { line: options?.loc?.start.line });
      return fn(v);
    });
  // Every value: HCL quoting, and Go-template escaping for Packer's own interpolation.
  helper("hcl", (v) => packerString(v));
  helper("hclRaw", (v) => hclEscape(goTemplateEscape(String(v))));
  // Only where bake itself writes a Packer template expression ({{timestamp}}, {{ .SourceAMI }}).
  helper("hclTemplate", (v) => hclString(v));
  helper("hclList", (v) => hclList(v));
  helper("hclMap", (v) => hclMap(v));
  helper("varRef", (v) => `\${var.${hclEscape(String(v))}}`);
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
    const err = e as Error & { template?: string; line?: number };
    const message = err.message.replace(/ - (\d+):(\d+)$/, "");
    const line = err.line ?? /(\d+):(\d+)$/.exec(err.message)?.[1];
    throw new BakeError(`packer/${err.template ?? current}${line ? `:${line}` : ""}: ${message}`);
  }
}
