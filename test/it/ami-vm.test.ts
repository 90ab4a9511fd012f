/**
 * `bake ami --target vm`, end to end: the reference host (its AMI, disk spec and playbook, with a
 * public-style role; its images on a busybox base) baked by Packer's qemu builder into a disk made
 * from its debootstrap spec, provisioned by the production playbook and bake's own roles in the guest, then booted under QEMU with its own engine, checked, rebooted and checked again.
 * The AMI bakes in stages: a release-only change (a service that fails its health check) is
 * written on the kept host stage's disk without Packer, fails its boot test and leaves nothing;
 * `bake test --target vm` boots the kept disk again, and interrupted, stops without touching it.
 */
import { test } from "uvu";
import * as assert from "uvu/assert";
import { cpSync, existsSync, mkdirSync, readFileSync, readdirSync, rmSync, statSync, writeFileSync } from "node:fs";
import path from "node:path";
import { execa } from "execa";
import { createHash } from "node:crypto";
import { CLI, ROOT, testEnv, writeTree, tempDir } from "../helpers/bake.js";
import { WEB_CHECKS, webRole } from "../fixtures/web-role.js";
import { busyboxRootfs, removeProject, uniqueProject } from "../helpers/engine.js";

const project = uniqueProject("vm");
const SECRET = `vm-sentinel-${process.pid}-Kq7`;
let dir = "";

/** bake in `cwd`; `nice` runs it (and the QEMU it starts) at the other files' lower priority. */
async function bakeVm(args: string[], env: Record<string, string> = {}, cwd = dir, nice = false) {
  const started = Date.now();
  const command = [...(nice ? ["nice", "-n", "10"] : []), process.execPath, CLI, ...args];
  const r = await execa(command[0], command.slice(1), {
    cwd,
    env: testEnv({ DIAGNOSTICS_TOKEN: SECRET, ...env }),
    extendEnv: true,
    reject: false,
    timeout: 1_800_000,
  });
  return {
    code: r.exitCode ?? -1,
    stdout: String(r.stdout),
    stderr: String(r.stderr),
    seconds: (Date.now() - started) / 1000,
  };
}

/** QEMU processes started for this test's project folder. */
async function qemuOfProject(folder = dir): Promise<string[]> {
  const { stdout } = await execa("ps", ["-eo", "args"], { reject: false });
  return stdout.split("\n").filter((l) => l.includes("qemu-system") && l.includes(`${folder}/`));
}

/**
 * The reference pipeline's images on a busybox base: a base, a runtime layer and two release
 * services answering HTTP (busybox httpd, probed by the image's own wget). What the VM holds and
 * runs is what the reference's is (a shipped base and runtime, two services with ports, env,
 * pass_env and health checks); the Debian images' weight (a 170 MB archive loaded by an emulated
 * engine, a Python probe started every interval) is the local target's to test, not the VM's.
 */
function images(rootfs: string): string {
  const service = (name: string, port: number, extra: string[] = []) => [
    `  ${name}:`,
    "    parent: runtime",
    `    dockerfile: containers/${name}/Dockerfile`,
    "    run:",
    `      ports: ["${port}:${port}"]`,
    "      env: { LOG_LEVEL: info }",
    ...extra,
    // Exits on SIGTERM (a first process ignores it unless handled), so that the reboot's stop does
    // not wait out docker stop's 10 s for each service.
    `      command: ["sh", "-c", "trap 'exit 0' TERM; httpd -f -p ${port} -h /srv/www & wait"]`,
    `      health: { http: /healthz, port: ${port} }`,
  ];
  return [
    "images:",
    `  base: { rootfs: { tar: ${rootfs} } }`,
    "  runtime: { parent: base, dockerfile: containers/runtime/Dockerfile }",
    ...service("diagnostics", 8080, ["      pass_env: [DIAGNOSTICS_TOKEN]"]),
    ...service("replays", 8081),
    "",
  ].join("\n");
}

test.before(async () => {
  dir = tempDir("bake-vm-");
  const layer = (text: string) => `ARG BAKE_PARENT\nFROM \${BAKE_PARENT}\n${text}\n`;
  writeTree(dir, {
    "containers/runtime/Dockerfile": layer("RUN mkdir -p /srv/www && echo ok > /srv/www/healthz"),
    "containers/diagnostics/Dockerfile": layer("RUN echo diagnostics > /srv/www/index.html"),
    "containers/replays/Dockerfile": layer("RUN echo replays > /srv/www/index.html"),
  });
  // The reference's playbook as the repository has it. Only the project's files: bake's own
  // provisioning (ansible/bake/ in this checkout) comes from bake's package, never from the project.
  cpSync(path.join(ROOT, "ansible"), path.join(dir, "ansible"), {
    recursive: true,
    filter: (src) => src !== path.join(ROOT, "ansible/bake"),
  });
  // The project's playbook also uses a role in the shape of public ones, checked by its spec.
  writeTree(dir, webRole("ansible"));
  writeFileSync(
    path.join(dir, "ansible/host.yml"),
    readFileSync(path.join(dir, "ansible/host.yml"), "utf8").replace(
      "    - role: journald\n",
      // The disk's apt lists are as old as the cached disk: fresh enough for a package it holds
      // (apt's update under emulation is a minute of the bake, and a download from the mirror).
      "    - role: journald\n    - role: web\n      vars: { web_apt_cache_valid_time: 31536000 }\n",
    ),
  );
  const spec = readFileSync(path.join(dir, "ansible/host.goss.yaml"), "utf8");
  writeFileSync(
    path.join(dir, "ansible/host.goss.yaml"),
    `${spec.replace(/^service:\n/m, "service:\n  lighttpd:\n    enabled: true\n    running: true\n")}${WEB_CHECKS}`,
  );
  // The reference's AMI as bake.yml has it (its VM disk spec included), without the local target's host image.
  const reference = readFileSync(path.join(ROOT, "bake.yml"), "utf8");
  const amis = reference
    .slice(reference.search(/^amis:$/m))
    .replace(/^    local: .*\n/m, "")
    // The web role's package comes with the disk, as the engine's does (apt's run under emulation
    // is a minute or two): the role still runs all its tasks, apt finding lighttpd installed.
    .replace(/^(      rootfs:\n        debootstrap:[\s\S]*?include: \[.*)\]/m, "$1, lighttpd]")
    // One CPU per VM: scripts/test.mjs runs this file beside the others, which keep the other core.
    .replace(/^    vm:(.*)\n/m, (line) => `${line}      cpus: 1\n`);
  assert.match(amis, /^  app-host:\n[\s\S]*^    vm:.*\n      cpus: 1\n[\s\S]*include: \[.*, lighttpd\]/m);
  writeFileSync(path.join(dir, "bake.yml"), `project: ${project}\n${images(await busyboxRootfs())}\n${amis}`);
  mkdirSync(path.join(dir, "broken"));
  writeFileSync(path.join(dir, "broken", "Dockerfile"), "ARG BAKE_PARENT\nFROM ${BAKE_PARENT}\n");
});

/** The reference's bake.yml with one more release service, which never becomes healthy: a release-only change. */
function withBrokenService(yml: string): string {
  const broken = [
    "  broken:",
    "    parent: runtime",
    "    dockerfile: broken/Dockerfile",
    "    run:",
    '      ports: ["8090:8090"]',
    '      command: ["sh", "-c", "echo broken starts; exec sleep 3600"]',
    // One probe, five seconds in: a probe a second (an exec each, under TCG) starves the other services' probes.
    '      health: { cmd: ["sh", "-c", "echo no answer on 8090; exit 1"], interval: 5, retries: 1 }',
    "",
  ].join("\n");
  return yml
    .replace(/^amis:$/m, `${broken}\namis:`)
    .replace("    services: [diagnostics, replays]", "    services: [diagnostics, replays, broken]");
}

test.after(async () => {
  await removeProject(project);
  // The baked disk alone is about 2 GB.
  rmSync(dir, { recursive: true, force: true });
});

test("the reference host baked on --target vm: its own engine loads the images, every service answers, after a reboot too", async () => {
  // Nothing is baked yet: bake test has no disk to boot, and says what to run.
  const none = await bakeVm(["test", "app-host", "--target", "vm"]);
  assert.is(none.code, 1, none.stderr);
  assert.match(
    none.stdout,
    /FAILED app-host +ansible\/host\.goss\.yaml[\s\S]*no VM disk with app-host's current key: run bake ami app-host --target vm first/,
  );
  const r = await bakeVm(["ami", "app-host", "--target", "vm", "--json"]);
  assert.is(r.code, 0, r.stderr.slice(-4000));
  const result = JSON.parse(r.stdout);
  assert.is(result.target, "vm");
  const disk = path.join(dir, result.regions.vm);
  assert.ok(existsSync(disk), disk);
  assert.match(result.regions.vm, new RegExp(`^\\.bake/vm/app-host-${result.key.slice(0, 12)}/disk\\.qcow2$`));
  const record = JSON.parse(readFileSync(path.join(path.dirname(disk), "vm.json"), "utf8"));
  assert.is(record.key, result.key);
  const manifest = JSON.parse(readFileSync(path.join(dir, "bake-manifest.json"), "utf8"));
  assert.equal(manifest.amis["app-host"].vm, { path: result.regions.vm, format: "qcow2", bytes: statSync(disk).size });
  assert.is(manifest.amis["app-host"].target, "vm");
  assert.ok(manifest.amis["app-host"].boot.ok);
  // In stages: Packer baked the host stage, kept by its key; the release stage was written on its disk.
  const [hostStage] = manifest.amis["app-host"].stages;
  assert.equal([hostStage.name, hostStage.node], ["host", "app-host@host"]);
  const stageDisk = `.bake/vm/app-host@host-${hostStage.key.slice(0, 12)}/disk.qcow2`;
  assert.match(r.stderr, `app-host: stage host: kept ${stageDisk}`);
  assert.match(r.stderr, "app-host: stage release: writing the release into a disk on the host stage's");
  const info = JSON.parse((await execa("qemu-img", ["info", "--output=json", disk])).stdout);
  assert.is(info["backing-filename"], `../app-host@host-${hostStage.key.slice(0, 12)}/disk.qcow2`);
  const stageBytes = statSync(path.join(dir, stageDisk)).size;
  assert.ok(
    statSync(disk).size * 4 < stageBytes,
    `release ${statSync(disk).size} bytes on a ${stageBytes}-byte host stage`,
  );
  // Every check, on the first boot and after the reboot, in the guest's own engine.
  for (const round of ["", " after reboot"]) {
    for (const check of [
      "boot",
      "units",
      "engine",
      "preload",
      "service diagnostics",
      "service replays",
      "test ansible/host.goss.yaml",
    ]) {
      assert.match(r.stderr, `boot test: ok ${check}${round} (`, `${check}${round}`);
    }
  }
  assert.match(
    r.stderr,
    /boot test: ok engine \([\d.]+ s\): docker\.service active \(success, enabled\); the host's own engine answers: 20\./,
  );
  assert.match(
    r.stderr,
    /boot test: ok service diagnostics after reboot \([\d.]+ s\): .*GET http:\/\/127\.0\.0\.1:8080\/healthz \(the host's 127\.0\.0\.1:8080, through SSH\) answered 200/,
  );
  assert.match(r.stderr, /QEMU accelerator: (kvm|tcg) \(/);
  // The pass_env value reached the host at boot only: neither the disk nor any log holds it.
  const { stdout: found } = await execa("grep", ["-c", "-a", SECRET, disk], { reject: false });
  assert.is(found.trim(), "0", "the secret is not in the baked disk");
  assert.not.match(r.stderr, SECRET);
  const logs = path.join(dir, ".bake", "logs");
  for (const run of readdirSync(logs))
    for (const f of readdirSync(path.join(logs, run)))
      assert.not.match(readFileSync(path.join(logs, run, f), "utf8"), SECRET, f);
  // Nothing runs or stays: no QEMU, no boot copy, no rendered folder with its disk and key.
  assert.equal(await qemuOfProject(), []);
  assert.equal(readdirSync(path.dirname(disk)).sort(), [
    "disk.qcow2",
    "id_ed25519",
    "id_ed25519.pub",
    "initrd.img",
    "vm.json",
    "vmlinuz",
  ]);
  assert.not.ok(
    existsSync(path.join(dir, ".bake", "ami")) &&
      readdirSync(path.join(dir, ".bake", "ami")).some((f) => f.startsWith("app-host-vm-")),
    "the rendered folder is removed",
  );
  console.log(`  vm bake of the reference host: ${r.seconds.toFixed(0)} s`);

  // Nothing changed: the disk is found by its key, in seconds.
  const again = await bakeVm(["ami", "app-host", "--target", "vm", "--json"]);
  assert.is(again.code, 0, again.stderr);
  assert.is(JSON.parse(again.stdout).regions.vm, result.regions.vm);
  assert.match(again.stderr, /has this key: nothing to bake/);
  assert.ok(again.seconds < 30, `${again.seconds} s`);
  const plan = await bakeVm(["plan", "app-host", "--target", "vm", "--json"]);
  const node = JSON.parse(plan.stdout).nodes.find((n: { name: string }) => n.name === "app-host");
  assert.equal([node.status, node.key], ["cached", result.key]);

  // What is inside the disk: the guest's packages (its kernel, its engine) and the images it ships.
  const sbom = await bakeVm(["sbom", "app-host", "--target", "vm", "--format", "cyclonedx-json"]);
  assert.is(sbom.code, 0, sbom.stderr);
  assert.is(
    `sha256:${createHash("sha256").update(`${sbom.stdout}\n`).digest("hex")}`,
    JSON.parse(readFileSync(path.join(dir, "bake-manifest.json"), "utf8")).amis["app-host"].sbom["cyclonedx-json"],
  );
  const guest = JSON.parse(sbom.stdout)
    .components.find((c: any) => c["bom-ref"] === "host:host")
    .components.map((c: any) => c.name);
  assert.ok(guest.includes("docker.io") && guest.some((n: string) => n.startsWith("linux-image-")), guest.join(", "));
  const verified = await bakeVm(["verify", "app-host", "--target", "vm"]);
  assert.is(verified.code, 0, verified.stdout + verified.stderr);
  assert.match(verified.stdout, /ok +ami: the VM disk of key [0-9a-f]{12} is in /);
});

/** The manifest's record of the AMI in a project folder. */
const amiRecord = (folder: string) =>
  JSON.parse(readFileSync(path.join(folder, "bake-manifest.json"), "utf8")).amis["app-host"];

/**
 * A change below the release (the web role's page, a playbook input) in a copy of the project as
 * the first test left it: its host stage and its boot-tested disk kept. The copy's bake starts here
 * and runs beside the next two tests, its VM on the other core; the last test checks it. It skips
 * the boot test: the first test and the release-only one boot this AMI's disks.
 */
const GREETING = `served after the bottom stage moved ${process.pid}`;
let below: { dir: string; before: any; bake: ReturnType<typeof bakeVm> } | undefined;

test("a change below the release: bake plan shows both stages to bake and why (the bake starts beside the next tests)", async () => {
  const copy = tempDir("bake-vm-below-");
  cpSync(dir, copy, { recursive: true });
  const playbook = path.join(copy, "ansible/host.yml");
  const text = readFileSync(playbook, "utf8");
  assert.match(text, "vars: { web_apt_cache_valid_time: 31536000 }");
  writeFileSync(
    playbook,
    text.replace(
      "vars: { web_apt_cache_valid_time: 31536000 }",
      `vars: { web_apt_cache_valid_time: 31536000, web_greeting: "${GREETING}" }`,
    ),
  );
  const before = amiRecord(copy);
  const plan = await bakeVm(["plan", "app-host", "--target", "vm", "--json"], {}, copy);
  assert.is(plan.code, 0, plan.stderr);
  const node = JSON.parse(plan.stdout).nodes.find((n: { name: string }) => n.name === "app-host");
  assert.equal(
    node.stages.map((st: { name: string; status: string }) => [st.name, st.status]),
    [
      ["host", "build"],
      ["release", "build"],
    ],
  );
  assert.match(
    node.stages[0].reason,
    new RegExp(`^playbook input host\\.yml changed since ${before.stages[0].key.slice(0, 12)}$`),
  );
  below = {
    dir: copy,
    before,
    // At the other lanes' priority (scripts/test.mjs): with this file's other VM beside it, two
    // emulated CPUs at normal priority would leave the other files a tenth of the machine.
    bake: bakeVm(["ami", "app-host", "--target", "vm", "--no-boot-test", "--json"], {}, copy, true),
  };
});

test("Ctrl-C while bake test boots the kept disk: exit 130, the VM stopped, no boot copy; the disk stays as baked", async () => {
  // The boot test's interrupt path, through bake test on the disk the first test kept (a bake's
  // own boot test stops the same way; its failure path, which also removes the disk, is the next test).
  const kept = JSON.parse(readFileSync(path.join(dir, "bake-manifest.json"), "utf8")).amis["app-host"];
  const disk = path.join(dir, kept.regions.vm);
  const before = statSync(disk);
  const folder = readdirSync(path.dirname(disk)).sort();
  const child = execa(process.execPath, [CLI, "test", "app-host", "--target", "vm"], {
    cwd: dir,
    env: testEnv({ DIAGNOSTICS_TOKEN: SECRET }),
    extendEnv: true,
    reject: false,
    timeout: 600_000,
    forceKillAfterDelay: false, // the one SIGINT below, never execa's SIGKILL after it
  });
  let stderr = "";
  child.stderr!.on("data", (d: Buffer) => (stderr += d.toString()));
  const started = Date.now();
  while (!/boot test: booting the VM/.test(stderr) && child.exitCode === null && Date.now() - started < 300_000)
    await new Promise((r) => setTimeout(r, 250));
  assert.match(stderr, /app-host: boot test: booting the VM/);
  assert.equal((await qemuOfProject()).length, 1, "the boot test's VM runs");
  child.kill("SIGINT");
  const r = await child;
  assert.is(r.exitCode, 130, stderr.slice(-2000));
  assert.match(stderr, /interrupted by SIGINT/);
  assert.equal(await qemuOfProject(), []);
  assert.equal(readdirSync(path.dirname(disk)).sort(), folder, "no boot copy left beside the disk");
  const after = statSync(disk);
  assert.equal([after.size, after.mtimeMs], [before.size, before.mtimeMs], "the kept disk is not the one booted");
  const plan = await bakeVm(["plan", "app-host", "--target", "vm", "--json"]);
  assert.equal(JSON.parse(plan.stdout).nodes.find((n: { name: string }) => n.name === "app-host").status, "cached");
});

test("a release-only change on the kept host stage: written in seconds, no Packer; a service that never becomes healthy fails its boot test, nothing left", async () => {
  const before = JSON.parse(readFileSync(path.join(dir, "bake-manifest.json"), "utf8")).amis["app-host"];
  const [hostStage] = before.stages;
  const vmRoot = path.join(dir, ".bake", "vm");
  const folders = readdirSync(vmRoot).sort();
  const original = readFileSync(path.join(dir, "bake.yml"), "utf8");
  writeFileSync(path.join(dir, "bake.yml"), withBrokenService(original));
  try {
    const planned = JSON.parse((await bakeVm(["plan", "app-host", "--target", "vm", "--json"])).stdout).nodes.find(
      (n: { name: string }) => n.name === "app-host",
    );
    assert.equal(
      planned.stages.map((st: { name: string; key: string; status: string }) => [st.name, st.key, st.status]),
      [
        ["host", hostStage.key, "cached"],
        ["release", planned.key, "build"],
      ],
    );
    const r = await bakeVm(["ami", "app-host", "--target", "vm"]);
    assert.is(r.code, 1, r.stderr.slice(-3000));
    assert.match(
      r.stderr,
      `app-host: stage host: .bake/vm/app-host@host-${hostStage.key.slice(0, 12)}/disk.qcow2 has this key: reused`,
    );
    assert.not.match(r.stderr, /packer build/, "no Packer run: the release stage is written, not booted");
    assert.match(r.stderr, /app-host: boot test failed: [^\n]*\bservice broken\b/, r.stderr.slice(-4000));
    assert.match(r.stderr, /service broken: .*container [\w-]+-broken (running unhealthy|exited)/);
    assert.match(r.stderr, /bake-service@[\w-]+-broken\.service journal:\n[\s\S]*broken: started/);
    assert.match(r.stderr, /broken starts/, "the container's own log lines");
    // The other services came up from the release archive the loader loaded at boot.
    const bootLines = r.stderr.slice(r.stderr.indexOf("boot test:")).slice(0, 8000);
    assert.match(r.stderr, /boot test: ok preload \(/, bootLines);
    assert.match(r.stderr, /boot test: ok service replays \(/, bootLines);
    assert.equal(await qemuOfProject(), []);
    assert.equal(readdirSync(vmRoot).sort(), folders, "no disk for the new key; the host stage and the kept disk stay");
    const ami = path.join(dir, ".bake", "ami");
    assert.equal(
      existsSync(ami) ? readdirSync(ami).filter((f) => f.startsWith(`app-host-vm-${planned.key.slice(0, 12)}`)) : [],
      [],
    );
    const after = JSON.parse(readFileSync(path.join(dir, "bake-manifest.json"), "utf8")).amis["app-host"];
    assert.equal(after, before, "the manifest still records the disk that passed");
    console.log(`  release-only vm bake with its boot test: ${r.seconds.toFixed(0)} s`);
  } finally {
    writeFileSync(path.join(dir, "bake.yml"), original);
  }
});

test("a change below the release: Packer bakes the host stage again, the release stage is written on the new one; the disk kept before stays on its own", async () => {
  assert.ok(below, "the bake was started");
  const { dir: copy, before } = below!;
  const r = await below!.bake;
  assert.is(r.code, 0, r.stderr.slice(-4000));
  const after = amiRecord(copy);
  const [oldHost] = before.stages;
  const [newHost] = after.stages;
  assert.is.not(newHost.key, oldHost.key);
  assert.is.not(after.key, before.key);
  assert.is(JSON.parse(r.stdout).regions.vm, after.regions.vm);
  const stageDisk = (key: string) => `.bake/vm/app-host@host-${key.slice(0, 12)}/disk.qcow2`;
  assert.match(r.stderr, `app-host: stage host: packer build `);
  assert.match(r.stderr, "TASK [web : The site's page]");
  assert.match(r.stderr, `app-host: stage host: kept ${stageDisk(newHost.key)}`);
  assert.match(r.stderr, "app-host: stage release: writing the release into a disk on the host stage's");
  assert.match(r.stderr, "app-host: boot test: skipped (--no-boot-test)");
  assert.is(after.boot, undefined, "no boot test recorded");
  // The new release disk stands on the new host stage; the one kept before still stands on the old one.
  const backing = async (disk: string) =>
    JSON.parse((await execa("qemu-img", ["info", "--output=json", path.join(copy, disk)])).stdout)["backing-filename"];
  assert.is(await backing(after.regions.vm), `../app-host@host-${newHost.key.slice(0, 12)}/disk.qcow2`);
  assert.is(await backing(before.regions.vm), `../app-host@host-${oldHost.key.slice(0, 12)}/disk.qcow2`);
  // The playbook's change is in the new host stage's disk, not in the old one.
  const holds = async (disk: string) =>
    (await execa("grep", ["-c", "-a", GREETING, path.join(copy, disk)], { reject: false })).stdout.trim() !== "0";
  assert.ok(await holds(stageDisk(newHost.key)), "the new host stage holds the new page");
  assert.not.ok(await holds(stageDisk(oldHost.key)), "the old host stage is as it was");
  // Prune (a dry run) keeps both host stages: the current one, and the one the kept disk stands on.
  const pruned = await bakeVm(["prune", "--json"], {}, copy);
  assert.is(pruned.code, 0, pruned.stderr);
  assert.equal(
    JSON.parse(pruned.stdout)
      .decisions.filter((d: any) => d.name === "app-host@host")
      .map((d: any) => [d.key, d.action, d.reason.replace(/[0-9a-f]{12}/, "<key>")]),
    [
      [newHost.key, "keep", "carries the current key"],
      [oldHost.key, "keep", "the kept disk <key> stands on it"],
    ],
  );
  assert.equal(await qemuOfProject(copy), []);
  console.log(`  vm bake from the host stage up, no boot test: ${r.seconds.toFixed(0)} s`);
  rmSync(copy, { recursive: true, force: true });
});

test.run();
