/**
 * Builds through BuildKit with a session: the contract holds (BAKE_PARENT is the parent's image
 * id), the engine gets the context's files and nothing of bake's, no parent tag outlives a run,
 * and a Dockerfile whose FROM cannot be pinned goes through the classic builder.
 */
import { test } from "uvu";
import * as assert from "uvu/assert";
import { existsSync, readFileSync, readdirSync, writeFileSync } from "node:fs";
import path from "node:path";
import { execa } from "execa";
import { bake, CLI, removeTree, tempTree, testEnv } from "../helpers/bake.js";
import {
  busyboxRootfs,
  docker,
  parentTagsOf,
  removeProject,
  sessionRefusingProxy,
  uniqueProject,
} from "../helpers/engine.js";

const project = uniqueProject("bk-it");
let dir = "";

const inImage = async (id: string, cmd: string) =>
  (await execa("docker", ["run", "--rm", "--network", "none", id, "sh", "-c", cmd])).stdout;

test.before(async () => {
  dir = tempTree({
    "bake.yml": `project: ${project}\nimages:\n  base: { rootfs: { tar: ${await busyboxRootfs()} } }\n  probe: { parent: base, dockerfile: probe/Dockerfile }\n  classic: { parent: base, dockerfile: classic/Dockerfile }\n`,
    // ARG again after FROM: the build argument itself, as the Dockerfile sees it.
    "probe/Dockerfile":
      'ARG BAKE_PARENT\nFROM ${BAKE_PARENT}\nARG BAKE_PARENT\nRUN echo "$BAKE_PARENT" > /parent\nCOPY . /ctx\n',
    "probe/.dockerignore": "*.log\n",
    "probe/a.txt": "a\n",
    "probe/sub/b.txt": "b\n",
    "probe/noise.log": "noise\n",
    "classic/Dockerfile": "ARG BAKE_PARENT\nFROM ${BAKE_PARENT:-no-such-image}\nRUN echo classic > /classic\n",
  });
});

test.after(async () => {
  await removeProject(project);
});

test("BAKE_PARENT is the parent's image id; the image holds the context's files and nothing bake sent besides; no parent tag is left", async () => {
  const r = await bake(["build"], { cwd: dir });
  assert.is(r.code, 0, r.stderr);
  const m = JSON.parse(readFileSync(path.join(dir, "bake-manifest.json"), "utf8"));
  assert.is(await inImage(m.images.probe.id, "cat /parent"), m.images.base.id);
  assert.is(
    await inImage(m.images.probe.id, "cd /ctx && find . | sort | tr '\\n' ' '"),
    ". ./.dockerignore ./Dockerfile ./a.txt ./sub ./sub/b.txt ",
  );
  const labels = (await docker.getImage(m.images.probe.id).inspect()).Config.Labels;
  assert.is(labels["bake.key"], m.images.probe.key);
  assert.is(labels["bake.parent"], m.images.base.key);
  // BuildKit: the labels are metadata, with no step of their own in the image's history.
  const history = await docker.getImage(m.images.probe.id).history();
  assert.not.ok(
    history.some((h: any) => /LABEL/.test(h.CreatedBy)),
    JSON.stringify(history.map((h: any) => h.CreatedBy)),
  );
  assert.equal(await parentTagsOf(r.pid), [], "no parent tag left");
});

/** The engine's records of files sent to it in sessions ("local source for context"). */
const localSources = async () => {
  const df: any = await (docker as any).df();
  return (df.BuildCache ?? []).filter((c: any) => c.Type === "source.local" && /context/.test(c.Description)).length;
};

test("a file changed to content of the same size is sent again; the engine keeps one copy of the node's files", async () => {
  const before = await localSources();
  for (const content of ["b\n", "c\n"]) {
    writeFileSync(path.join(dir, "probe/a.txt"), content);
    const r = await bake(["build", "probe"], { cwd: dir });
    assert.is(r.code, 0, r.stderr);
    const m = JSON.parse(readFileSync(path.join(dir, "bake-manifest.json"), "utf8"));
    assert.is(await inImage(m.images.probe.id, "cat /ctx/a.txt"), content.trim());
  }
  assert.is(await localSources(), before, "the same record, updated");
});

test("a FROM that uses BAKE_PARENT with a default goes through the classic builder, labels and all", async () => {
  const m = JSON.parse(readFileSync(path.join(dir, "bake-manifest.json"), "utf8"));
  assert.is(await inImage(m.images.classic.id, "cat /classic"), "classic");
  const image = await docker.getImage(m.images.classic.id).inspect();
  assert.is(image.Config.Labels["bake.key"], m.images.classic.key);
  const history = await docker.getImage(m.images.classic.id).history();
  assert.ok(
    history.some((h: any) => /#\(nop\)\s+LABEL/.test(h.CreatedBy)),
    "the classic builder's LABEL step",
  );
  // Its log says which builder and why; the sibling's says BuildKit.
  const logs = path.join(dir, ".bake/logs");
  const first = readdirSync(logs)
    .sort()
    .find((run) => existsSync(path.join(logs, run, "classic.log")))!;
  assert.match(
    readFileSync(path.join(logs, first, "classic.log"), "utf8"),
    "building with the classic builder: a FROM of its Dockerfile names BAKE_PARENT in a way other than FROM ${BAKE_PARENT}",
  );
  assert.match(readFileSync(path.join(logs, first, "probe.log"), "utf8"), "building through BuildKit with a session");
});

test("a proxy before the engine that refuses sessions: the build goes through the classic builder", async () => {
  const proxy = await sessionRefusingProxy();
  try {
    const proxied = tempTree({
      "bake.yml": `project: ${project}-proxied\nimages:\n  base: { rootfs: { tar: ${await busyboxRootfs()} } }\n  app: { parent: base, dockerfile: app/Dockerfile }\n`,
      "app/Dockerfile": `ARG BAKE_PARENT\nFROM \${BAKE_PARENT}\nRUN echo ${project} > /proxied\n`,
    });
    const r = await bake(["build"], { cwd: proxied, env: { DOCKER_HOST: proxy.host } });
    assert.is(r.code, 0, r.stderr);
    const m = JSON.parse(readFileSync(path.join(proxied, "bake-manifest.json"), "utf8"));
    const logs = readdirSync(path.join(proxied, ".bake/logs"));
    // The first build that asks says so in its log; the rest of the run builds classic, each saying why.
    const runLogs = readdirSync(path.join(proxied, ".bake/logs", logs[0])).map((f) =>
      readFileSync(path.join(proxied, ".bake/logs", logs[0], f), "utf8"),
    );
    assert.is(
      runLogs.filter((l) => /the engine answered \/session with HTTP 403: building with the classic builder/.test(l))
        .length,
      1,
    );
    assert.is(await inImage(m.images.app.id, "cat /proxied"), project);
    const history = await docker.getImage(m.images.app.id).history();
    assert.ok(
      history.some((h: any) => /#\(nop\)\s+LABEL/.test(h.CreatedBy)),
      "the classic builder's LABEL step",
    );
    assert.is((await docker.getImage(m.images.app.id).inspect()).Config.Labels["bake.key"], m.images.app.key);
    assert.equal(await parentTagsOf(r.pid), [], "no parent tag left");
  } finally {
    proxy.close();
    await removeProject(`${project}-proxied`);
  }
});

test("Ctrl-C while the engine reads the context: exit 130, no stack trace, no parent tag, nothing tagged", async () => {
  const big = tempTree({
    "bake.yml": `project: ${project}-int\nimages:\n  base: { rootfs: { tar: ${await busyboxRootfs()} } }\n  big: { parent: base, dockerfile: big/Dockerfile }\n`,
    "big/Dockerfile": `ARG BAKE_PARENT\nFROM \${BAKE_PARENT}\nCOPY blob /blob\nRUN echo ${project}\n`,
  });
  // 512 MiB of random bytes: long enough to stream that the interrupt lands mid-file.
  await execa("dd", ["if=/dev/urandom", `of=${path.join(big, "big/blob")}`, "bs=1M", "count=512", "status=none"]);
  const child = execa(process.execPath, [CLI, "build"], { cwd: big, env: testEnv(), reject: false });
  // The node's log says when the engine starts reading the context ("load build context").
  const log = () => {
    const runs = existsSync(path.join(big, ".bake/logs")) ? readdirSync(path.join(big, ".bake/logs")) : [];
    const file = runs.length ? path.join(big, ".bake/logs", runs[0], "big.log") : "";
    return file && existsSync(file) ? readFileSync(file, "utf8") : "";
  };
  const started = Date.now();
  while (!/load build context/.test(log()) && Date.now() - started < 60_000)
    await new Promise((r) => setTimeout(r, 10));
  assert.match(log(), /load build context/);
  child.kill("SIGINT");
  const result = await child;
  assert.is(result.exitCode, 130, String(result.stderr));
  assert.not.match(String(result.stderr), /\n\s+at /);
  assert.equal(await parentTagsOf(child.pid!), [], "no parent tag left");
  assert.is((await docker.listImages({ filters: JSON.stringify({ reference: [`${project}-int/big`] }) })).length, 0);
  await removeProject(`${project}-int`);
  removeTree(big);
});

test.run();
