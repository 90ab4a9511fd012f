/**
 * What bake puts in an image equals what `docker build` puts there. Generated trees are built
 * through bake (BuildKit with a session, and the classic fallback behind a proxy that refuses
 * sessions) and through the docker CLI's classic builder, and compared inside the images by
 * path, type, size, link target, sha256, owner and mode (bake's documented rule: 0644, or 0755
 * when any executable bit is set). Round after round on one engine whose caches are never
 * cleaned: edits of the same size, renames, deletions, a file that becomes a folder or a link
 * and back, a second checkout of the same project with other content, new ignore rules.
 */
import { test } from "uvu";
import * as assert from "uvu/assert";
import { execa } from "execa";
import { createHash, randomBytes } from "node:crypto";
import {
  chmodSync,
  cpSync,
  linkSync,
  mkdirSync,
  readFileSync,
  readdirSync,
  renameSync,
  rmSync,
  symlinkSync,
  writeFileSync,
} from "node:fs";
import path from "node:path";
import { extract } from "tar-stream";
import { bake, removeTree, tempTree, writeTree } from "../helpers/bake.js";
import { busyboxRootfs, docker, removeProject, sessionRefusingProxy, uniqueProject } from "../helpers/engine.js";
import { tlsEngine } from "../helpers/tls-engine.js";

interface FsRecord {
  type: string;
  size: number;
  linkname?: string;
  sha256?: string;
  mode: number;
  owner: string;
}

/** The files under /src of an image, read from an exported container (nothing runs in it). */
async function filesOf(image: string): Promise<Map<string, FsRecord>> {
  const container = await docker.createContainer({ Image: image, Cmd: ["true"] });
  const files = new Map<string, FsRecord>();
  try {
    const tar = extract();
    tar.on("entry", (header, stream, next) => {
      const name = header.name.replace(/^\.?\//, "").replace(/\/$/, "");
      if (!name.startsWith("src/")) {
        stream.resume();
        stream.on("end", next);
        return;
      }
      const rel = name.slice("src/".length);
      const h = createHash("sha256");
      stream.on("data", (d) => void h.update(d as Buffer));
      stream.on("end", () => {
        const owner = `${header.uid}:${header.gid}`;
        const mode = (header.mode ?? 0) & 0o7777;
        // A hard link in the export is the same file under a second name: compare its content.
        if (header.type === "link")
          files.set(rel, { ...files.get(header.linkname!.replace(/^\.?\//, "").slice("src/".length))!, mode, owner });
        else if (header.type === "file")
          files.set(rel, { type: "file", size: header.size ?? 0, sha256: h.digest("hex"), mode, owner });
        else if (header.type === "symlink")
          files.set(rel, { type: "symlink", size: 0, linkname: header.linkname, mode: 0, owner });
        else files.set(rel, { type: header.type ?? "?", size: 0, mode, owner });
        next();
      });
    });
    const exported = await docker.getContainer(container.id).export();
    await new Promise<void>((resolve, reject) => {
      tar.on("finish", resolve).on("error", reject);
      exported.on("error", reject);
      exported.pipe(tar);
    });
  } finally {
    await docker.getContainer(container.id).remove({ force: true });
  }
  return files;
}

/** The mode bake gives what docker copies as it is (README: "How a bake image differs"). */
const bakeMode = (r: FsRecord) =>
  r.type === "symlink" ? 0 : r.type === "directory" ? 0o755 : r.mode & 0o111 ? 0o755 : 0o644;

/** Every difference between docker's image and bake's, one line each. */
function differences(fromDocker: Map<string, FsRecord>, fromBake: Map<string, FsRecord>): string[] {
  const out: string[] = [];
  for (const [p, d] of fromDocker) {
    const b = fromBake.get(p);
    if (!b) out.push(`${p}: in docker's image only`);
    else {
      const want = { ...d, mode: bakeMode(d) };
      for (const k of ["type", "size", "linkname", "sha256", "owner", "mode"] as const) {
        if (want[k] !== b[k])
          out.push(
            `${p}: ${k} ${k === "mode" ? want[k].toString(8) : want[k]} in docker's image, ${k === "mode" ? (b[k] as number).toString(8) : b[k]} in bake's`,
          );
      }
    }
  }
  for (const p of fromBake.keys()) if (!fromDocker.has(p)) out.push(`${p}: in bake's image only`);
  return out;
}

const ctx = (dir: string) => path.join(dir, "app");
const put = (dir: string, rel: string, content: string | Buffer, mode?: number) => {
  const file = path.join(ctx(dir), rel);
  mkdirSync(path.dirname(file), { recursive: true });
  writeFileSync(file, content);
  if (mode !== undefined) chmodSync(file, mode);
};
const link = (dir: string, rel: string, target: string) => {
  mkdirSync(path.dirname(path.join(ctx(dir), rel)), { recursive: true });
  symlinkSync(target, path.join(ctx(dir), rel));
};
const drop = (dir: string, rel: string) => rmSync(path.join(ctx(dir), rel), { recursive: true, force: true });
/** Replaces what stands at `rel` by the files given (writeTree's form: `->target` makes a link). */
const replace = (dir: string, rel: string, files: Record<string, string>) => {
  drop(dir, rel);
  writeTree(ctx(dir), files);
};
/** New content of exactly the old size: what a size-and-time check cannot tell apart. */
const sameSize = (dir: string, rel: string) =>
  put(dir, rel, randomBytes(readFileSync(path.join(ctx(dir), rel)).length));

const IGNORE_FIRST =
  "# case-sensitive, as the docker CLI matches on Linux\n**/*.md\n!KEEP.md\ncache\n!cache/keep.txt\n**/tmp\n*.log\n";
const IGNORE_LATER = "*\n!pkg\npkg/**/*.txt\n!pkg/a/**\n!*.MD\n!big\n!links\n!morph\n";

/** The first tree: small and large files, links of every kind, odd names, ignore rules with case variants. */
function firstTree(dir: string): void {
  put(dir, "Dockerfile", "ARG BAKE_PARENT\nFROM ${BAKE_PARENT}\nCOPY . /src\n");
  put(dir, ".dockerignore", IGNORE_FIRST);
  for (let i = 0; i < 120; i++)
    put(dir, `pkg/${"abcde"[i % 5]}/f${i}.txt`, randomBytes(Math.floor(Math.random() * 4000)).toString("base64"));
  put(dir, "big/one.bin", randomBytes(1.5 * 1024 * 1024));
  put(dir, "big/three.bin", randomBytes(3_000_000));
  put(dir, "big/five.bin", randomBytes(5 * 1024 * 1024));
  put(dir, "bin/run.sh", "#!/bin/sh\necho run\n", 0o755);
  put(dir, "bin/owner-only.sh", "#!/bin/sh\n", 0o744);
  put(dir, "secret/key.pem", "-----BEGIN KEY-----\n", 0o600);
  put(dir, "group.txt", "g\n", 0o664);
  put(dir, "empty.txt", "");
  mkdirSync(path.join(ctx(dir), "emptydir"), { recursive: true });
  put(dir, "with space/a file.txt", "spaces\n");
  put(dir, "ünïcödé/naïve.txt", "unicode\n");
  put(dir, `${"long-".repeat(40)}/${"x".repeat(15)}.txt`, "220 characters of path\n");
  link(dir, "links/dangling", "../nowhere");
  link(dir, "links/todir", "../pkg/a");
  link(dir, "links/up", "../../outside");
  link(dir, "links/file", "../empty.txt");
  put(dir, "hard/a", "hard link\n");
  linkSync(path.join(ctx(dir), "hard/a"), path.join(ctx(dir), "hard/b"));
  put(dir, "README.MD", "upper-case extension: sent\n");
  put(dir, "docs/a.md", "ignored\n");
  put(dir, "docs/B.Md", "mixed case: sent\n");
  put(dir, "KEEP.md", "brought back\n");
  put(dir, "cache/junk.bin", "ignored\n");
  put(dir, "cache/keep.txt", "brought back\n");
  put(dir, "deep/er/tmp/x", "ignored by **/tmp\n");
  put(dir, "x.log", "ignored\n");
  put(dir, "X.LOG", "sent\n");
  put(dir, "morph/file", "a file for now\n");
  mkdirSync(path.join(ctx(dir), "morph/dir/inner"), { recursive: true });
  put(dir, "morph/dir/inner/a.txt", "a folder for now\n");
  link(dir, "morph/link", "../group.txt");
}

const ROUNDS: { name: string; change: (dir: string) => void }[] = [
  { name: "a first build", change: () => undefined },
  {
    name: "same-size edits of small and large files",
    change: (dir) => {
      for (const rel of [
        "pkg/a/f0.txt",
        "pkg/b/f1.txt",
        "group.txt",
        "secret/key.pem",
        "big/one.bin",
        "big/three.bin",
        "big/five.bin",
      ])
        sameSize(dir, rel);
    },
  },
  {
    name: "renames and deletions",
    change: (dir) => {
      renameSync(path.join(ctx(dir), "pkg/c"), path.join(ctx(dir), "pkg/c2"));
      renameSync(path.join(ctx(dir), "big/one.bin"), path.join(ctx(dir), "big/renamed.bin"));
      renameSync(path.join(ctx(dir), "pkg/d/f3.txt"), path.join(ctx(dir), "pkg/d/f3-renamed.txt"));
      for (const rel of ["pkg/e", "big/five.bin", "pkg/a/f5.txt", "links/up"]) drop(dir, rel);
    },
  },
  {
    name: "a file becomes a folder, a folder a link, a link a file",
    change: (dir) => {
      replace(dir, "morph/file", { "morph/file/now-inside.txt": "a folder now\n" });
      replace(dir, "morph/dir", { "morph/dir": "->../pkg" });
      replace(dir, "morph/link", { "morph/link": "a file now\n" });
    },
  },
  {
    name: "and back, with a large file of the same size as before",
    change: (dir) => {
      replace(dir, "morph/file", { "morph/file": "a file again\n" });
      replace(dir, "morph/dir", { "morph/dir/inner/a.txt": "a folder again\n" });
      replace(dir, "morph/link", { "morph/link": "->../X.LOG" });
      sameSize(dir, "big/three.bin");
    },
  },
  {
    name: "new ignore rules: exclude everything, bring back, case variants",
    change: (dir) => {
      put(dir, ".dockerignore", IGNORE_LATER);
      put(dir, "pkg/a/NOTES.MD", "kept by !*.MD? only at the top\n");
      put(dir, "OTHER.MD", "brought back by !*.MD\n");
      put(dir, "other.md", "not brought back\n");
    },
  },
];

const project = uniqueProject("diff-it");
let base = "";

async function dockerBuild(dir: string): Promise<string> {
  const tag = `bake-test/diff:${process.pid}`;
  await execa("docker", ["build", "-q", "-t", tag, "--build-arg", `BAKE_PARENT=${base}`, ctx(dir)], {
    env: { DOCKER_BUILDKIT: "0" },
  });
  return (await docker.getImage(tag).inspect()).Id;
}

async function bakeBuild(dir: string, env: Record<string, string> = {}): Promise<string> {
  const r = await bake(["build", "app", "--json"], { cwd: dir, env });
  assert.is(r.code, 0, r.stderr);
  const app = JSON.parse(r.stdout).images.app;
  assert.is(app.action, "built", `the round built a new image: ${r.stdout}`);
  return app.id;
}

function pipeline(dir: string, name: string, rootfs: string): void {
  writeFileSync(
    path.join(dir, "bake.yml"),
    `project: ${name}\nimages:\n  base: { rootfs: { tar: ${rootfs} } }\n  app: { parent: base, dockerfile: app/Dockerfile }\n`,
  );
}

test("bake's images hold what docker build's hold, round after round, through BuildKit (socket and TCP+TLS) and the classic builder", async () => {
  const rootfs = await busyboxRootfs();
  // Two checkouts of one project (same project and node names: the engine's copy of the node's
  // files is shared by both) and, beside them, the same trees built over TCP+TLS and through a
  // proxy that refuses sessions (the classic builder), each under a project name of its own.
  const first = tempTree({}, "bake-diff-");
  const second = tempTree({}, "bake-diff-");
  const proxy = await sessionRefusingProxy();
  // The same engine as a remote one over TCP with TLS and a client certificate (GitLab's dind).
  const overTls = await tlsEngine();
  const tlsEnv = overTls.env(overTls.certPath("client", { ca: "ca", cert: "client" }));
  try {
    pipeline(first, project, rootfs);
    firstTree(first);
    const setup = await bake(["build", "base", "--json"], { cwd: first });
    assert.is(setup.code, 0, setup.stderr);
    base = JSON.parse(setup.stdout).images.base.id;
    const rounds = [
      ...ROUNDS.map((r) => ({ ...r, dir: first })),
      {
        name: "a second checkout of the same project, other content of the same sizes",
        dir: second,
        change: (dir: string) => {
          cpSync(ctx(first), ctx(dir), { recursive: true, verbatimSymlinks: true });
          pipeline(dir, project, rootfs);
          for (const rel of ["big/three.bin", "big/renamed.bin", "pkg/a/f0.txt", "OTHER.MD"]) sameSize(dir, rel);
        },
      },
    ];
    for (const round of rounds) {
      round.change(round.dir);
      const fromDocker = await filesOf(await dockerBuild(round.dir));
      assert.ok(fromDocker.size > 20, `${round.name}: docker's image holds the tree`);
      for (const [builder, env, name] of [
        ["BuildKit session", {} as Record<string, string>, project],
        ["BuildKit session over TCP+TLS", tlsEnv, `${project}-tls`],
        ["classic builder", { DOCKER_HOST: proxy.host }, `${project}-classic`],
      ] as const) {
        // Each builder under a project name of its own, so that every round builds through each.
        pipeline(round.dir, name, rootfs);
        const id = await bakeBuild(round.dir, env);
        const logs = path.join(round.dir, ".bake/logs");
        const log = readFileSync(path.join(logs, readdirSync(logs).sort().at(-1)!, "app.log"), "utf8");
        assert.match(
          log,
          builder === "classic builder"
            ? /the engine answered \/session with HTTP 403: building with the classic builder|building with the classic builder: the engine answered \/session with HTTP 403/
            : `building through BuildKit with a session (${env.DOCKER_HOST ?? "unix:///var/run/docker.sock"}, ${env.DOCKER_HOST ? "tcp+tls" : "unix"})`,
          `${round.name} (${builder})`,
        );
        const diff = differences(fromDocker, await filesOf(id));
        assert.equal(diff, [], `${round.name} (${builder}):\n${diff.slice(0, 15).join("\n")}`);
        pipeline(round.dir, project, rootfs);
      }
    }
  } finally {
    proxy.close();
    overTls.close();
    await docker
      .getImage(`bake-test/diff:${process.pid}`)
      .remove({ force: true })
      .catch(() => undefined);
    await removeProject(project);
    await removeProject(`${project}-classic`);
    await removeProject(`${project}-tls`);
    removeTree(first);
    removeTree(second);
  }
});

test.run();
