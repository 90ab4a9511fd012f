/** `bake ami --target local`, end to end with real Packer, Ansible and Docker. */
import { test } from "uvu";
import * as assert from "uvu/assert";
import { cpSync, existsSync, mkdtempSync, readFileSync, readdirSync, statSync, symlinkSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { execa } from "execa";
import { bake, CLI, ROOT, tempTree, testEnv } from "../helpers/bake.js";
import { containerCountSettling, docker, removeProject, uniqueProject } from "../helpers/engine.js";

const project = uniqueProject("ami-local");
const SECRET = `sentinel-${process.pid}-Zq9xW`;
let dir = "";

test.before(() => {
  dir = tempTree({
    "bake.yml": `project: ${project}
images:
  base:
    rootfs:
      debootstrap: { suite: bookworm, variant: minbase, include: [python3, ca-certificates] }
  svc: { parent: base, dockerfile: app/Dockerfile }
  app:
    parent: svc
    dockerfile: app/Dockerfile
    run: { ports: ["8080"], command: [python3, -m, http.server, "8080"], pass_env: [APP_TOKEN] }
amis:
  host:
    builder: ebs
    region: us-east-1
    source: { owners: [self], name: "unused-*" }
    instance_type: t3.small
    playbook: ansible/host.yml
    preload: [base]
    services: [app]
`,
    "app/Dockerfile": "ARG BAKE_PARENT\nFROM ${BAKE_PARENT}\nRUN echo layer >> /layers.txt\n",
    // The marker role is found through the ansible.cfg beside the playbook, its text comes from
    // group_vars: the bake reads both, as `ansible-playbook host.yml` in that folder would.
    "ansible/host.yml": "---\n- name: Test host\n  hosts: all\n  become: true\n  roles:\n    - role: preload\n    - role: marker\n  tasks:\n    - name: Extra tasks from outside the folder\n      ansible.builtin.include_tasks: ../shared/extra.yml\n",
    "ansible/ansible.cfg": "[defaults]\nroles_path = roles:../shared/roles\n",
    "ansible/group_vars/all.yml": "marker_text: \"baked\\n\"\n",
    "shared/roles/marker/tasks/main.yml": "- name: Mark the host\n  ansible.builtin.copy:\n    dest: /etc/bake-test\n    content: \"{{ marker_text }}\"\n    mode: \"0644\"\n",
    "shared/extra.yml": "- name: An included task\n  ansible.builtin.debug:\n    msg: included\n",
  });
  cpSync(path.join(ROOT, "ansible/roles"), path.join(dir, "ansible/roles"), { recursive: true });
});

test.after(async () => {
  await removeProject(project);
});

const manifest = () => JSON.parse(readFileSync(path.join(dir, "bake-manifest.json"), "utf8"));

/** Every file under a folder, as text, for the secret search. */
function filesUnder(root: string): string[] {
  return readdirSync(root, { recursive: true, withFileTypes: true })
    .filter((e) => e.isFile())
    .map((e) => path.join(e.parentPath ?? (e as any).path, e.name))
    .filter((f) => statSync(f).size < 64 << 20);
}

let first = { stdout: "", stderr: "" };

test("bake ami --target local: a tagged image carrying the shipped images, whose ids equal the built ones", async () => {
  const r = await bake(["ami", "host", "--target", "local"], { cwd: dir, env: { APP_TOKEN: SECRET } });
  first = r;
  assert.is(r.code, 0, r.stderr.slice(-3000));
  const m = manifest();
  const id = m.amis.host.regions.local;
  assert.match(r.stdout.trim(), new RegExp(`^local\\s+${id}$`));
  assert.is(m.amis.host.target, "local");
  const key12 = m.amis.host.key.slice(0, 12);
  const image = await docker.getImage(`${project}/host:${key12}`).inspect();
  assert.is(image.Id, id);
  assert.is(image.Config.Labels["bake.key"], m.amis.host.key);

  // The playbook ran, and the archive inside holds exactly the built images.
  const out = mkdtempSync(path.join(tmpdir(), "bake-preload-"));
  const container = await docker.createContainer({ Image: id, Cmd: ["true"] });
  try {
    await execa("docker", ["cp", `${container.id}:/var/lib/bake/preload/images.tar`, out]);
    await execa("docker", ["cp", `${container.id}:/etc/bake-test`, out]);
  } finally {
    await container.remove({ force: true });
  }
  assert.is(readFileSync(path.join(out, "bake-test"), "utf8"), "baked\n");
  await execa("tar", ["-xf", path.join(out, "images.tar"), "-C", out, "manifest.json"]);
  const archived = JSON.parse(readFileSync(path.join(out, "manifest.json"), "utf8")) as { Config: string; RepoTags: string[] }[];
  const ids = archived.map((a) => `sha256:${path.basename(a.Config, ".json")}`).sort();
  assert.equal(ids, [m.images.base.id, m.images.app.id].sort());
  const loaded = await execa("docker", ["load", "-i", path.join(out, "images.tar")]);
  assert.match(loaded.stdout, new RegExp(`Loaded image: ${project}/app:${m.images.app.key.slice(0, 12)}`));
  assert.is((await docker.getImage(`${project}/app:${m.images.app.key.slice(0, 12)}`).inspect()).Id, m.images.app.id);
});

test("the plan shows the local AMI cached; a second bake is a no-op that never starts Packer", async () => {
  const plan = JSON.parse((await bake(["plan", "--json", "--target", "local"], { cwd: dir })).stdout).nodes;
  assert.equal(plan.map((n: any) => n.status), ["cached", "cached", "cached", "cached"]);
  const bin = mkdtempSync(path.join(tmpdir(), "bake-nopacker-"));
  for (const tool of ["git", "docker"]) symlinkSync(`/usr/bin/${tool}`, path.join(bin, tool));
  const r = await bake(["ami", "host", "--target", "local"], { cwd: dir, env: { PATH: bin } });
  assert.is(r.code, 0, r.stderr);
  assert.match(r.stderr, /nothing to bake/);
  assert.match(r.stdout, new RegExp(manifest().amis.host.regions.local));
});

test("an edit of anything Ansible reads moves the local AMI's key, and bake plan names the file", async () => {
  for (const file of ["ansible/group_vars/all.yml", "ansible/ansible.cfg", "shared/extra.yml", "shared/roles/marker/tasks/main.yml"]) {
    const original = readFileSync(path.join(dir, file), "utf8");
    writeFileSync(path.join(dir, file), `${original}# edited\n`);
    try {
      const host = JSON.parse((await bake(["plan", "--json", "--target", "local"], { cwd: dir })).stdout).nodes.find((n: any) => n.name === "host");
      assert.is(host.status, "build", file);
      assert.is.not(host.key, manifest().amis.host.key);
      const name = file.startsWith("ansible/") ? file.slice("ansible/".length) : file;
      assert.match(host.reason, new RegExp(`^playbook input ${name.replace(/[./]/g, "\\$&")} changed since ${manifest().amis.host.key.slice(0, 12)}$`));
    } finally {
      writeFileSync(path.join(dir, file), original);
    }
  }
  const host = JSON.parse((await bake(["plan", "--json", "--target", "local"], { cwd: dir })).stdout).nodes.find((n: any) => n.name === "host");
  assert.is(host.status, "cached");
});

test("the secret passed through pass_env appears in no output, log, rendered file or manifest", () => {
  assert.not.ok(first.stdout.includes(SECRET) || first.stderr.includes(SECRET), "output");
  const leaks = filesUnder(dir).filter((f) => readFileSync(f).includes(SECRET));
  assert.equal(leaks, []);
  assert.ok(filesUnder(path.join(dir, ".bake")).some((f) => f.endsWith("host.packer.log")), "the packer log exists and was searched");
});

/** The same pipeline under another project name, with a host playbook of one task. */
function variantWithTask(suffix: string, task: string): string {
  return tempTree({
    "bake.yml": readFileSync(path.join(dir, "bake.yml"), "utf8").replace(`project: ${project}`, `project: ${project}-${suffix}`),
    "app/Dockerfile": readFileSync(path.join(dir, "app/Dockerfile"), "utf8"),
    "ansible/host.yml": `---\n- name: Variant host\n  hosts: all\n  tasks:\n${task}`,
  });
}

test("a failed bake exits 1 naming the failure, tags nothing and leaves no manifest entry", async () => {
  const failing = variantWithTask("fail", "    - name: Break on purpose\n      ansible.builtin.command: /bin/false\n      changed_when: false\n");
  const containersBefore = (await docker.listContainers({ all: true })).length;
  const r = await bake(["ami", "host", "--target", "local"], { cwd: failing, env: { APP_TOKEN: SECRET } });
  assert.is(r.code, 1, r.stderr.slice(-2000));
  assert.match(r.stderr, /error: host: packer build failed/);
  const tagged = await docker.listImages({ filters: JSON.stringify({ reference: [`${project}-fail/host`] }) });
  assert.is(tagged.length, 0);
  const manifestFile = path.join(failing, "bake-manifest.json");
  assert.equal(existsSync(manifestFile) ? JSON.parse(readFileSync(manifestFile, "utf8")).amis : {}, {});
  assert.is((await docker.listContainers({ all: true })).length, containersBefore, "Packer removed its build container");
  await removeProject(`${project}-fail`);
});

test("Ctrl-C during the Packer run: Packer cleans up, exit 130, nothing tagged, no manifest entry", async () => {
  const slow = variantWithTask("int", "    - name: Take a while\n      ansible.builtin.command: sleep 120\n      changed_when: false\n");
  const containersBefore = (await docker.listContainers({ all: true })).length;
  const child = execa(process.execPath, [CLI, "ami", "host", "--target", "local"], { cwd: slow, env: testEnv({ APP_TOKEN: SECRET }), reject: false });
  let seen = "";
  child.stderr!.on("data", (d) => (seen += d));
  const started = Date.now();
  while (!/TASK \[Take a while\]/.test(seen) && Date.now() - started < 240_000) await new Promise((r) => setTimeout(r, 200));
  assert.match(seen, /TASK \[Take a while\]/);
  const interrupted = Date.now();
  child.kill("SIGINT");
  const result = await child;
  assert.is(result.exitCode, 130, String(result.stderr).slice(-2000));
  assert.ok(Date.now() - interrupted < 60_000, "stopped long before the task would have ended");
  const containers = await containerCountSettling(containersBefore);
  assert.is(containers, containersBefore, "Packer removed its container");
  assert.is((await docker.listImages({ filters: JSON.stringify({ reference: [`${project}-int/host`] }) })).length, 0);
  const manifestFile = path.join(slow, "bake-manifest.json");
  assert.equal(existsSync(manifestFile) ? JSON.parse(readFileSync(manifestFile, "utf8")).amis : {}, {});
  await removeProject(`${project}-int`);
});

test.run();
