/** Bake keys: stable for the same inputs; a changed input changes its node and those above it only. */
import { test } from "uvu";
import * as assert from "uvu/assert";
import { chmodSync, writeFileSync, appendFileSync, utimesSync } from "node:fs";
import path from "node:path";
import { parseConfig } from "../../src/config/load.js";
import { buildGraph } from "../../src/graph/graph.js";
import { readInputDigests } from "../../src/graph/inputs.js";
import { computeKeys, type Target } from "../../src/graph/keys.js";
import { stagesOn } from "../../src/graph/stages.js";
import { changedInputs } from "../../src/plan/plan.js";
import { listContext } from "../../src/graph/context-files.js";
import { tempTree, writeTree } from "../helpers/bake.js";
import { GLOB_IGNORE, GLOB_TREE } from "../fixtures/dockerignore-tree.js";

const PIPELINE = `
project: keys
images:
  base:
    rootfs: { tar: rootfs.tar }
  svc:
    parent: base
    dockerfile: svc/Dockerfile
    args: { A: "1" }
  rel:
    parent: svc
    context: rel
    dockerfile: rel/Dockerfile
    run: { ports: ["8080"] }
  other:
    parent: base
    dockerfile: other/Dockerfile
  hostimg:
    parent: base
    dockerfile: hostimg/Dockerfile
amis:
  host:
    builder: ebs
    region: us-east-1
    source: { owners: ["136693071363"], name: "debian-12-*" }
    instance_type: t3.small
    playbook: ansible/host.yml
    preload: [base]
    services: [rel]
    local: { image: hostimg }
`;

const FILES: Record<string, string> = {
  "bake.yml": PIPELINE,
  "rootfs.tar": "rootfs bytes",
  "svc/Dockerfile": "ARG BAKE_PARENT\nFROM ${BAKE_PARENT}\nCOPY . /svc\n",
  "svc/app.py": "print('svc')\n",
  "rel/Dockerfile": "ARG BAKE_PARENT\nFROM ${BAKE_PARENT}\nCOPY . /rel\n",
  "rel/.dockerignore": "*.log\nbuild/**\n!build/keep.txt\n",
  "rel/main.py": "print('rel')\n",
  "rel/debug.log": "noise\n",
  "rel/build/out.o": "obj\n",
  "rel/build/keep.txt": "kept\n",
  "rel/pkg/mod.py": "x = 1\n",
  "other/Dockerfile": "ARG BAKE_PARENT\nFROM ${BAKE_PARENT}\n",
  "hostimg/Dockerfile": "ARG BAKE_PARENT\nFROM ${BAKE_PARENT}\nRUN apt-get install -y systemd-sysv\n",
  "ansible/host.yml": "- hosts: all\n  roles: [web]\n",
  "ansible/.bakeignore": "*.md\n",
  "ansible/roles/web/tasks/main.yml": "- ansible.builtin.debug: { msg: hi }\n",
  "ansible/roles/unused/tasks/main.yml": "- ansible.builtin.debug: { msg: unused }\n",
};

async function keysOf(
  dir: string,
  target: Target = "local",
  env: Record<string, string> = {},
): Promise<Record<string, string>> {
  const { readFileSync } = await import("node:fs");
  const config = parseConfig(readFileSync(path.join(dir, "bake.yml"), "utf8"), "bake.yml", dir, env);
  const graph = buildGraph(config, target);
  const keys = computeKeys(graph, await readInputDigests(config), target, {
    sourceAmi: new Map([["host", "ami-0123"]]),
    unresolved: new Map(),
  });
  return Object.fromEntries([...keys].map(([n, k]) => [n, k.key ?? "unknown"]));
}

function changedNodes(a: Record<string, string>, b: Record<string, string>): string[] {
  return Object.keys(a)
    .filter((n) => a[n] !== b[n])
    .sort();
}

test("the same tree gives the same keys, in another folder and another file order", async () => {
  const one = tempTree(FILES);
  const reversed = Object.fromEntries(Object.entries(FILES).reverse());
  const two = tempTree(reversed);
  const a = await keysOf(one);
  assert.equal(a, await keysOf(two));
  assert.equal(a, await keysOf(one));
  for (const k of Object.values(a)) assert.match(k, /^[0-9a-f]{64}$/);
});

const EDITS: [string, (dir: string) => void, string[]][] = [
  ["a file of the rel context", (d) => appendFileSync(path.join(d, "rel/main.py"), "#\n"), ["host", "rel"]],
  ["a new file in the rel context", (d) => writeFileSync(path.join(d, "rel/pkg/new.py"), ""), ["host", "rel"]],
  [
    "the exception under an ignored folder",
    (d) => appendFileSync(path.join(d, "rel/build/keep.txt"), "!"),
    ["host", "rel"],
  ],
  ["rel's .dockerignore", (d) => appendFileSync(path.join(d, "rel/.dockerignore"), "pkg\n"), ["host", "rel"]],
  ["svc's Dockerfile", (d) => appendFileSync(path.join(d, "svc/Dockerfile"), "RUN true\n"), ["host", "rel", "svc"]],
  ["a file of svc's context", (d) => appendFileSync(path.join(d, "svc/app.py"), "#\n"), ["host", "rel", "svc"]],
  [
    "svc's args",
    (d) => writeFileSync(path.join(d, "bake.yml"), PIPELINE.replace('A: "1"', 'A: "2"')),
    ["host", "rel", "svc"],
  ],
  [
    "the rootfs tarball",
    (d) => appendFileSync(path.join(d, "rootfs.tar"), "more"),
    ["base", "host", "hostimg", "other", "rel", "svc"],
  ],
  // The local AMI's host starts from local.image: its key is part of the local AMI's.
  [
    "the local host image's Dockerfile",
    (d) => appendFileSync(path.join(d, "hostimg/Dockerfile"), "RUN true\n"),
    ["host", "hostimg"],
  ],
  ["other's Dockerfile", (d) => appendFileSync(path.join(d, "other/Dockerfile"), "RUN true\n"), ["other"]],
  ["the playbook", (d) => appendFileSync(path.join(d, "ansible/host.yml"), "# note\n"), ["host"]],
  [
    "a file of a role the playbook uses",
    (d) => writeTree(d, { "ansible/roles/web/defaults/main.yml": "a: 1\n" }),
    ["host"],
  ],
  // Ansible can reach any of them (include_role with a templated name, group_vars, files/).
  [
    "a role of the playbook's folder it does not name",
    (d) => appendFileSync(path.join(d, "ansible/roles/unused/tasks/main.yml"), "# x\n"),
    ["host"],
  ],
  ["group_vars beside the playbook", (d) => writeTree(d, { "ansible/group_vars/all.yml": "port: 80\n" }), ["host"]],
  ["the executable bit of a context file", (d) => chmodSync(path.join(d, "rel/main.py"), 0o755), ["host", "rel"]],
  [
    "the AMI's instance type",
    (d) => writeFileSync(path.join(d, "bake.yml"), PIPELINE.replace("t3.small", "t3.large")),
    ["host"],
  ],
];

for (const [what, edit, expected] of EDITS) {
  test(`changing ${what} changes the keys of ${expected.join(", ")} and nothing else`, async () => {
    const dir = tempTree(FILES);
    const before = await keysOf(dir);
    edit(dir);
    assert.equal(changedNodes(before, await keysOf(dir)), expected);
  });
}

const NO_OPS: [string, (dir: string) => void][] = [
  ["an ignored file", (d) => appendFileSync(path.join(d, "rel/debug.log"), "more noise\n")],
  ["a new file in an ignored folder", (d) => writeFileSync(path.join(d, "rel/build/new.o"), "obj")],
  ["a file of the playbook's folder that its .bakeignore names", (d) => writeTree(d, { "ansible/notes.md": "n" })],
  ["group-write permission (umask)", (d) => chmodSync(path.join(d, "rel/main.py"), 0o664)],
  ["a file's modification time", (d) => utimesSync(path.join(d, "rel/main.py"), new Date(0), new Date(0))],
  ["a file beside bake.yml outside any context", (d) => writeFileSync(path.join(d, "NOTES.md"), "notes")],
  [
    "retention (not an output)",
    (d) =>
      writeFileSync(
        path.join(d, "bake.yml"),
        PIPELINE.replace("services: [rel]", "services: [rel]\n    retention: { keep: 9 }"),
      ),
  ],
];

for (const [what, edit] of NO_OPS) {
  test(`changing ${what} changes no key`, async () => {
    const dir = tempTree(FILES);
    const before = await keysOf(dir);
    edit(dir);
    assert.equal(changedNodes(before, await keysOf(dir)), []);
  });
}

test("the local host image is a dependency of the AMI on the local target only, and in its key there only", async () => {
  const dir = tempTree(FILES);
  const { readFileSync } = await import("node:fs");
  const config = parseConfig(readFileSync(path.join(dir, "bake.yml"), "utf8"), "bake.yml", dir, {});
  assert.ok(buildGraph(config, "local").byName.get("host")!.deps.includes("hostimg"));
  assert.not.ok(buildGraph(config, "aws").byName.get("host")!.deps.includes("hostimg"));
  const before = await keysOf(dir, "aws");
  appendFileSync(path.join(dir, "hostimg/Dockerfile"), "RUN true\n");
  const after = await keysOf(dir, "aws");
  assert.equal(changedNodes(before, after), ["hostimg"]);
});

test("the AMI key depends on the target and, on aws, on the source AMI", async () => {
  const dir = tempTree(FILES);
  const local = await keysOf(dir, "local");
  const aws = await keysOf(dir, "aws");
  assert.is.not(local.host, aws.host);
  assert.is(local.rel, aws.rel);
  const { readFileSync } = await import("node:fs");
  const config = parseConfig(readFileSync(path.join(dir, "bake.yml"), "utf8"), "bake.yml", dir, {});
  const graph = buildGraph(config);
  const inputs = await readInputDigests(config);
  const withSource = (id: string) =>
    computeKeys(graph, inputs, "aws", { sourceAmi: new Map([["host", id]]), unresolved: new Map() }).get("host")!.key;
  assert.is.not(withSource("ami-0123"), withSource("ami-0456"));
  const unknown = computeKeys(graph, inputs, "aws", {
    sourceAmi: new Map(),
    unresolved: new Map([["host", "no AWS credentials"]]),
  }).get("host")!;
  assert.is(unknown.key, undefined);
  assert.is((unknown as any).unknownBecause, "no AWS credentials");
});

test("a service's runtime contract is in the AMI's key (what its host starts it from), not in its image's, nor in the host stage's", async () => {
  const dir = tempTree(FILES);
  const { readFileSync } = await import("node:fs");
  const stagesOf = async () => {
    const config = parseConfig(readFileSync(path.join(dir, "bake.yml"), "utf8"), "bake.yml", dir, {});
    const keys = computeKeys(buildGraph(config, "local"), await readInputDigests(config), "local", {
      sourceAmi: new Map(),
      unresolved: new Map(),
    });
    return { rel: keys.get("rel")!.key, stages: stagesOn(config.amis[0], "local", keys.get("host"))! };
  };
  const before = await stagesOf();
  writeFileSync(path.join(dir, "bake.yml"), PIPELINE.replace('run: { ports: ["8080"] }', 'run: { ports: ["8081"] }'));
  const after = await stagesOf();
  assert.is(after.rel, before.rel, "the image is the same");
  assert.is.not(after.stages[1].key, before.stages[1].key, "the AMI bakes again");
  assert.is(after.stages[0].key, before.stages[0].key, "on the same host stage");
  assert.equal(changedInputs(before.stages[1].inputs, after.stages[1].inputs), ["contracts"]);
});

test("release_images: a preloaded image ships in the release stage, out of the host stage's key; the split is in the AMI's key", async () => {
  const dir = tempTree({ ...FILES, "bake.yml": PIPELINE.replace("    preload: [base]", "    preload: [base, other]") });
  const { readFileSync } = await import("node:fs");
  const stagesOf = async () => {
    const config = parseConfig(readFileSync(path.join(dir, "bake.yml"), "utf8"), "bake.yml", dir, {});
    const own = await readInputDigests(config);
    const keysWith = (otherInputs: Record<string, string>) =>
      computeKeys(
        buildGraph(config, "local"),
        new Map([...own, ["other", { ...own.get("other")!, ...otherInputs }]]),
        "local",
        {
          sourceAmi: new Map(),
          unresolved: new Map(),
        },
      );
    const now = keysWith({});
    const moved = keysWith({ dockerfile: "changed" });
    return {
      now: stagesOn(config.amis[0], "local", now.get("host"))!,
      moved: stagesOn(config.amis[0], "local", moved.get("host"))!,
    };
  };
  const byDefault = await stagesOf();
  assert.equal(byDefault.now[0].images, ["base", "other"]);
  assert.equal(byDefault.now[1].images, ["rel"]);
  assert.is.not(byDefault.moved[0].key, byDefault.now[0].key, "a host image that changes moves the host stage");
  writeFileSync(
    path.join(dir, "bake.yml"),
    PIPELINE.replace("    preload: [base]", "    preload: [base, other]\n    release_images: [other]"),
  );
  const split = await stagesOf();
  assert.equal(split.now[0].images, ["base"]);
  assert.equal([split.now[1].images, split.now[1].services], [["rel", "other"], ["rel"]]);
  assert.is(split.moved[0].key, split.now[0].key, "a release image that changes leaves the host stage");
  assert.is.not(split.moved[1].key, split.now[1].key, "and bakes the release stage again");
  assert.is.not(split.now[1].key, byDefault.now[1].key, "the split is in the AMI's key");
  assert.is.not(split.now[0].key, byDefault.now[0].key);
});

test("a bake.lock release pin changes the debootstrap base's key and everything above it", async () => {
  const dir = tempTree({
    "bake.yml":
      "project: lock\nimages:\n  base: { rootfs: { debootstrap: { suite: bookworm } } }\n  app: { parent: base, dockerfile: app/Dockerfile }\n  other: { rootfs: { tar: r.tar } }\n",
    "app/Dockerfile": "FROM x\n",
    "r.tar": "t",
  });
  const unpinned = await keysOf(dir);
  writeFileSync(
    path.join(dir, "bake.lock"),
    JSON.stringify({ debootstrap: { base: { release: "sha256:1", url: "http://127.0.0.1/x" } } }),
  );
  const pinned = await keysOf(dir);
  writeFileSync(
    path.join(dir, "bake.lock"),
    JSON.stringify({ debootstrap: { base: { release: "sha256:2", url: "http://127.0.0.1/x" } } }),
  );
  const repinned = await keysOf(dir);
  assert.equal(changedNodes(unpinned, pinned), ["app", "base"]);
  assert.equal(changedNodes(pinned, repinned), ["app", "base"]);
});

test("the context listing follows .dockerignore: **, nested paths, ! exceptions, case-sensitive", async () => {
  const dir = tempTree({ ...GLOB_TREE, ".dockerignore": `${GLOB_IGNORE}Dockerfile\n`, Dockerfile: "FROM x\n" });
  const listing = await listContext(dir, { dockerfile: path.join(dir, "Dockerfile") });
  assert.equal(
    listing.entries.map((e) => e.path),
    [
      ".dockerignore",
      "NOTES.MD",
      "README.md",
      "link",
      "nested",
      "nested/deep",
      "nested/deep/other.txt",
      "nested/docs",
      "nested/docs/x.md",
      "src",
      "src/c.TMP",
      "src/gen",
      "src/gen/keep.ts",
      "src/index.ts",
    ],
  );
  assert.equal(listing.alwaysSent, [".dockerignore", "Dockerfile"]);
});

test("a debootstrap base's key does not depend on the credentials its mirror URL carries", async () => {
  const yml = (mirror: string) =>
    `project: k\nimages:\n  base: { rootfs: { debootstrap: { suite: bookworm, mirror: "${mirror}" } } }\n`;
  const keyWith = async (mirror: string) => {
    const config = parseConfig(yml(mirror), "bake.yml", tempTree({}), {});
    return computeKeys(buildGraph(config), await readInputDigests(config), "local", {
      sourceAmi: new Map(),
      unresolved: new Map(),
    }).get("base")!.key;
  };
  assert.is(await keyWith("https://a:one@m.example/debian"), await keyWith("https://b:two@m.example/debian"));
  assert.is.not(await keyWith("https://m.example/debian"), await keyWith("https://other.example/debian"));
});

test("bake's own .env stays out of a context that holds it, unless .dockerignore asks for it by name", async () => {
  const dir = tempTree({ ".env": "TOKEN=secret\n", "app.py": "x", "sub/.env": "not bake's\n" });
  const paths = async () => (await listContext(dir, { withhold: [path.join(dir, ".env")] })).entries.map((e) => e.path);
  assert.equal(await paths(), ["app.py", "sub", "sub/.env"]);
  writeFileSync(path.join(dir, ".dockerignore"), "*.md\n!.env\n");
  assert.equal(await paths(), [".dockerignore", ".env", "app.py", "sub", "sub/.env"]);
  // A context below the project does not hold it: nothing to withhold.
  assert.equal(
    (await listContext(path.join(dir, "sub"), { withhold: [path.join(dir, ".env")] })).entries.map((e) => e.path),
    [".env"],
  );
});

test("large files' digests are reused while size, times and inode stand, and recomputed when they change", async () => {
  const { DigestCache } = await import("../../src/graph/digest-cache.js");
  const { readFileSync: read, writeFileSync: write, utimesSync: utimes } = await import("node:fs");
  const dir = tempTree({});
  const big = path.join(dir, "big.bin");
  write(big, Buffer.alloc(2 << 20, 1));
  const past = new Date(Date.now() - 3600_000);
  utimes(big, past, past);
  const cacheFile = path.join(dir, "digests.json");
  const first = new DigestCache(cacheFile);
  const real = (await listContext(dir, { cache: first })).entries.find((e) => e.path === "big.bin")!.digest!;
  first.save();
  // Prove the second run does not read the file: plant a different digest in the cache.
  write(cacheFile, read(cacheFile, "utf8").replace(real, "planted"));
  assert.is(
    (await listContext(dir, { cache: new DigestCache(cacheFile) })).entries.find((e) => e.path === "big.bin")!.digest,
    "planted",
  );
  appendFileSync(big, "x");
  utimes(big, past, past);
  const changed = (await listContext(dir, { cache: new DigestCache(cacheFile) })).entries.find(
    (e) => e.path === "big.bin",
  )!.digest!;
  assert.is.not(changed, "planted");
  assert.is.not(changed, real);
  // A file written moments ago is never taken from the cache.
  const fresh = new DigestCache(cacheFile);
  write(big, Buffer.alloc(2 << 20, 2));
  const racy = (await listContext(dir, { cache: fresh })).entries.find((e) => e.path === "big.bin")!.digest!;
  fresh.save();
  assert.is(
    (await listContext(dir, { cache: new DigestCache(cacheFile) })).entries.find((e) => e.path === "big.bin")!.digest,
    racy,
  );
});

test("hashing streams large files (a 64 MiB file costs far less than 64 MiB of memory)", async () => {
  const dir = tempTree({ Dockerfile: "FROM x\n" });
  const { openSync, writeSync, closeSync } = await import("node:fs");
  const fd = openSync(path.join(dir, "big.bin"), "w");
  const chunk = Buffer.alloc(1 << 20, 7);
  for (let i = 0; i < 64; i++) writeSync(fd, chunk);
  closeSync(fd);
  const before = process.memoryUsage().rss;
  const listing = await listContext(dir);
  const grown = process.memoryUsage().rss - before;
  assert.is(listing.entries.find((e) => e.path === "big.bin")?.size, 64 << 20);
  assert.ok(grown < 48 << 20, `rss grew by ${grown >> 20} MiB`);
});

test("large files hashed on worker threads, now or deferred, give the digests sha256 gives", async () => {
  const { createHash } = await import("node:crypto");
  const { rmSync } = await import("node:fs");
  const { completeDigests } = await import("../../src/graph/context-files.js");
  const dir = tempTree({ Dockerfile: "FROM x\n", "small.txt": "small\n" });
  // Over 32 MiB in all, so that the workers (not the main thread) hash them.
  const blobs = {
    "a.bin": Buffer.alloc(12 << 20, 1),
    "b.bin": Buffer.alloc(12 << 20, 2),
    "c.bin": Buffer.alloc(10 << 20, 3),
  };
  for (const [name, data] of Object.entries(blobs)) writeFileSync(path.join(dir, name), data);
  const want = Object.fromEntries(
    Object.entries(blobs).map(([n, d]) => [n, createHash("sha256").update(d).digest("hex")]),
  );
  const digests = (entries: { path: string; digest?: string }[]) =>
    Object.fromEntries(entries.filter((e) => e.path.endsWith(".bin")).map((e) => [e.path, e.digest]));

  assert.equal(digests((await listContext(dir)).entries), want);
  const deferred = await listContext(dir, { deferLarge: true });
  assert.equal(digests(deferred.entries), { "a.bin": undefined, "b.bin": undefined, "c.bin": undefined });
  assert.ok(deferred.entries.find((e) => e.path === "small.txt")!.digest, "small files are hashed at once");
  await completeDigests(deferred);
  assert.equal(digests(deferred.entries), want);

  const gone = await listContext(dir, { deferLarge: true });
  rmSync(path.join(dir, "b.bin"));
  try {
    await completeDigests(gone);
    assert.unreachable("a file removed after listing must fail the digest");
  } catch (e) {
    assert.match((e as Error).message, /cannot read .*b\.bin/);
  }
});

test("work is shared out by size, largest first onto the lightest thread", async () => {
  const { shareOut } = await import("../../src/graph/hash-workers.js");
  const files = [
    { path: "a", size: 10 },
    { path: "b", size: 60 },
    { path: "c", size: 30 },
    { path: "d", size: 25 },
  ];
  assert.equal(shareOut(files, 2), [["b"], ["c", "d", "a"]]);
  assert.equal(shareOut(files, 1), [["b", "c", "d", "a"]]);
  assert.equal(shareOut([{ path: "x", size: 1 }], 4), [["x"]]);
});

test.run();
