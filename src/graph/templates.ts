/** The Handlebars templates in packer/: read for rendering and digested for the AMI's key. */
import { readFileSync, readdirSync } from "node:fs";
import path from "node:path";
import { PACKAGE_ROOT } from "../package-root.js";

export const TEMPLATE_DIR = path.join(PACKAGE_ROOT, "packer");
export const MAIN_TEMPLATE = "ami.pkr.hcl.hbs";

/** The template files (main and partials), by name, for rendering and for the AMI's key. */
export function readTemplates(dir = TEMPLATE_DIR): Map<string, string> {
  const files = new Map<string, string>([[MAIN_TEMPLATE, readFileSync(path.join(dir, MAIN_TEMPLATE), "utf8")]]);
  for (const f of readdirSync(path.join(dir, "partials")).sort()) {
    if (f.endsWith(".hbs")) files.set(`partials/${f}`, readFileSync(path.join(dir, "partials", f), "utf8"));
  }
  return files;
}
