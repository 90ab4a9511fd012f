/** A run's record, its HTML report and its CI job summary, from a fixture run: exact where it matters. */
import { test } from "uvu";
import * as assert from "uvu/assert";
import { mkdirSync, writeFileSync } from "node:fs";
import path from "node:path";
import type { PlanEntry } from "../../src/plan/plan.js";
import { readRunRecord, runFolder, runRecord, worthReporting, type RunRecord } from "../../src/report/record.js";
import { graphSvg, reportHtml } from "../../src/report/html.js";
import { mermaidOf, stepSummary } from "../../src/report/summary.js";
import { UsageError } from "../../src/errors.js";
import { tempTree } from "../helpers/bake.js";

const K = (c: string) => c.repeat(64);
const plan: PlanEntry[] = [
  {
    name: "base",
    kind: "image",
    layer: "base",
    key: K("a"),
    status: "cached",
    reason: "image with this key exists",
    deps: [],
  },
  {
    name: "runtime",
    kind: "image",
    layer: "service",
    key: K("b"),
    status: "build",
    reason: "Dockerfile changed",
    deps: ["base"],
  },
  {
    name: "web",
    kind: "image",
    layer: "release",
    key: K("c"),
    status: "build",
    reason: "parent runtime rebuilt",
    deps: ["runtime"],
  },
  {
    name: "jobs",
    kind: "image",
    layer: "release",
    key: K("d"),
    status: "build",
    reason: "<script>alert(1)</script> & more",
    deps: ["runtime"],
  },
];
const at = (s: string) => new Date(`2026-12-07T06:00:${s}Z`);

function fixture(): RunRecord {
  return runRecord({
    run: "20261207-060000-ab12",
    command: "build",
    project: "shop",
    started: at("00"),
    ended: at("09"),
    exit: 1,
    plan,
    results: [
      {
        name: "runtime",
        action: "built",
        seconds: 4.26,
        id: `sha256:${K("e")}`,
        tags: ["shop/runtime:latest"],
        packages: {
          since: `sha256:${K("f")}`,
          added: [{ name: "curl", type: "deb", version: "7.88.1-10" }],
          removed: [],
          changed: [{ name: "openssl", type: "deb", before: "3.0.13-1", after: "3.0.15-1" }],
        },
      },
    ],
    failures: [{ node: "web", message: "web: RUN make failed (exit 2)", detail: "make: *** [all] Error 2" }],
    logs: ["runtime.log", "web.log"],
  });
}

test("the record: each node's outcome from what the run did, its plan's reason, time, image, packages and log", () => {
  const r = fixture();
  assert.equal(
    r.nodes.map((n) => [n.name, n.planned, n.outcome, n.seconds, n.log]),
    [
      ["base", "cached", "cached", undefined, undefined],
      ["runtime", "build", "built", 4.3, "runtime.log"],
      ["web", "build", "failed", undefined, "web.log"],
      ["jobs", "build", "not reached", undefined, undefined],
    ],
  );
  assert.equal(r.nodes[2].failure, { message: "web: RUN make failed (exit 2)", detail: "make: *** [all] Error 2" });
  assert.equal([r.started, r.ended, r.exit], ["2026-12-07T06:00:00.000Z", "2026-12-07T06:00:09.000Z", 1]);
  assert.ok(worthReporting(r));
  // A no-op run (everything cached, exit 0) leaves no report.
  assert.not.ok(worthReporting({ ...r, exit: 0, nodes: r.nodes.map((n) => ({ ...n, outcome: "cached" as const })) }));
});

test("the page: failures first, one SVG node per graph node and an edge per parent, every text escaped, nothing fetched", () => {
  const html = reportHtml(fixture());
  assert.ok(html.indexOf("<h2>Failed</h2>") < html.indexOf("<h2>Graph</h2>"), "failures come first");
  assert.match(html, /<title>bake build: shop 20261207-060000-ab12, failed \(exit 1\)<\/title>/);
  assert.match(
    html,
    /<div class="failure" id="failure-web"><p><strong>web<\/strong>: web: RUN make failed \(exit 2\) <a href="web\.log">web\.log<\/a><\/p><pre>make: \*\*\* \[all\] Error 2<\/pre><\/div>/,
  );
  assert.is(html.match(/<g class="node"/g)?.length, 4);
  assert.is(html.match(/<path class="edge"/g)?.length, 3);
  assert.match(html, /<g class="node" id="node-runtime" data-outcome="built">/);
  assert.not.match(html, /<script>alert/);
  assert.match(html, /&lt;script&gt;alert\(1\)&lt;\/script&gt; &amp; more/);
  assert.not.match(html, /<script|<link|<img|@import|url\(http|src=/i, "no script and nothing fetched");
  assert.equal(html.match(/https?:\/\/[^"\s]*/g), ["http://www.w3.org/2000/svg"], "the only URL is the SVG namespace");
  // The node table and the package changes: what a person reads.
  assert.match(
    html,
    /<tr class="built" id="row-runtime"><td>runtime<\/td><td>service<\/td><td>built<\/td><td>build: Dockerfile changed<\/td><td><code>bbbbbbbbbbbb<\/code><\/td><td>4\.3 s<\/td><td><code>sha256:eeeeeeeeeeee<\/code><\/td><td><a href="runtime\.log">runtime\.log<\/a><\/td><\/tr>/,
  );
  assert.match(html, /<h3>runtime: packages since ffffffffffff<\/h3>/);
  assert.match(html, /<tr class="changed"><td>changed<\/td><td>openssl<\/td><td>3\.0\.13-1 → 3\.0\.15-1<\/td><\/tr>/);
  assert.match(html, /<tr class="added"><td>added<\/td><td>curl<\/td><td>7\.88\.1-10<\/td><\/tr>/);
});

test("the graph: a column per depth, parents left of children", () => {
  const svg = graphSvg(fixture().nodes);
  const x = (name: string) => Number(new RegExp(`id="node-${name}"[^]*?<rect x="(\\d+)"`).exec(svg)![1]);
  assert.ok(x("base") < x("runtime") && x("runtime") < x("web"));
  assert.is(x("web"), x("jobs"), "siblings share a column");
});

test("the job summary: failures, then what rebuilt and why, package changes, the graph in Mermaid", () => {
  const md = stepSummary(fixture(), "/p/.bake/logs/20261207-060000-ab12/report.html");
  assert.equal(md.split("\n").slice(0, 11), [
    "### bake build: shop — failed (exit 1)",
    "",
    "**Failed**",
    "",
    "- `web`: web: RUN make failed (exit 2)",
    "",
    "| node | outcome | why | key | time |",
    "|---|---|---|---|---|",
    "| web | failed | parent runtime rebuilt | `cccccccccccc` |  |",
    "| runtime | built | Dockerfile changed | `bbbbbbbbbbbb` | 4.3 s |",
    "| base | cached | image with this key exists | `aaaaaaaaaaaa` |  |",
  ]);
  assert.match(md, /\*\*Package changes\*\*\n\n- `runtime`: openssl 3\.0\.13-1 → 3\.0\.15-1, \+curl 7\.88\.1-10\n/);
  assert.match(md, /```mermaid\nflowchart LR\n/);
  assert.match(md, /Report: `\/p\/\.bake\/logs\/20261207-060000-ab12\/report\.html`\n$/);
  assert.is(
    mermaidOf(fixture()),
    [
      "flowchart LR",
      '  n0["base<br/>aaaaaaaaaaaa · cached"]:::cached',
      '  n1["runtime<br/>bbbbbbbbbbbb · built"]:::built',
      '  n2["web<br/>cccccccccccc · failed"]:::failed',
      '  n3["jobs<br/>dddddddddddd · not reached"]:::not_reached',
      "  n0 --> n1",
      "  n1 --> n2",
      "  n1 --> n3",
      "  classDef cached fill:#e6f4ea,stroke:#2b8a3e",
      "  classDef built fill:#fff0db,stroke:#d9480f",
      "  classDef failed fill:#ffe3e3,stroke:#c92a2a",
      "  classDef not_reached fill:#f1f3f5,stroke:#868e96",
    ].join("\n"),
  );
  // A name with Mermaid's syntax in it is written as the plan's picture writes it: entity codes.
  const odd = fixture();
  odd.nodes[0].name = 'base "<#1>"';
  assert.ok(
    mermaidOf(odd).split("\n").includes('  n0["base #quot;#lt;#35;1#gt;#quot;<br/>aaaaaaaaaaaa · cached"]:::cached'),
    mermaidOf(odd),
  );
});

test("an AMI run: its ids, the stage it was baked on and every check, the failing one with what it saw; a nightly's upstreams and prune", () => {
  const ami: PlanEntry = {
    name: "app-host",
    kind: "ami",
    layer: "ami",
    key: K("9"),
    status: "build",
    reason: "release web changed",
    deps: ["web"],
  };
  const checks = [
    { name: "boot", ok: true, detail: "systemd running after 2.1 s" },
    { name: "service web", ok: false, detail: "container web unhealthy: GET /healthz <refused>" },
  ];
  const failed = runRecord({
    run: "20261207-070000-cd34",
    command: "ami",
    project: "shop",
    started: at("00"),
    ended: at("30"),
    exit: 1,
    plan: [plan[0], ami],
    results: [],
    failures: [{ node: "app-host", message: "app-host: boot test failed: service web", detail: "", checks }],
    logs: [],
  });
  assert.equal([failed.nodes[1].outcome, failed.nodes[1].checks], ["failed", checks]);
  const html = reportHtml(failed);
  assert.match(
    html,
    /<tr class="passed"><td>boot<\/td><td>passed<\/td><td><pre>systemd running after 2\.1 s<\/pre><\/td><\/tr>/,
  );
  assert.match(
    html,
    /<tr class="failed"><td>service web<\/td><td>FAILED<\/td><td><pre>container web unhealthy: GET \/healthz &lt;refused&gt;<\/pre><\/td><\/tr>/,
  );
  assert.match(
    stepSummary(failed, "r.html"),
    /^  - check service web: container web unhealthy: GET \/healthz <refused>$/m,
  );

  const baked = runRecord({
    run: "20261207-070000-cd35",
    command: "nightly",
    project: "shop",
    started: at("00"),
    ended: at("40"),
    exit: 0,
    plan: [plan[0], ami],
    results: [
      {
        name: "app-host",
        action: "built",
        seconds: 31,
        id: "ami-0abc",
        tags: [],
        regions: { "us-east-1": "ami-0abc", "eu-west-1": "ami-0def" },
        stages: [{ name: "host", key: K("8") }],
      },
    ],
    failures: [],
    logs: [],
    nightly: {
      upstream: [{ node: "base", kind: "debootstrap", changed: true, note: "first pin" }],
      pruned: [{ kind: "ami", name: "app-host", where: "us-east-1", id: "ami-0old" }],
      phases: { refresh: 1.25, build: 0, bake: 31, prune: 2 },
    },
  });
  const page = reportHtml(baked);
  assert.match(
    page,
    /<tr><td>us-east-1<\/td><td><code>ami-0abc<\/code><\/td><\/tr><tr><td>eu-west-1<\/td><td><code>ami-0def<\/code><\/td><\/tr>/,
  );
  assert.match(page, /<p>Baked on: stage host <code>888888888888<\/code>\.<\/p>/);
  assert.match(
    page,
    /<tr class="changed"><td>base<\/td><td>debootstrap<\/td><td>changed<\/td><td>first pin<\/td><\/tr>/,
  );
  assert.match(page, /<p>Phases: refresh 1\.3 s, build 0\.0 s, bake 31\.0 s, prune 2\.0 s\.<\/p>/);
  assert.match(page, /<li>ami app-host ami-0old \(us-east-1\)<\/li>/);
  const md = stepSummary(baked, "r.html");
  assert.match(md, /^\*\*AMI `app-host`\*\*: us-east-1 `ami-0abc`, eu-west-1 `ami-0def`$/m);
  assert.match(md, /^- ami app-host ami-0old \(us-east-1\)$/m);
  // A nightly that only pruned is worth its report.
  assert.ok(worthReporting({ ...baked, nodes: baked.nodes.map((n) => ({ ...n, outcome: "cached" as const })) }));
});

test("runs on disk: the latest with a record, or the one named; anything else is one line", () => {
  const dir = tempTree({ "bake.yml": "project: p\n" });
  const logs = path.join(dir, ".bake", "logs");
  for (const run of ["20261207-050000-aaaa", "20261207-060000-bbbb", "20261207-070000-cccc"])
    mkdirSync(path.join(logs, run), { recursive: true });
  // The latest folder holds only logs (a no-op run's): the latest with a record is the one before.
  for (const run of ["20261207-050000-aaaa", "20261207-060000-bbbb"])
    writeFileSync(path.join(logs, run, "run.json"), JSON.stringify({ ...fixture(), run }));
  assert.is(path.basename(runFolder(dir)), "20261207-060000-bbbb");
  assert.is(readRunRecord(runFolder(dir, "20261207-050000-aaaa")).run, "20261207-050000-aaaa");
  for (const bad of ["../etc", "20261207-070000-cccc", "nope"])
    assert.throws(
      () => runFolder(dir, bad),
      (e: Error) => e instanceof UsageError && /no run .* with a record under/.test(e.message),
    );
  assert.throws(
    () => runFolder(tempTree({})),
    (e: Error) => e instanceof UsageError && /no run with a record/.test(e.message),
  );
  writeFileSync(path.join(logs, "20261207-050000-aaaa", "run.json"), JSON.stringify({ format: 9 }));
  assert.throws(
    () => readRunRecord(path.join(logs, "20261207-050000-aaaa")),
    /not a run record this bake reads \(format 9\)/,
  );
});

test.run();
