/** The pure parts of BuildKit builds: what bake serves in a session, the pinned FROM, the trace. */
import { test } from "uvu";
import * as assert from "uvu/assert";
import { holdParentTag, releaseParentTag } from "../../src/tools/docker-builds.js";
import { pinParent } from "../../src/tools/buildkit.js";
import { comparePaths, contentTime, fsStat, servedEntries, type ServedEntry } from "../../src/tools/buildkit-files.js";
import { BuildKitProgress, decodeTrace } from "../../src/tools/buildkit-progress.js";

const file = (path: string, size = 1, digest = "ab".repeat(32)): ServedEntry => ({
  path,
  type: "file",
  executable: false,
  size,
  digest,
});
const dir = (path: string): ServedEntry => ({ path, type: "dir", executable: false, size: 0 });

test("paths compare folder by folder, as fsutil walks: a/x before a.txt", () => {
  assert.equal(["a.txt", "a/x", "a", "b", "a/x/y"].sort(comparePaths), ["a", "a/x", "a/x/y", "a.txt", "b"]);
});

test("served entries: all of them in walk order, or what the patterns name with every folder above", () => {
  const entries = [
    file("a.txt"),
    dir("src"),
    file("src/main.go"),
    dir("src/lib"),
    file("src/lib/x.go"),
    file("README.md"),
    dir("docs"),
    file("docs/a.md"),
  ];
  assert.equal(
    servedEntries(entries, []).map((e) => e.path),
    ["README.md", "a.txt", "docs", "docs/a.md", "src", "src/lib", "src/lib/x.go", "src/main.go"],
  );
  // A followed folder brings what is under it; a file pattern brings its folders (made up when the listing has none).
  assert.equal(
    servedEntries(entries, ["src/lib"]).map((e) => e.path),
    ["src", "src/lib", "src/lib/x.go"],
  );
  assert.equal(
    servedEntries(entries, ["*.txt", "docs/*.md"]).map((e) => e.path),
    ["a.txt", "docs", "docs/a.md"],
  );
  assert.equal(
    servedEntries([file("deep/er/f")], ["deep/er/f"]).map((e) => [e.path, e.type]),
    [
      ["deep", "dir"],
      ["deep/er", "dir"],
      ["deep/er/f", "file"],
    ],
  );
  // The context's own excludes: bake's listing applied them already, except to .dockerignore itself.
  assert.equal(
    servedEntries([file(".dockerignore"), file("a.txt")], [], [".dockerignore", "*.log"]).map((e) => e.path),
    ["a.txt"],
  );
});

test("stats carry Go's file modes and a modification time that changes with the content only", () => {
  assert.is(contentTime(undefined), "946684800000000000");
  assert.is(contentTime("ffffffffffff" + "0".repeat(52)), (946684800000000000n + 0xffffffffffffn).toString());
  assert.is.not(contentTime("a".repeat(64)), contentTime("b".repeat(64)));
  assert.is(
    fsStat({ path: "d", type: "dir", executable: false, size: 0, digest: "ab" }).modTime,
    contentTime(undefined),
  );
  assert.equal(fsStat({ path: "d", type: "dir", executable: false, size: 0 }).mode, 0x800001ed);
  assert.equal(
    fsStat({ path: "l", type: "symlink", executable: false, size: 0, linkname: "a.txt", digest: "000000000001ff" }),
    { path: "l", mode: 0x080001ff, uid: 0, gid: 0, size: 0, modTime: "946684800000000001", linkname: "a.txt" },
  );
  assert.equal(
    [fsStat({ ...file("x", 9), executable: true }).mode, fsStat(file("y", 9)).mode, fsStat(file("y", 9)).size],
    [0o755, 0o644, 9],
  );
  // Same size, other content: another time. Nothing of the checkout (mode bits, times) counts.
  assert.is.not(
    fsStat(file("big", 3_000_000, "1".repeat(64))).modTime,
    fsStat(file("big", 3_000_000, "2".repeat(64))).modTime,
  );
});

test("a file whose digest is not taken yet is never served: the engine would keep another content of its size", () => {
  assert.throws(
    () => fsStat({ path: "big.bin", type: "file", executable: false, size: 3_000_000 }),
    /big\.bin: served before its digest was taken/,
  );
  assert.throws(
    () => fsStat({ path: "l", type: "symlink", executable: false, size: 0, linkname: "x" }),
    /served before/,
  );
});

test("the parent's FROM names the tag made for the build; other FROMs stay; other uses of BAKE_PARENT cannot be pinned", () => {
  const tag = "bake-parent/1:abc";
  assert.is(pinParent("ARG BAKE_PARENT\nFROM ${BAKE_PARENT}\nRUN x\n", tag), `ARG BAKE_PARENT\nFROM ${tag}\nRUN x\n`);
  assert.is(
    pinParent(
      "ARG BAKE_PARENT\nfrom --platform=linux/amd64 $BAKE_PARENT AS build\nFROM build\nCOPY --from=golang:1 /x /y\n",
      tag,
    ),
    `ARG BAKE_PARENT\nfrom --platform=linux/amd64 ${tag} AS build\nFROM build\nCOPY --from=golang:1 /x /y\n`,
  );
  assert.is(
    pinParent("FROM golang:1 AS b\nARG BAKE_PARENT\nFROM ${BAKE_PARENT}\n", tag),
    `FROM golang:1 AS b\nARG BAKE_PARENT\nFROM ${tag}\n`,
  );
  assert.is(pinParent("ARG BAKE_PARENT\nFROM ${BAKE_PARENT:-debian:12}\n", tag), undefined);
  assert.is(pinParent("ARG BAKE_PARENT\nFROM ${BAKE_PARENT}-slim\n", tag), undefined);
});

test("the trace: instructions as they start, their output, the failing step and its error; the image id", () => {
  const p = new BuildKitProgress();
  const started = (digest: string, name: string, extra = {}) => ({
    digest,
    name,
    cached: false,
    started: true,
    completed: false,
    ...extra,
  });
  assert.equal(
    p.accept(
      { id: "moby.buildkit.trace" },
      {
        vertexes: [
          {
            digest: "d1",
            name: "[internal] load build definition from Dockerfile",
            cached: false,
            started: false,
            completed: false,
          },
        ],
        logs: [],
      },
    ),
    [],
  );
  assert.equal(
    p.accept(
      { id: "moby.buildkit.trace" },
      {
        vertexes: [
          started("d1", "[internal] load build definition from Dockerfile"),
          started("d2", "[1/2] FROM x", { cached: true }),
        ],
        logs: [],
      },
    ),
    ["#1 [internal] load build definition from Dockerfile", "#2 [1/2] FROM x (cached)"],
  );
  assert.equal(
    p.accept(
      { id: "moby.buildkit.trace" },
      { vertexes: [started("d3", "[2/2] RUN make")], logs: [{ vertex: "d3", text: "compiling\r\nlinking\n" }] },
    ),
    ["#3 [2/2] RUN make", "compiling", "linking"],
  );
  assert.equal(
    p.accept(
      { id: "moby.buildkit.trace" },
      {
        vertexes: [
          started("d3", "[2/2] RUN make", {
            completed: true,
            error: "executor failed running [/bin/sh -c make]: exit code: 2",
          }),
        ],
        logs: [],
      },
    ),
    [],
  );
  assert.equal(
    p.accept({
      errorDetail: { message: "failed to solve: executor failed running [/bin/sh -c make]: exit code: 2" },
      error: "x",
    }),
    ["ERROR: failed to solve: executor failed running [/bin/sh -c make]: exit code: 2"],
  );
  assert.equal(
    [p.step, p.error, p.tail],
    ["[2/2] RUN make", "executor failed running [/bin/sh -c make]: exit code: 2", ["compiling", "linking"]],
  );
  const ok = new BuildKitProgress();
  ok.accept({ id: "moby.image.id", aux: { ID: "sha256:abc" } });
  assert.is(ok.imageId, "sha256:abc");
});

test("a step cancelled beside the failing one does not take its place; an unreadable trace is no progress", () => {
  const p = new BuildKitProgress();
  const v = (digest: string, name: string, error: string) => ({
    digest,
    name,
    cached: false,
    started: true,
    completed: true,
    error,
  });
  p.accept(
    { id: "moby.buildkit.trace" },
    { vertexes: [v("a", "[stage-1 2/3] RUN sleep 9", "context canceled")], logs: [] },
  );
  p.accept(
    { id: "moby.buildkit.trace" },
    {
      vertexes: [
        v("b", "[build 2/2] RUN make", "executor failed running [/bin/sh -c make]: exit code: 2"),
        v("c", "[stage-1 3/3] RUN x", "context canceled"),
      ],
      logs: [],
    },
  );
  assert.equal([p.step, p.error], ["[build 2/2] RUN make", "executor failed running [/bin/sh -c make]: exit code: 2"]);
  assert.equal(decodeTrace(Buffer.from([0xff, 0xff, 0xff]).toString("base64")), { vertexes: [], logs: [] });
});

test("a parent tag wanted again while its removal is in flight is made after the removal landed (else the next build's FROM names nothing)", async () => {
  const engine: string[] = [];
  let tagged = false;
  let finishRemoval!: () => void;
  const make = async () => {
    engine.push("tag");
    tagged = true;
  };
  const remove = () =>
    new Promise<void>((resolve) => {
      finishRemoval = () => {
        engine.push("untag");
        tagged = false;
        resolve();
      };
    });
  const tag = "bake-parent/host/1:abc";
  // Two sibling builds on one parent share the tag; the second one ending removes it.
  await holdParentTag(tag, make);
  await holdParentTag(tag, make);
  await releaseParentTag(tag, remove);
  const released = releaseParentTag(tag, remove);
  // A third sibling starts while the engine has not yet removed the tag.
  const held = holdParentTag(tag, make);
  await new Promise((r) => setTimeout(r, 10));
  assert.equal(engine, ["tag"], "the tag is not asked for again before its removal is done");
  finishRemoval();
  await Promise.all([released, held]);
  assert.equal(engine, ["tag", "untag", "tag"]);
  assert.ok(tagged, "the third build's parent tag exists");
  await releaseParentTag(tag, async () => void engine.push("untag"));
  assert.equal(engine, ["tag", "untag", "tag", "untag"]);
});

test.run();
