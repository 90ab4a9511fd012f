/** Pure parts of the AMI path: HCL quoting, strict templates, Packer's machine-readable output. */
import { test } from "uvu";
import * as assert from "uvu/assert";
import { hclEscape, hclList, hclString, packerString } from "../../src/ami/hcl.js";
import { MAIN_TEMPLATE, readTemplates, renderTemplate } from "../../src/ami/render.js";
import { amiIdsByRegion, artifactsOf, awsFailure, parseMachineLine, uiText } from "../../src/tools/packer-output.js";
import { buildArgs, needsRequiredPlugins, parseVersion } from "../../src/tools/packer.js";
import { templateContext } from "../../src/ami/context.js";
import { awsTemplate } from "../../src/targets/aws.js";
import { parseConfig } from "../../src/config/load.js";
import { tempTree } from "../helpers/bake.js";

test("hcl quoting: quotes, backslashes, newlines, ${ and %{", () => {
  assert.is(hclEscape('a"b\\c'), 'a\\"b\\\\c');
  assert.is(hclEscape("x\ny\tz\r"), "x\\ny\\tz\\r");
  assert.is(hclEscape("${a} %{b} $x %y"), "$${a} %%{b} $x %y");
  assert.is(hclEscape("\u0001"), "\\u0001");
  assert.is(hclString("v"), '"v"');
  assert.is(packerString("{{timestamp}}"), String.raw`"{{\"{{\"}}timestamp}}"`);
  assert.is(hclList(["a", "b"]), '["a", "b"]');
  assert.throws(() => hclString(undefined), /expected a string, got undefined/);
});

test("strict templates: a missing value names the template and line", () => {
  const templates = new Map(readTemplates());
  templates.set(MAIN_TEMPLATE, "line one\n{{hcl missingValue}}\n");
  assert.throws(
    () => renderTemplate(templates, {} as any),
    /packer\/ami\.pkr\.hcl\.hbs:2: a value for \{\{hcl\}\} is missing/,
  );
  templates.set(MAIN_TEMPLATE, "{{> docker}}");
  assert.throws(
    () => renderTemplate(templates, {} as any),
    /packer\/partials\/docker\.hbs:4: a value for \{\{hcl\}\} is missing/,
  );
});

test("machine-readable lines: artifacts, commas, ui text", () => {
  const lines = [
    "1700000000,,ui,say,==> amazon-ebs.ami: Creating AMI",
    "1700000001,amazon-ebs.ami,artifact-count,1",
    "1700000001,amazon-ebs.ami,artifact,0,builder-id,mitchellh.amazonebs",
    "1700000001,amazon-ebs.ami,artifact,0,id,us-east-1:ami-0abc%!(PACKER_COMMA)eu-west-1:ami-0def",
    "1700000002,,ui,error,Build 'x' errored: boom\\nsecond line",
    "not a machine line",
  ].map(parseMachineLine);
  assert.is(lines[5], undefined);
  const parsed = lines.filter((l) => l !== undefined);
  assert.equal(artifactsOf(parsed), [
    { builder: "amazon-ebs.ami", index: 0, id: "us-east-1:ami-0abc,eu-west-1:ami-0def" },
  ]);
  assert.equal(amiIdsByRegion("us-east-1:ami-0abc,eu-west-1:ami-0def"), {
    "us-east-1": "ami-0abc",
    "eu-west-1": "ami-0def",
  });
  assert.is(uiText(parsed[0]), "==> amazon-ebs.ami: Creating AMI");
  assert.is(uiText(parsed[4]), "ERROR: Build 'x' errored: boom\nsecond line");
});

test("packer versions and argument lists", () => {
  assert.equal(parseVersion("Packer v1.6.6\n"), { major: 1, minor: 6, patch: 6, text: "1.6.6" });
  assert.is(needsRequiredPlugins(parseVersion("1.6.6")), false);
  assert.is(needsRequiredPlugins(parseVersion("1.7.0")), true);
  assert.is(needsRequiredPlugins(parseVersion("1.11.2")), true);
  assert.equal(buildArgs("/d"), ["build", "-machine-readable", "-color=false", "/d"]);
  assert.equal(buildArgs("/d", { force: true }), ["build", "-machine-readable", "-color=false", "-force", "/d"]);
});

test("the rendered HCL declares required_plugins only for Packer >= 1.7", () => {
  const dir = tempTree({ "r.tar": "t", "host.yml": "- hosts: all\n" });
  const config = parseConfig(
    "project: p\nimages:\n  base: { rootfs: { tar: r.tar } }\namis:\n  host:\n    builder: ebs\n    region: us-east-1\n    source: { owners: [self], name: x }\n    instance_type: t3.small\n    playbook: host.yml\n    preload: [base]\n",
    "bake.yml",
    dir,
    {},
  );
  const render = (requiredPlugins: boolean) =>
    renderTemplate(
      readTemplates(),
      templateContext(
        {
          config,
          ami: config.amis[0],
          target: "aws",
          key: "k".repeat(64),
          imageKeys: new Map([["base", "a".repeat(64)]]),
          requiredPlugins,
          outDir: dir,
          sourceAmi: "ami-0123",
        },
        awsTemplate,
      ),
    );
  assert.match(render(true), /required_plugins \{\n\s+amazon = \{/);
  assert.not.match(render(false), /required_plugins/);
  assert.match(render(false), /source_ami\s+= "ami-0123"/);
  assert.match(render(false), /"bake:key"\s+= "k{64}"/);
});

test("an amazon build's failure: the step, the Ansible task, the instance, and what Packer's clean-up did or could not", () => {
  const lines = [
    "==> amazon-ebs.ami: Launching a source AWS instance...",
    "    amazon-ebs.ami: Instance ID: i-3c091fc7d69d0eb31",
    "==> amazon-ebs.ami: Connected to SSH!",
    "==> amazon-ebs.ami: Uploading /tmp/x/preload.tar => /var/tmp/bake-preload.tar",
    "==> amazon-ebs.ami: Provisioning with Ansible...",
    "==> amazon-ebs.ami: Executing Ansible: ansible-playbook -e packer_build_name=ami /tmp/x/host.yml",
    "    amazon-ebs.ami: TASK [Gathering Facts] ****",
    "    amazon-ebs.ami: TASK [Fail on purpose] ****",
    "    amazon-ebs.ami: fatal: [default]: FAILED! => {}",
    "==> amazon-ebs.ami: Provisioning step had errors: Running the cleanup provisioner, if present...",
    "==> amazon-ebs.ami: Terminating the source AWS instance...",
    "==> amazon-ebs.ami: Deleting temporary security group...",
    "==> amazon-ebs.ami: Error cleaning up security group: DependencyViolation",
    "==> amazon-ebs.ami: Deleting temporary keypair...",
  ];
  assert.equal(awsFailure(lines), {
    step: "Provisioning with Ansible",
    task: "Fail on purpose",
    instance: "i-3c091fc7d69d0eb31",
    cleaned: ["Terminating the source AWS instance", "Deleting temporary security group", "Deleting temporary keypair"],
    leftBehind: ["Error cleaning up security group: DependencyViolation"],
  });
  assert.equal(
    awsFailure(["==> docker.ami: Creating a temporary directory"]),
    { cleaned: [], leftBehind: [] },
    "not an amazon build",
  );
});

test.run();
