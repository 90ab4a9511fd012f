/** `bake plan --format dot|mermaid|svg`: the graph as a picture's text, exactly, and drawn by Graphviz. */
import { test } from "uvu";
import * as assert from "uvu/assert";
import { planDot, planMermaid, planPicture } from "../../src/plan/picture.js";
import type { PlanEntry } from "../../src/plan/plan.js";
import { renderSvg } from "../../src/tools/graphviz.js";

const K = (c: string) => c.repeat(64);

/**
 * A base, a service, a local host image, two releases (one named as Mermaid's keyword), an AMI in
 * stages shipping three and starting from the host image.
 */
const ENTRIES: PlanEntry[] = [
  { name: "base", kind: "image", layer: "base", key: K("a"), status: "cached", reason: "image exists", deps: [] },
  {
    name: "runtime",
    kind: "image",
    layer: "service",
    key: K("b"),
    status: "build",
    reason: 'dockerfile changed: "RUN" <x> #2',
    deps: ["base"],
  },
  {
    name: "hostimg",
    kind: "image",
    layer: "service",
    key: K("f"),
    status: "cached",
    reason: "image exists",
    deps: ["base"],
  },
  {
    name: "end",
    kind: "image",
    layer: "release",
    key: K("c"),
    status: "build",
    reason: "runtime will build",
    deps: ["runtime"],
  },
  {
    name: "replays",
    kind: "image",
    layer: "release",
    key: null,
    status: "unknown",
    reason: "a secret\nis missing",
    deps: ["runtime"],
  },
  {
    name: "app-host",
    kind: "ami",
    layer: "ami",
    key: K("d"),
    status: "build",
    reason: "end will build",
    deps: ["base", "end", "replays", "hostimg"],
    ships: ["base", "end", "replays"],
    stages: [
      { name: "host", key: K("e"), status: "cached", reason: "stage exists" },
      { name: "release", key: K("d"), status: "build", reason: "end will build" },
    ],
  },
];

test("plan as DOT: clusters by layer, colours by status, labels with short key and reason, dashed edges into the AMI (shipped images, its host)", () => {
  assert.fixture(
    planDot(ENTRIES),
    [
      "digraph bake {",
      "  rankdir=LR;",
      '  node [shape=box, style="rounded,filled", fontname="Helvetica", fontsize=11];',
      '  edge [color="#495057"];',
      '  subgraph "cluster_base" {',
      '    label="bases";',
      '    style=dashed; color="#adb5bd";',
      '    "base" [label="base\\laaaaaaaaaaaa · cached\\limage exists\\l", fillcolor="#e6f4ea", color="#2b8a3e"];',
      "  }",
      '  subgraph "cluster_service" {',
      '    label="services";',
      '    style=dashed; color="#adb5bd";',
      '    "runtime" [label="runtime\\lbbbbbbbbbbbb · build\\ldockerfile changed: \\"RUN\\" <x> #2\\l", fillcolor="#fff0db", color="#d9480f"];',
      '    "hostimg" [label="hostimg\\lffffffffffff · cached\\limage exists\\l", fillcolor="#e6f4ea", color="#2b8a3e"];',
      "  }",
      '  subgraph "cluster_release" {',
      '    label="releases";',
      '    style=dashed; color="#adb5bd";',
      '    "end" [label="end\\lcccccccccccc · build\\lruntime will build\\l", fillcolor="#fff0db", color="#d9480f"];',
      '    "replays" [label="replays\\lkey unknown · unknown\\la secret is missing\\l", fillcolor="#f1f3f5", color="#868e96", style="rounded,filled,dashed"];',
      "  }",
      '  subgraph "cluster_ami" {',
      '    label="AMIs";',
      '    style=dashed; color="#adb5bd";',
      '    "app-host" [label="app-host\\ldddddddddddd · build\\lend will build\\lstage host eeeeeeeeeeee: cached\\lstage release dddddddddddd: build\\l", fillcolor="#fff0db", color="#d9480f"];',
      "  }",
      '  "base" -> "runtime";',
      '  "base" -> "hostimg";',
      '  "runtime" -> "end";',
      '  "runtime" -> "replays";',
      '  "base" -> "app-host" [style=dashed, label="ships"];',
      '  "end" -> "app-host" [style=dashed, label="ships"];',
      '  "replays" -> "app-host" [style=dashed, label="ships"];',
      '  "hostimg" -> "app-host" [style=dashed, label="host"];',
      "}",
    ].join("\n"),
  );
});

test("plan as Mermaid: ids of its own, entity codes for its syntax, a class per status", () => {
  assert.fixture(
    planMermaid(ENTRIES),
    [
      "flowchart LR",
      '  subgraph base["bases"]',
      '    n0["base<br/>aaaaaaaaaaaa · cached<br/>image exists"]',
      "  end",
      '  subgraph service["services"]',
      '    n1["runtime<br/>bbbbbbbbbbbb · build<br/>dockerfile changed: #quot;RUN#quot; #lt;x#gt; #35;2"]',
      '    n2["hostimg<br/>ffffffffffff · cached<br/>image exists"]',
      "  end",
      '  subgraph release["releases"]',
      '    n3["end<br/>cccccccccccc · build<br/>runtime will build"]',
      '    n4["replays<br/>key unknown · unknown<br/>a secret is missing"]',
      "  end",
      '  subgraph ami["AMIs"]',
      '    n5["app-host<br/>dddddddddddd · build<br/>end will build<br/>stage host eeeeeeeeeeee: cached<br/>stage release dddddddddddd: build"]',
      "  end",
      "  n0 --> n1",
      "  n0 --> n2",
      "  n1 --> n3",
      "  n1 --> n4",
      "  n0 -. ships .-> n5",
      "  n3 -. ships .-> n5",
      "  n4 -. ships .-> n5",
      "  n2 -. host .-> n5",
      "  classDef cached fill:#e6f4ea,stroke:#2b8a3e",
      "  classDef build fill:#fff0db,stroke:#d9480f",
      "  classDef unknown fill:#f1f3f5,stroke:#868e96,stroke-dasharray:4 3",
      "  class n0,n2 cached",
      "  class n1,n3,n5 build",
      "  class n4 unknown",
    ].join("\n"),
  );
});

test("plan as SVG: Graphviz (WebAssembly, offline) draws the DOT text: one node element per node, one edge element per edge", async () => {
  const svg = await planPicture(ENTRIES, "svg", renderSvg);
  assert.match(svg, /^<\?xml[\s\S]*<svg [\s\S]*<\/svg>\s*$/);
  assert.is((svg.match(/<g id="node\d+" class="node">/g) ?? []).length, ENTRIES.length);
  assert.is((svg.match(/<g id="edge\d+" class="edge">/g) ?? []).length, 8);
  assert.match(svg, /<title>app&#45;host<\/title>/);
  assert.match(svg, /dockerfile changed: &quot;RUN&quot; &lt;x&gt; #2/);
  // A graph Graphviz cannot read is an error naming Graphviz, not a crash.
  await renderSvg("digraph {").then(
    () => assert.unreachable("an unreadable graph is refused"),
    (e: Error) => assert.match(e.message, /^graphviz could not draw the graph: /),
  );
});

test.run();
