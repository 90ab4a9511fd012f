/** bake.yml: the reference file loads; bad inputs exit 2 naming file, line and what is wrong. */
import { test } from "uvu";
import * as assert from "uvu/assert";
import { readFileSync } from "node:fs";
import path from "node:path";
import pLimit from "p-limit";
import { parseConfig, loadConfig } from "../../src/config/load.js";
import { ConfigError, ConfigErrors } from "../../src/errors.js";
import { interpolate } from "../../src/config/interpolate.js";
import { parsePort } from "../../src/config/check-run.js";
import { schemaText } from "../../src/config/write-schema.js";
import { DEFAULT_LOCAL_HOST, withDefaultLocalHost } from "../../src/config/local-host.js";
import { buildGraph } from "../../src/graph/graph.js";
import { bake, ROOT, tempTree, writeTree } from "../helpers/bake.js";

const VALID = [
  "project: demo", // 1
  "images:", // 2
  "  base:", // 3
  "    rootfs: { tar: rootfs.tar }", // 4
  "  svc:", // 5
  "    parent: base", // 6
  "    dockerfile: app/Dockerfile", // 7
  "  rel:", // 8
  "    parent: svc", // 9
  "    dockerfile: app/Dockerfile", // 10
  "    run:", // 11
  '      ports: ["8080:8080"]', // 12
  "      health: { http: /healthz, port: 8080 }", // 13
  "amis:", // 14
  "  host:", // 15
  "    builder: ebs", // 16
  "    region: us-east-1", // 17
  '    source: { owners: ["136693071363"], name: "debian-12-*" }', // 18
  "    instance_type: t3.small", // 19
  "    playbook: ansible/host.yml", // 20
  "    preload: [base]", // 21
  "    services: [rel]", // 22
];

/** The valid file with some lines replaced (line numbers are 1-based; null deletes the line). */
function variant(changes: Record<number, string | null>): string {
  return VALID.map((l, i) => (i + 1 in changes ? changes[i + 1] : l))
    .filter((l) => l !== null)
    .join("\n");
}

const FILES = {
  "rootfs.tar": "not really a tar, only needs to exist",
  "app/Dockerfile": "ARG BAKE_PARENT\nFROM ${BAKE_PARENT}\n",
  "ansible/host.yml": "- hosts: all\n  tasks: []\n",
  "notadir.txt": "x",
  escape: "->/etc",
};

const BAD: [string, string, number, RegExp][] = [
  ["invalid YAML", variant({ 7: "    dockerfile: app/Dockerfile: x" }), 7, /invalid YAML/],
  [
    "duplicate key",
    variant({ 7: "    dockerfile: app/Dockerfile\n    dockerfile: app/Dockerfile" }),
    8,
    /invalid YAML.*(unique|duplicate)/i,
  ],
  [
    "unknown top-level key",
    variant({ 1: "project: demo\nimagez: {}" }),
    2,
    /unknown key "imagez" in the top level.*\n.*did you mean "images"/,
  ],
  [
    "typo in image key",
    variant({ 6: "    parnt: base" }),
    6,
    /unknown key "parnt" in images\.svc[\s\S]*did you mean "parent"/,
  ],
  ["missing project", variant({ 1: null }), 1, /the top level is missing "project"/],
  ["images is a list", "project: demo\nimages:\n  - base\n", 3, /images must be a mapping/],
  [
    "project not a Docker name",
    variant({ 1: "project: Demo_App" }),
    1,
    /project "Demo_App" is not a valid Docker repository name/,
  ],
  [
    "image name not a Docker name",
    variant({ 3: "  Base:", 6: "    parent: Base", 21: "    preload: [Base]" }),
    3,
    /image name "Base" is not a valid Docker repository name/,
  ],
  [
    "unset variable",
    variant({ 17: "    region: ${BAKE_TEST_UNSET_REGION}" }),
    17,
    /environment variable BAKE_TEST_UNSET_REGION is not set[\s\S]*\$\{BAKE_TEST_UNSET_REGION:-\}/,
  ],
  ["unclosed ${", variant({ 17: '    region: "${AWS_REGION"' }), 17, /"\$\{" is not closed/],
  ["bare $VAR", variant({ 17: "    region: $AWS_REGION" }), 17, /"\$AWS_REGION" is not read from the environment/],
  [
    "base without rootfs or from",
    variant({ 4: "    args: { A: b }" }),
    3,
    /base image "base" needs exactly one of rootfs: or from:/,
  ],
  [
    "base with rootfs and from",
    variant({ 4: "    rootfs: { tar: rootfs.tar }\n    from: debian:12" }),
    3,
    /needs exactly one of rootfs: or from:/,
  ],
  [
    "rootfs with two sources",
    variant({ 4: "    rootfs: { tar: rootfs.tar, debootstrap: { suite: bookworm } }" }),
    4,
    /rootfs of "base" needs exactly one of debootstrap: or tar:/,
  ],
  [
    "missing rootfs tarball",
    variant({ 4: "    rootfs: { tar: nothere.tar }" }),
    4,
    /rootfs tarball nothere.tar does not exist/,
  ],
  ["unknown parent", variant({ 6: "    parent: bsae" }), 6, /parent "bsae" of image "svc" is not defined/],
  [
    "cycle",
    variant({ 4: "    parent: rel\n    dockerfile: app/Dockerfile" }),
    4,
    /images form a cycle: base → rel → svc → base|is a release/,
  ],
  ["own parent", variant({ 6: "    parent: svc" }), 6, /image "svc" is its own parent/],
  [
    "parent is a release",
    variant({ 7: "    dockerfile: app/Dockerfile\n  other:\n    parent: rel\n    dockerfile: app/Dockerfile" }),
    9,
    /parent "rel" of "other" is a release/,
  ],
  ["service without dockerfile", variant({ 7: null }), 5, /image "svc" has a parent but no dockerfile:/],
  [
    "missing Dockerfile",
    variant({ 7: "    dockerfile: app/Dockerfile.nope" }),
    7,
    /Dockerfile app\/Dockerfile.nope does not exist/,
  ],
  [
    "context is a file",
    variant({ 7: "    dockerfile: app/Dockerfile\n    context: notadir.txt" }),
    8,
    /build context notadir.txt is not a folder/,
  ],
  [
    "port out of range",
    variant({ 12: '      ports: ["99999:8080"]' }),
    12,
    /port "99999:8080" is not a port between 1 and 65535/,
  ],
  [
    "port with bad address",
    variant({ 12: '      ports: ["1.2.3:8080:80"]' }),
    12,
    /port "1.2.3:8080:80" has an invalid address "1.2.3"/,
  ],
  ["port with bad protocol", variant({ 12: '      ports: ["8080/sctp"]' }), 12, /unknown protocol "sctp"/],
  [
    "env name",
    variant({ 12: '      ports: ["8080:8080"]\n      env: { 1BAD: x }' }),
    13,
    /environment variable name "1BAD" is not valid/,
  ],
  [
    "pass_env name",
    variant({ 12: '      ports: ["8080:8080"]\n      pass_env: [API-TOKEN]' }),
    13,
    /pass_env name "API-TOKEN" is not a valid environment variable name/,
  ],
  [
    "pass_env also in env",
    variant({ 12: '      ports: ["8080:8080"]\n      env: { TOKEN: x }\n      pass_env: [TOKEN]' }),
    14,
    /"TOKEN" is in both env: and pass_env:/,
  ],
  ["health without port", variant({ 13: "      health: { http: /healthz }" }), 13, /an http health check needs port:/],
  [
    "health path",
    variant({ 13: "      health: { http: healthz, port: 8080 }" }),
    13,
    /health path "healthz" must start with \//,
  ],
  [
    "health with neither",
    variant({ 13: "      health: { port: 8080 }" }),
    13,
    /health needs exactly one of http: or cmd:/,
  ],
  [
    "owner account id",
    variant({ 18: '    source: { owners: ["13669307136"], name: "debian-12-*" }' }),
    18,
    /"13669307136" is not an AWS account id/,
  ],
  [
    "account id read as a number",
    variant({ 17: "    region: us-east-1\n    share_with: [012345678901]" }),
    18,
    /"12345678901" is not an AWS account id[\s\S]*in quotes/,
  ],
  ["region", variant({ 17: "    region: us-east" }), 17, /"us-east" is not an AWS region name/],
  [
    "copy_to region",
    variant({ 17: "    region: us-east-1\n    copy_to: [eu_west_1]" }),
    18,
    /"eu_west_1" is not an AWS region name/,
  ],
  [
    "instance-store without bundle",
    variant({ 16: "    builder: instance-store" }),
    16,
    /is instance-store but has no bundle:/,
  ],
  [
    "builder unknown",
    variant({ 16: "    builder: chroot" }),
    16,
    /amis\.host\.builder must be one of "ebs", "instance-store"/,
  ],
  ["preload unknown", variant({ 21: "    preload: [base, nope]" }), 21, /preload image "nope" is not defined/],
  ["services not a release", variant({ 22: "    services: [svc]" }), 22, /"svc" is a service image, not a release/],
  [
    "release image not preloaded",
    variant({ 22: "    services: [rel]\n    release_images: [svc]" }),
    23,
    /release image "svc" is not in preload:[\s\S]*\(base\)/,
  ],
  [
    "release image that is a service",
    variant({ 22: "    services: [rel]\n    release_images: [rel]" }),
    23,
    /"rel" is a service: services always ship in the release stage/,
  ],
  [
    "playbook missing",
    variant({ 20: "    playbook: ansible/site.yml" }),
    20,
    /playbook ansible\/site.yml does not exist/,
  ],
  [
    "BAKE_PARENT in args",
    variant({ 7: "    dockerfile: app/Dockerfile\n    args: { BAKE_PARENT: x }" }),
    8,
    /BAKE_PARENT is set by bake/,
  ],
  [
    "unknown debootstrap key",
    variant({ 4: "    rootfs: { debootstrap: { suite: bookworm, variants: minbase } }" }),
    4,
    /unknown key "variants" in images\.base\.rootfs\.debootstrap[\s\S]*did you mean "variant"/,
  ],
  [
    "registry",
    variant({ 1: "project: demo\nregistry: http://127.0.0.1:5000" }),
    2,
    /registry "http:\/\/127.0.0.1:5000" is not host\[:port\]\[\/path\]/,
  ],
  ["instance type", variant({ 19: "    instance_type: large" }), 19, /"large" is not an EC2 instance type/],
  [
    "instance-store on a current type",
    variant({
      16: '    builder: instance-store\n    bundle: { s3_bucket: b-bundles, account_id: "123456789012" }',
      19: "    instance_type: t3.small",
    }),
    20,
    /t3\.small cannot boot an instance-store root: only the previous-generation C1, C3, D2, I2, M1, M2, M3, R3, X1 types can/,
  ],
  [
    "retention keep 0",
    variant({ 22: "    services: [rel]\n    retention: { keep: 0 }" }),
    23,
    /amis\.host\.retention\.keep must be >= 1/,
  ],
  [
    "release without parent",
    variant({ 4: '    rootfs: { tar: rootfs.tar }\n    run: { ports: ["80"] }' }),
    5,
    /image "base" has run: but no parent/,
  ],
  [
    "args not scalars",
    variant({ 7: "    dockerfile: app/Dockerfile\n    args: { A: [1, 2] }" }),
    8,
    /images\.svc\.args\.A must be a string or a number or a boolean/,
  ],
  ["ami named like an image", variant({ 15: "  rel:" }), 15, /"rel" names both an image and an AMI/],
  ["empty file", "", 1, /must be a mapping with project: and images:/],
  [
    "local image unknown",
    variant({ 22: "    services: [rel]\n    local: { image: hostimg }" }),
    23,
    /local image "hostimg" is not defined/,
  ],
  [
    "local image without systemd",
    variant({
      4: "    rootfs: { debootstrap: { suite: bookworm, include: [python3] } }",
      22: "    services: [rel]\n    local: { image: base }",
    }),
    23,
    /local image "base" has no systemd[\s\S]*add systemd-sysv to images\.base\.rootfs\.debootstrap\.include/,
  ],
  [
    "context outside the project",
    variant({ 7: "    dockerfile: app/Dockerfile\n    context: ../.." }),
    8,
    /build context \.\.\/\.\. is outside the project[\s\S]*--allow-path/,
  ],
  [
    "absolute Dockerfile outside",
    variant({ 7: "    dockerfile: /etc/hostname" }),
    7,
    /Dockerfile \/etc\/hostname is outside the project/,
  ],
  [
    "context through a link that leaves the project",
    variant({ 7: "    dockerfile: app/Dockerfile\n    context: escape" }),
    8,
    /build context escape is outside the project/,
  ],
  [
    "playbook outside",
    variant({ 20: "    playbook: /etc/ansible/site.yml" }),
    20,
    /playbook \/etc\/ansible\/site.yml is outside the project/,
  ],
  [
    "rootfs tarball outside",
    variant({ 4: "    rootfs: { tar: /etc/passwd }" }),
    4,
    /rootfs tarball \/etc\/passwd is outside the project/,
  ],
  [
    "health path breaking out of the shell",
    variant({ 13: "      health: { http: \"/x'; touch /tmp/p; '\", port: 8080 }" }),
    13,
    /health path "\/x'; touch \/tmp\/p; '" may hold only URL characters/,
  ],
  [
    "health path with $",
    variant({ 13: '      health: { http: "/$$HOME", port: 8080 }' }),
    13,
    /health path "\/\$HOME" may hold only URL characters/,
  ],
  [
    "YAML alias bomb",
    [
      "project: demo",
      'a: &a ["x", "x", "x", "x", "x", "x", "x", "x", "x", "x"]',
      ...["b", "c", "d", "e", "f"].map((k, i) => `${k}: &${k} [${Array(10).fill(`*${"abcde"[i]}`).join(", ")}]`),
      "images: {}",
    ].join("\n"),
    3,
    /YAML aliases expand too far/,
  ],
  [
    "secret with two sources",
    variant({ 7: "    dockerfile: app/Dockerfile\n    secrets: { token: { env: TOKEN, file: notadir.txt } }" }),
    8,
    /secret "token" needs exactly one of env: or file:/,
  ],
  [
    "secret file outside the project",
    variant({ 7: "    dockerfile: app/Dockerfile\n    secrets: { token: { file: /etc/shadow } }" }),
    8,
    /secret file \/etc\/shadow is outside the project/,
  ],
  [
    "vm disk without a kernel or sshd",
    variant({
      22: "    services: [rel]\n    vm:\n      rootfs:\n        debootstrap: { suite: bookworm, include: [systemd-sysv, python3] }",
    }),
    25,
    /the VM host's debootstrap spec lacks a kernel \(e\.g\. linux-image-cloud-amd64\), openssh-server: QEMU boots the disk's own kernel; Packer and the boot test reach the host over SSH/,
  ],
  [
    "vm disk size",
    variant({
      22: "    services: [rel]\n    vm:\n      rootfs: { debootstrap: { suite: bookworm, include: [linux-image-amd64, systemd-sysv, openssh-server, python3] } }\n      disk_size: 4 GB",
    }),
    25,
    /amis\.host\.vm\.disk_size must match pattern/,
  ],
  [
    "vm rootfs tar",
    variant({ 22: "    services: [rel]\n    vm:\n      rootfs: { tar: rootfs.tar }" }),
    24,
    /amis\.host\.vm\.rootfs is missing "debootstrap"[\s\S]*unknown key "tar" in amis\.host\.vm\.rootfs/,
  ],
  [
    "runtime_env relative",
    variant({ 22: "    services: [rel]\n    runtime_env: etc/runtime.env" }),
    23,
    /runtime_env "etc\/runtime.env" is not an absolute path on the host/,
  ],
  [
    "runtime_env with a space",
    variant({ 22: '    services: [rel]\n    runtime_env: "/etc/bake/run time.env"' }),
    23,
    /runtime_env "\/etc\/bake\/run time.env" holds characters a host path here may not/,
  ],
  [
    "runtime_env with a line break",
    variant({ 22: '    services: [rel]\n    runtime_env: "/etc/bake/x\\nwrite /tmp/evil"' }),
    23,
    /runtime_env "\/etc\/bake\/x\nwrite \/tmp\/evil" holds characters/,
  ],
];

test(`at least 30 bad inputs are covered (${BAD.length})`, () => {
  assert.ok(BAD.length >= 30);
});

test("the valid fixture loads", () => {
  const dir = tempTree(FILES);
  const config = parseConfig(VALID.join("\n"), "bake.yml", dir, {});
  assert.equal(
    config.images.map((i) => `${i.name}:${i.layer}`),
    ["base:base", "svc:service", "rel:release"],
  );
  assert.equal(config.amis[0].services, ["rel"]);
  assert.equal(config.images[2].run?.ports, [
    { hostIp: "127.0.0.1", hostPort: 8080, containerPort: 8080, protocol: "tcp" },
  ]);
});

test("a two-layer graph loads: a release straight on a base; an AMI with no playbook, its engine bake's unless it says own", () => {
  const dir = tempTree(FILES);
  const config = parseConfig(variant({ 9: "    parent: base", 20: null }), "bake.yml", dir, {});
  assert.equal(
    config.images.map((i) => `${i.name}:${i.layer}:${i.parent ?? ""}`),
    ["base:base:", "svc:service:base", "rel:release:base"],
  );
  assert.equal([config.amis[0].playbook, config.amis[0].engine], [undefined, "bake"]);
  assert.is(parseConfig(variant({ 20: "    engine: own" }), "bake.yml", dir, {}).amis[0].engine, "own");
  assert.throws(() => parseConfig(variant({ 20: "    engine: docker" }), "bake.yml", dir, {}), /engine/);
});

test("an AMI without local: boots from bake's default host on --target local only (Debian 12 with systemd); one with local: keeps its own", () => {
  const dir = tempTree(FILES);
  const config = parseConfig(VALID.join("\n"), "bake.yml", dir, {});
  assert.is(withDefaultLocalHost(config, "aws"), config);
  assert.is(withDefaultLocalHost(config, "vm"), config);
  const local = withDefaultLocalHost(config, "local");
  const host = local.images.find((i) => i.name === DEFAULT_LOCAL_HOST)!;
  assert.equal(
    [host.layer, host.rootfs?.debootstrap],
    [
      "base",
      { suite: "bookworm", variant: "minbase", include: ["ca-certificates", "dbus", "python3", "systemd-sysv"] },
    ],
  );
  assert.is(local.amis[0].local?.image, DEFAULT_LOCAL_HOST);
  assert.equal(buildGraph(local, "local").byName.get("host")!.deps, ["base", "rel", DEFAULT_LOCAL_HOST]);
  const own = parseConfig(variant({ 22: "    services: [rel]\n    local: { image: base }" }), "bake.yml", dir, {});
  assert.is(withDefaultLocalHost(own, "local"), own);
});

test("a vm: disk loads with its defaults, and only on the vm target does it decide the AMI's key", () => {
  const dir = tempTree(FILES);
  const text = variant({
    22: "    services: [rel]\n    vm:\n      rootfs: { debootstrap: { suite: bookworm, include: [python3, openssh-server, systemd-sysv, linux-image-cloud-amd64] } }",
  });
  const config = parseConfig(text, "bake.yml", dir, {});
  const vm = config.amis[0].vm!;
  assert.equal([vm.diskSize, vm.memory, vm.cpus], ["4G", 2048, 2]);
  assert.equal(vm.rootfs.debootstrap.include, ["linux-image-cloud-amd64", "openssh-server", "python3", "systemd-sysv"]);
  assert.equal(vm.position.line, 24);
});

test("every bad input: exit 2, file:line:column, the message, no stack trace", async () => {
  const limit = pLimit(4);
  const failures: string[] = [];
  await Promise.all(
    BAD.map(([name, text, line, message]) =>
      limit(async () => {
        const dir = tempTree({ ...FILES, "bake.yml": text });
        const r = await bake(["plan", "--target", "local"], {
          cwd: dir,
          env: { DOCKER_HOST: "unix:///nonexistent.sock" },
        });
        const where = new RegExp(`^error: bake\\.yml:${line}:\\d+: `, "m");
        if (r.code !== 2) failures.push(`${name}: exit ${r.code}, stderr: ${r.stderr}`);
        else if (!where.test(r.stderr)) failures.push(`${name}: expected bake.yml:${line}: in: ${r.stderr}`);
        else if (!message.test(r.stderr)) failures.push(`${name}: expected ${message} in: ${r.stderr}`);
        else if (/\n\s+at /.test(r.stderr)) failures.push(`${name}: stack trace printed: ${r.stderr}`);
        else if (r.stdout !== "") failures.push(`${name}: printed a plan: ${r.stdout}`);
      }),
    ),
  );
  assert.equal(failures, []);
});

test("--verbose adds the stack trace", async () => {
  const dir = tempTree({ ...FILES, "bake.yml": variant({ 6: "    parent: bsae" }) });
  const r = await bake(["plan", "--verbose", "--target", "local"], { cwd: dir });
  assert.is(r.code, 2);
  assert.match(r.stderr, /\n\s+at /);
});

test("--file names the file in messages, relative paths resolve against its folder", async () => {
  const dir = tempTree({});
  writeTree(path.join(dir, "sub"), { ...FILES, "pipeline.yml": variant({ 6: "    parent: bsae" }) });
  const r = await bake(["plan", "--file", "sub/pipeline.yml", "--target", "local"], { cwd: dir });
  assert.is(r.code, 2);
  assert.match(r.stderr, /^error: sub\/pipeline\.yml:6:13: parent "bsae"/m);
});

test("a missing bake.yml is a usage error", async () => {
  const r = await bake(["plan"], { cwd: tempTree({}) });
  assert.is(r.code, 2);
  assert.match(r.stderr, /bake\.yml does not exist/);
});

test("an unknown flag is a usage error naming it", async () => {
  const r = await bake(["plan", "--targte", "local"], { cwd: tempTree({}) });
  assert.is(r.code, 2);
  assert.match(r.stderr, /Unknown argument: targte/i);
});

test("${VAR}, ${VAR:-default}, ${VAR-default} and $$", () => {
  const env = { A: "a", EMPTY: "" };
  const value = (s: string) => {
    const r = interpolate(s, env);
    return r.ok ? r.value : `ERR ${r.problem.message}`;
  };
  assert.is(value("x-${A}-y"), "x-a-y");
  assert.is(value("${MISSING:-dflt}"), "dflt");
  assert.is(value("${EMPTY:-dflt}"), "dflt");
  assert.is(value("${EMPTY-dflt}"), "");
  assert.is(value("${MISSING-dflt}"), "dflt");
  assert.is(value("${MISSING:-}"), "");
  assert.is(value("cost: $$5 and $${A}"), "cost: $5 and ${A}");
  assert.is(value("a $ b"), "a $ b");
  assert.is(value("${MISSING}"), "ERR environment variable MISSING is not set");
  assert.is(value("${1A}"), 'ERR "${1A}" is not a valid variable reference');
});

test("interpolation happens in values only, and the column points at the expression", () => {
  const dir = tempTree(FILES);
  try {
    parseConfig(variant({ 17: '    region: "us-${BAKE_NOPE}"' }), "bake.yml", dir, {});
    assert.unreachable();
  } catch (e) {
    assert.instance(e, ConfigError);
    assert.is((e as ConfigError).line, 17);
    assert.is((e as ConfigError).column, 17);
  }
  const c = parseConfig(variant({ 17: "    region: ${R:-eu-west-1}" }), "bake.yml", dir, {});
  assert.is(c.amis[0].region, "eu-west-1");
});

test("several problems are all reported", () => {
  const dir = tempTree(FILES);
  try {
    parseConfig(variant({ 6: "    parent: bsae", 19: "    instance_type: large" }), "bake.yml", dir, {});
    assert.unreachable();
  } catch (e) {
    assert.instance(e, ConfigErrors);
    assert.equal(
      (e as ConfigErrors).errors.map((x) => x.line),
      [6, 19],
    );
  }
});

test("Docker port forms", () => {
  assert.equal(parsePort("8080"), { hostIp: "127.0.0.1", containerPort: 8080, protocol: "tcp" });
  assert.equal(parsePort("9000:80"), { hostIp: "127.0.0.1", hostPort: 9000, containerPort: 80, protocol: "tcp" });
  assert.equal(parsePort("0.0.0.0:9000:80/udp"), {
    hostIp: "0.0.0.0",
    hostPort: 9000,
    containerPort: 80,
    protocol: "udp",
  });
  assert.equal(parsePort("[::1]:9000:80"), { hostIp: "::1", hostPort: 9000, containerPort: 80, protocol: "tcp" });
  assert.equal(parsePort("127.0.0.1::80"), {
    hostIp: "127.0.0.1",
    hostPort: undefined,
    containerPort: 80,
    protocol: "tcp",
  });
  assert.type(parsePort("0:80"), "string");
  assert.type(parsePort("a:b:c:d"), "string");
});

test("a folder outside the project is allowed from outside bake.yml only (BAKE_ALLOW_PATHS or --allow-path)", async () => {
  const outside = tempTree({ "rootfs.tar": "x" });
  const dir = tempTree({ ...FILES, "bake.yml": variant({ 4: `    rootfs: { tar: ${outside}/rootfs.tar }` }) });
  assert.throws(
    () => parseConfig(variant({ 4: `    rootfs: { tar: ${outside}/rootfs.tar }` }), "bake.yml", dir, {}),
    /outside the project/,
  );
  assert.is(
    parseConfig(variant({ 4: `    rootfs: { tar: ${outside}/rootfs.tar }` }), "bake.yml", dir, {
      BAKE_ALLOW_PATHS: outside,
    }).images[0].rootfs?.tar,
    `${outside}/rootfs.tar`,
  );
  const refused = await bake(["plan", "--target", "local"], {
    cwd: dir,
    env: { DOCKER_HOST: "unix:///nonexistent.sock", BAKE_ALLOW_PATHS: "" },
  });
  assert.is(refused.code, 2, refused.stderr);
  const flagged = await bake(["plan", "--target", "local", "--allow-path", outside], {
    cwd: dir,
    env: { DOCKER_HOST: "unix:///nonexistent.sock", BAKE_ALLOW_PATHS: "" },
  });
  assert.is(flagged.code, 0, flagged.stderr);
});

test("the reference bake.yml is valid", async () => {
  const config = await loadConfig(path.join(ROOT, "bake.yml"), {});
  assert.equal(
    config.images.map((i) => `${i.name}:${i.layer}`),
    ["base:base", "host:service", "runtime:service", "diagnostics:release", "replays:release"],
  );
  assert.equal(
    config.amis.map((a) => [a.name, a.local?.image, a.runtimeEnv]),
    [["app-host", "host", "/etc/bake/runtime.env"]],
  );
  assert.is(config.registry, undefined);
  assert.is(config.images[3].args.RELEASE, "dev");
});

test("the generated validator is current (make setup writes it after tsc)", async () => {
  const { validatorSource } = await import("../../src/config/write-validator.js");
  const file = path.join(ROOT, "dist/src/config/bake-validator.js");
  assert.is(readFileSync(file, "utf8"), validatorSource(), "run make setup");
});

test("schema/bake.schema.json is generated from the validator's source", () => {
  assert.is(readFileSync(path.join(ROOT, "schema/bake.schema.json"), "utf8"), schemaText(), "run make schema");
});

test.run();
