/** The context listing that feeds bake keys matches what the real engine's build receives. */
import { test } from "uvu";
import * as assert from "uvu/assert";
import { execa } from "execa";
import path from "node:path";
import { listContext } from "../../src/graph/context-files.js";
import { tempTree } from "../helpers/bake.js";
import { GLOB_IGNORE, GLOB_TREE } from "../fixtures/dockerignore-tree.js";
import { busyboxImage, docker } from "../helpers/engine.js";

/** Builds the folder with the docker CLI (classic builder) and lists what arrived in the image. */
async function arrivedInImage(dir: string): Promise<string[]> {
  const tag = `bake-test/ctx:${process.pid}`;
  await execa("docker", ["build", "-q", "-t", tag, dir], { env: { DOCKER_BUILDKIT: "0" } });
  try {
    const { stdout } = await execa("docker", ["run", "--rm", tag, "find", "/ctx", "-mindepth", "1"]);
    return stdout
      .split("\n")
      .filter(Boolean)
      .map((p) => p.slice("/ctx/".length))
      .sort(compare);
  } finally {
    await docker
      .getImage(tag)
      .remove({ force: true })
      .catch(() => undefined);
  }
}

const compare = (a: string, b: string) => Buffer.compare(Buffer.from(a), Buffer.from(b));

const TREES: Record<string, Record<string, string>> = {
  "globs, nested paths and exceptions": { ...GLOB_TREE, ".dockerignore": GLOB_IGNORE, "src/deeper/c.tmp": "t" },
  "exclude everything, bring some back": {
    ".dockerignore": "*\n!app\n!app/**\napp/**/*.pyc\n!requirements.txt\n",
    "app/main.py": "m",
    "app/main.pyc": "c",
    "app/pkg/mod.py": "m",
    "app/pkg/mod.pyc": "c",
    "requirements.txt": "r",
    "secrets.env": "s",
    "tests/test_x.py": "t",
  },
  "character classes, ? and trailing slashes": {
    ".dockerignore": "log[0-9].txt\nfile?.bin\nbuild/\n!build/keep\ncache/**\n",
    "log1.txt": "1",
    "logx.txt": "x",
    "file1.bin": "1",
    "file10.bin": "10",
    "build/out": "o",
    "build/keep": "k",
    "cache/a/b": "b",
    "cache/c": "c",
  },
  "the Dockerfile and .dockerignore themselves ignored": {
    ".dockerignore": "Dockerfile\n.dockerignore\n*.log\n",
    "x.log": "l",
    "kept.txt": "k",
  },
};

for (const [name, files] of Object.entries(TREES)) {
  test(`.dockerignore: ${name}`, async () => {
    const base = await busyboxImage();
    const dir = tempTree({ ...files, Dockerfile: `FROM ${base}\nCOPY . /ctx\n` });
    const listing = await listContext(dir, { dockerfile: path.join(dir, "Dockerfile") });
    assert.equal(
      listing.entries.map((e) => e.path),
      await arrivedInImage(dir),
    );
  });
}

test.run();
