/**
 * Renders an AMI's Packer HCL2 from the Handlebars templates in packer/. Strict: a value the
 * template needs and the context lacks is an error naming the template and line.
 */
import path from "node:path";
import Handlebars from "handlebars";
import { MAIN_TEMPLATE } from "../graph/templates.js";

export { MAIN_TEMPLATE, readTemplates, TEMPLATE_DIR } from "../graph/templates.js";
import { BakeError } from "../errors.js";
import type { Target } from "../graph/keys.js";
import { goTemplateEscape, hclEscape, hclList, hclMap, hclString, packerString } from "./hcl.js";

export interface TemplateContext {
  amiName: string;
  target: Target;
  /** The partial that renders the target's Packer source (packer/partials/<name>.hbs) and its reference. */
  sourcePartial: string;
  /** Packer connects while the host still boots (local, vm): provisioning waits for systemd. */
  booted: boolean;
  /** An instance-store bake (aws): the EC2 AMI tools are installed first. */
  instanceStore?: boolean;
  requiredPlugins: boolean;
  sourceRef: string;
  sensitive: { name: string; env: string }[];
  /** Machine-specific settings read from the environment Packer runs in (not secret). */
  machine: { name: string; env: string }[];
  /** A staged bake (graph/stages.ts): this run provisions the host (the engine, the agent, the playbook). */
  stageHost: boolean;
  /** This run reads the host's package list: the last Packer run of a bake (the vm target's host stage: its release stage is written). */
  readsPackages: boolean;
  preloadArchive: string;
  /** The host's package databases, downloaded by the last provisioners, and the rpm query that reads them. */
  hostPackagesArchive: string;
  rpmQueryFormat: string;
  rpmQueryFile: string;
  /** The AMI's own playbook, relative to the HCL; none when bake.yml names none. */
  playbookPath?: string;
  ansibleUser: string;
  keyTag: string;
  /** The AMI's goss test, as the last provisioner on aws: the folder beside the HCL and the command. */
  gossTest?: { dir: string; binary: string; command: string };
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
  hostRunFlags?: string[];
  standinUnits?: string[];
  engineSocket?: string;
  dockerChanges?: string[];
  localRepository?: string;
  // vm: files of the rendered folder, and the VM's size
  vmDisk?: string;
  vmKernel?: string;
  vmInitrd?: string;
  vmKey?: string;
  vmOutput?: string;
  vmCmdline?: string;
  /** Packer fills in the SSH port it picked ({{ .SSHHostPort }}). */
  vmNetdev?: string;
  vmMemory?: number;
  vmCpus?: number;
}

export function renderTemplate(templates: Map<string, string>, context: TemplateContext): string {
  const hb = Handlebars.create();
  // Strict mode checks plain lookups; a helper's argument is checked here, with its line.
  const helper = (name: string, fn: (v: any) => string) =>
    hb.registerHelper(name, (v: unknown, options: { loc?: { start: { line: number } } }) => {
      if (v === undefined || v === null)
        throw Object.assign(new Error(`a value for {{${name}}} is missing`), { line: options?.loc?.start.line });
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
