/**
 * A run's report, as a person opens it: a real build in a project outside the repository, one
 * node rebuilt with a package change and one whose goss check fails; report.html beside the logs, opened in
 * headless Chromium with no network (the graph has one element per node, the failure and the
 * package change are visible text, every log link is a file); `bake report` draws it again from
 * the record, `--json` is the record; the CI job summary holds the same facts. Then a nightly's
 * page, opened the same way: the upstreams it checked, what rebuilt and the package changes.
 */
import { test } from "uvu";
import * as assert from "uvu/assert";
import { copyFileSync, existsSync, mkdirSync, readFileSync, symlinkSync, writeFileSync } from "node:fs";
import path from "node:path";
import { execa } from "execa";
import { ROOT, bake, tempDir, tempTree, writeTree } from "../helpers/bake.js";
import { removeProject, uniqueProject } from "../helpers/engine.js";

const project = uniqueProject("report");
const status = (openssl: string) =>
  `Package: openssl\nStatus: install ok installed\nArchitecture: amd64\nVersion: ${openssl}\n\nPackage: base-files\nStatus: install ok installed\nArchitecture: amd64\nVersion: 12.4\n`;

/** The base's rootfs: busybox, an os-release and a dpkg database naming this openssl. */
async function rootfs(dir: string, openssl: string): Promise<void> {
  const root = path.join(dir, "root");
  mkdirSync(path.join(root, "bin"), { recursive: true });
  if (!existsSync(path.join(root, "bin/busybox"))) {
    copyFileSync("/bin/busybox", path.join(root, "bin/busybox"));
    for (const c of ["sh", "cat", "test", "echo"]) symlinkSync("busybox", path.join(root, "bin", c));
  }
  writeTree(root, { "etc/os-release": "ID=debian\nVERSION_ID=12\n", "var/lib/dpkg/status": status(openssl) });
  await execa("tar", ["-C", root, "-cf", path.join(dir, "base.tar"), "."]);
}

/** A goss spec of the check image: /srv/hello.txt holds this word. */
const GOSS = (word: string) => `file:\n  /srv/hello.txt:\n    exists: true\n    contents: [${word}]\n`;

/** A page opened in headless Chromium with no network (`unshare --net`). */
const offline = (page: string, args: string[]) =>
  execa(
    "unshare",
    [
      "--net",
      "chromium",
      "--headless",
      "--no-sandbox",
      "--disable-gpu",
      "--enable-logging=stderr",
      "--v=0",
      ...args,
      `file://${page}`,
    ],
    { reject: false, timeout: 60_000 },
  );

test.after(async () => {
  await removeProject(project);
});

test("a build with a rebuilt node, a package change and a failing goss check: report.html opened in Chromium offline, bake report, the job summary", async () => {
  const dir = tempTree({
    "bake.yml": `project: ${project}\nimages:\n  base: { rootfs: { tar: base.tar } }\n  app: { parent: base, dockerfile: app/Dockerfile }\n  check: { parent: app, dockerfile: check/Dockerfile, test: check.goss.yaml }\n`,
    "app/Dockerfile": "ARG BAKE_PARENT\nFROM ${BAKE_PARENT}\nCOPY hello.txt /srv/hello.txt\n",
    "app/hello.txt": "hello\n",
    "check/Dockerfile": "ARG BAKE_PARENT\nFROM ${BAKE_PARENT}\nRUN test -e /srv/hello.txt\n",
    "check.goss.yaml": GOSS("hello"),
  });
  await rootfs(dir, "3.0.13-1");
  const first = await bake(["build"], { cwd: dir });
  assert.is(first.code, 0, first.stderr);
  // The next run: the base's packages move, and a check of the image's goss spec fails.
  await rootfs(dir, "3.0.15-1");
  writeFileSync(path.join(dir, "check.goss.yaml"), GOSS("goodbye"));
  const summaryFile = path.join(tempDir("bake-summary-"), "summary.md");
  const r = await bake(["build"], { cwd: dir, env: { GITHUB_STEP_SUMMARY: summaryFile } });
  assert.is(r.code, 1, r.stderr);
  const reportPath = /^report: (.+\/report\.html)$/m.exec(r.stderr)?.[1];
  assert.ok(reportPath && existsSync(reportPath), r.stderr);
  const folder = path.dirname(reportPath!);
  assert.is(path.dirname(folder), path.join(dir, ".bake", "logs"));
  const record = JSON.parse(readFileSync(path.join(folder, "run.json"), "utf8"));
  assert.equal(
    record.nodes.map((n: any) => [n.name, n.outcome]),
    [
      ["base", "built"],
      ["app", "built"],
      ["check", "failed"],
    ],
  );
  assert.equal(record.nodes[0].packages.changed, [
    { name: "openssl", type: "deb", before: "3.0.13-1", after: "3.0.15-1" },
  ]);
  assert.is(record.exit, 1);

  // In a browser, with no network: what a person sees.
  const shot = path.join(ROOT, ".bake", "test-artifacts", "report.png");
  mkdirSync(path.dirname(shot), { recursive: true });
  const chromium = (args: string[]) => offline(reportPath!, args);
  const dom = await chromium(["--dump-dom"]);
  assert.is(dom.exitCode, 0, `${dom.stderr}\n(chromium comes with make setup)`);
  assert.not.match(dom.stderr, /CONSOLE|Uncaught|Failed to load/, "no console errors, nothing fetched");
  assert.is(dom.stdout.match(/<g class="node"/g)?.length, 3, "one graph element per node");
  assert.match(dom.stdout, /<strong>check<\/strong>: check: test check\.goss\.yaml: 1 of \d+ checks? failed/);
  assert.match(dom.stdout, /\/srv\/hello\.txt[\s\S]*goodbye/, "goss's failing line");
  assert.match(dom.stdout, /<td>openssl<\/td><td>3\.0\.13-1 → 3\.0\.15-1<\/td>/);
  const links = [...dom.stdout.matchAll(/<a href="([^"]+)">/g)].map((m) => m[1]);
  assert.ok(links.length >= 3, links.join(" "));
  for (const l of links) assert.ok(existsSync(path.join(folder, decodeURIComponent(l))), `${l} resolves to a file`);
  const png = await chromium([`--screenshot=${shot}`, "--window-size=1280,900"]);
  assert.is(png.exitCode, 0, png.stderr);
  assert.is(readFileSync(shot).subarray(1, 4).toString(), "PNG");

  // bake report: the record again, and the page drawn again from it.
  const json = await bake(["report", "--json"], { cwd: dir });
  assert.is(json.code, 0, json.stderr);
  assert.equal(JSON.parse(json.stdout), record);
  const before = readFileSync(reportPath!, "utf8");
  writeFileSync(reportPath!, "");
  const again = await bake(["report", path.basename(folder)], { cwd: dir });
  assert.is(again.code, 0, again.stderr);
  assert.is(again.stdout.trim(), reportPath);
  assert.is(readFileSync(reportPath!, "utf8"), before);
  const missing = await bake(["report", "20000101-000000-0000"], { cwd: dir });
  assert.is(missing.code, 2);
  assert.match(missing.stderr, /^error: no run 20000101-000000-0000 with a record under /);

  // The job summary: the same facts, failures first.
  const md = readFileSync(summaryFile, "utf8");
  assert.match(
    md,
    new RegExp(`^### bake build: ${project} — failed \\(exit 1\\)\\n\\n\\*\\*Failed\\*\\*\\n\\n- \`check\`: `),
  );
  assert.match(md, /- `base`: openssl 3\.0\.13-1 → 3\.0\.15-1/);
  assert.match(md, /```mermaid\nflowchart LR\n[^`]*n0 --> n1\n  n1 --> n2\n/);
  assert.ok(md.includes(`Report: \`${reportPath}\``));

  // A no-op run leaves no report: nothing to look at.
  writeFileSync(path.join(dir, "check.goss.yaml"), GOSS("hello"));
  assert.is((await bake(["build"], { cwd: dir })).code, 0);
  const noop = await bake(["build"], { cwd: dir });
  assert.is(noop.code, 0, noop.stderr);
  assert.not.match(noop.stderr, /^report: /m);

  // The morning after a nightly: what changed, on one page, offline.
  await rootfs(dir, "3.0.16-1");
  const night = await bake(["nightly", "--target", "local"], { cwd: dir });
  assert.is(night.code, 0, night.stderr);
  const nightPage = /^report: (.+\/report\.html)$/m.exec(night.stderr)?.[1];
  assert.ok(nightPage && existsSync(nightPage), night.stderr);
  const seen = await offline(nightPage!, ["--dump-dom"]);
  assert.is(seen.exitCode, 0, seen.stderr);
  assert.not.match(seen.stderr, /CONSOLE|Uncaught|Failed to load/, "no console errors, nothing fetched");
  assert.match(seen.stdout, /<title>bake nightly: [^<]*passed<\/title>/);
  assert.is(seen.stdout.match(/<g class="node"/g)?.length, 3, "one graph element per node");
  assert.match(seen.stdout, /<tr class="unchanged"><td>base<\/td><td>tar<\/td><td>unchanged<\/td>/);
  assert.match(seen.stdout, /<td>openssl<\/td><td>3\.0\.15-1 → 3\.0\.16-1<\/td>/);
  assert.match(seen.stdout, /<p>Phases: refresh [\d.]+ s, build [\d.]+ s, bake [\d.]+ s, prune [\d.]+ s\.<\/p>/);
  for (const l of [...seen.stdout.matchAll(/<a href="([^"]+)">/g)].map((m) => m[1]))
    assert.ok(existsSync(path.join(path.dirname(nightPage!), decodeURIComponent(l))), `${l} resolves to a file`);
});

test.run();
