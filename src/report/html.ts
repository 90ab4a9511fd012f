/**
 * A run's report as one HTML page that needs nothing else: inline CSS, the graph as inline SVG
 * (laid out here: a column per depth, parents left of their children), failures first, a table of
 * every node with what happened and why, package changes, and links to each node's log beside
 * it. No script, no fetch. Pure: every text from the record is escaped.
 */
import { shortKey } from "../config/model.js";
import { diffIsEmpty } from "../sbom/package-diff.js";
import type { Outcome, ReportNode, RunRecord } from "./record.js";

const esc = (s: string) =>
  s.replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" })[c]!);

/** Fill and line per outcome: rebuilt orange, reused green, failed red, not reached grey. */
export const OUTCOME_COLOURS: Record<Outcome, { fill: string; line: string }> = {
  built: { fill: "#fff0db", line: "#d9480f" },
  pulled: { fill: "#e7f5ff", line: "#1971c2" },
  cached: { fill: "#e6f4ea", line: "#2b8a3e" },
  failed: { fill: "#ffe3e3", line: "#c92a2a" },
  "not reached": { fill: "#f1f3f5", line: "#868e96" },
};

const BOX = { w: 210, h: 58, gapX: 70, gapY: 22, pad: 16 };

/** Each node's column: its depth in the graph (a node sits right of every parent it has in the run). */
function columns(nodes: ReportNode[]): Map<string, number> {
  const byName = new Map(nodes.map((n) => [n.name, n]));
  const depth = new Map<string, number>();
  const of = (n: ReportNode, seen: Set<string>): number => {
    if (depth.has(n.name)) return depth.get(n.name)!;
    if (seen.has(n.name)) return 0;
    seen.add(n.name);
    const parents = n.deps.map((d) => byName.get(d)).filter((p): p is ReportNode => Boolean(p));
    const d = parents.length ? Math.max(...parents.map((p) => of(p, seen) + 1)) : 0;
    depth.set(n.name, d);
    return d;
  };
  for (const n of nodes) of(n, new Set());
  return depth;
}

/** The graph as SVG: one `<g class="node">` per node, one `<path class="edge">` per parent → child. */
export function graphSvg(nodes: ReportNode[]): string {
  const column = columns(nodes);
  const rows = new Map<number, number>();
  const at = new Map<string, { x: number; y: number }>();
  for (const n of nodes) {
    const c = column.get(n.name)!;
    const r = rows.get(c) ?? 0;
    rows.set(c, r + 1);
    at.set(n.name, { x: BOX.pad + c * (BOX.w + BOX.gapX), y: BOX.pad + r * (BOX.h + BOX.gapY) });
  }
  const width = BOX.pad * 2 + (Math.max(0, ...column.values()) + 1) * (BOX.w + BOX.gapX) - BOX.gapX;
  const height = BOX.pad * 2 + Math.max(1, ...rows.values()) * (BOX.h + BOX.gapY) - BOX.gapY;
  const edges = nodes.flatMap((n) =>
    n.deps
      .filter((d) => at.has(d))
      .map((d) => {
        const a = at.get(d)!;
        const b = at.get(n.name)!;
        const [x1, y1, x2, y2] = [a.x + BOX.w, a.y + BOX.h / 2, b.x, b.y + BOX.h / 2];
        const mid = (x1 + x2) / 2;
        return `<path class="edge" data-from="${esc(d)}" data-to="${esc(n.name)}" d="M${x1},${y1} C${mid},${y1} ${mid},${y2} ${x2},${y2}" fill="none" stroke="#868e96" marker-end="url(#arrow)"/>`;
      }),
  );
  const boxes = nodes.map((n) => {
    const { x, y } = at.get(n.name)!;
    const c = OUTCOME_COLOURS[n.outcome];
    const second = `${n.key ? shortKey(n.key) : "key unknown"} · ${n.outcome}${n.seconds !== undefined ? ` · ${n.seconds} s` : ""}`;
    return [
      `<g class="node" id="node-${esc(n.name)}" data-outcome="${n.outcome}">`,
      `<title>${esc(`${n.name}: ${n.outcome}; planned ${n.planned}: ${n.reason}`)}</title>`,
      `<rect x="${x}" y="${y}" width="${BOX.w}" height="${BOX.h}" rx="6" fill="${c.fill}" stroke="${c.line}" stroke-width="${n.outcome === "failed" ? 3 : 1.5}"/>`,
      `<text x="${x + 10}" y="${y + 22}" font-weight="bold">${esc(n.name)}</text>`,
      `<text x="${x + 10}" y="${y + 42}" font-size="12">${esc(second)}</text>`,
      `</g>`,
    ].join("");
  });
  return [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" viewBox="0 0 ${width} ${height}" font-family="sans-serif" font-size="14" role="img" aria-label="the run's graph">`,
    `<defs><marker id="arrow" viewBox="0 0 10 10" refX="10" refY="5" markerWidth="7" markerHeight="7" orient="auto"><path d="M0,0 L10,5 L0,10 z" fill="#868e96"/></marker></defs>`,
    ...edges,
    ...boxes,
    `</svg>`,
  ].join("\n");
}

function packageTable(n: ReportNode): string {
  const d = n.packages!;
  const rows = [
    ...d.changed.map((c) => ["changed", c.name, `${c.before} → ${c.after}`]),
    ...d.added.map((a) => ["added", a.name, a.version]),
    ...d.removed.map((r) => ["removed", r.name, r.version]),
  ];
  return [
    `<h3>${esc(n.name)}: packages since ${esc(d.since.slice(7, 19))}</h3>`,
    `<table class="packages"><tr><th>change</th><th>package</th><th>version</th></tr>`,
    ...rows.map((r) => `<tr class="${r[0]}"><td>${r.map(esc).join("</td><td>")}</td></tr>`),
    `</table>`,
  ].join("\n");
}

/** An AMI's ids (per region, or the local image, the VM disk), the stages below it, and its checks. */
function amiSection(n: ReportNode): string {
  const rows = Object.entries(n.regions ?? {});
  return [
    `<div class="ami" id="ami-${esc(n.name)}">`,
    `<h3>${esc(n.name)}</h3>`,
    rows.length
      ? `<table class="regions"><tr><th>where</th><th>id</th></tr>${rows.map(([where, id]) => `<tr><td>${esc(where)}</td><td><code>${esc(id)}</code></td></tr>`).join("")}</table>`
      : "",
    n.stages?.length
      ? `<p>Baked on: ${n.stages.map((st) => `stage ${esc(st.name)} <code>${esc(shortKey(st.key))}</code>`).join(", ")}.</p>`
      : "",
    n.checks?.length
      ? [
          `<table class="checks"><tr><th>check</th><th>result</th><th>what it saw</th></tr>`,
          ...n.checks.map(
            (c) =>
              `<tr class="${c.ok ? "passed" : "failed"}"><td>${esc(c.name)}</td><td>${c.ok ? "passed" : "FAILED"}</td><td><pre>${esc(c.detail)}</pre></td></tr>`,
          ),
          `</table>`,
        ].join("\n")
      : "",
    `</div>`,
  ]
    .filter(Boolean)
    .join("\n");
}

/** A nightly run's own parts: the upstreams it checked, its phases' times, what its prune removed. */
function nightlySection(record: RunRecord): string {
  const night = record.nightly;
  if (!night) return "";
  return [
    `<h2>Upstream</h2>`,
    `<table class="upstream"><tr><th>node</th><th>kind</th><th>upstream</th><th>note</th></tr>`,
    ...night.upstream.map(
      (u) =>
        `<tr class="${u.changed ? "changed" : "unchanged"}"><td>${esc(u.node)}</td><td>${esc(u.kind)}</td><td>${u.changed ? "changed" : "unchanged"}</td><td>${esc(u.note ?? "")}</td></tr>`,
    ),
    `</table>`,
    `<p>Phases: ${esc(
      Object.entries(night.phases)
        .map(([phase, sec]) => `${phase} ${sec.toFixed(1)} s`)
        .join(", "),
    )}.</p>`,
    `<h2>Pruned</h2>`,
    night.pruned.length
      ? `<ul class="pruned">${night.pruned.map((p) => `<li>${esc(`${p.kind} ${p.name} ${p.id} (${p.where})`)}</li>`).join("")}</ul>`
      : "<p>Nothing pruned.</p>",
  ].join("\n");
}

export function reportHtml(record: RunRecord): string {
  const failed = record.nodes.filter((n) => n.outcome === "failed");
  const withPackages = record.nodes.filter((n) => n.packages && !diffIsEmpty(n.packages));
  const amis = record.nodes.filter((n) => n.regions || n.checks);
  const count = (o: Outcome) => record.nodes.filter((n) => n.outcome === o).length;
  const summary = (["built", "pulled", "cached", "failed", "not reached"] as const)
    .filter((o) => count(o))
    .map((o) => `${count(o)} ${o}`)
    .join(", ");
  const status = record.exit === 0 ? "passed" : `failed (exit ${record.exit})`;
  const link = (n: ReportNode) => (n.log ? `<a href="${encodeURIComponent(n.log)}">${esc(n.log)}</a>` : "");
  return `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>${esc(`bake ${record.command}: ${record.project} ${record.run}, ${status}`)}</title>
<style>
body { font-family: sans-serif; margin: 2rem; color: #212529; }
h1 { font-size: 1.4rem; } h2 { font-size: 1.15rem; margin-top: 2rem; }
.status.passed { color: #2b8a3e; } .status.failed { color: #c92a2a; }
table { border-collapse: collapse; } td, th { border: 1px solid #dee2e6; padding: 0.3rem 0.6rem; text-align: left; vertical-align: top; }
tr.failed td { background: #ffe3e3; } tr.built td { background: #fff9f0; } tr.changed td { background: #fff9f0; }
.failure { border-left: 4px solid #c92a2a; padding: 0.5rem 1rem; background: #fff5f5; }
pre { white-space: pre-wrap; font-size: 0.85rem; } code { font-size: 0.9rem; }
.graph { overflow-x: auto; }
</style>
</head>
<body>
<h1>bake ${esc(record.command)} — ${esc(record.project)}: <span class="status ${record.exit === 0 ? "passed" : "failed"}">${esc(status)}</span></h1>
<p>Run <code>${esc(record.run)}</code>, ${esc(record.started)} to ${esc(record.ended)}: ${esc(summary)}.</p>
${failed.length ? `<h2>Failed</h2>\n${failed.map((n) => `<div class="failure" id="failure-${esc(n.name)}"><p><strong>${esc(n.name)}</strong>: ${esc(n.failure?.message ?? "failed")} ${link(n)}</p>${n.failure?.detail ? `<pre>${esc(n.failure.detail)}</pre>` : ""}</div>`).join("\n")}` : ""}
<h2>Graph</h2>
<div class="graph">
${graphSvg(record.nodes)}
</div>
<h2>Nodes</h2>
<table class="nodes">
<tr><th>node</th><th>layer</th><th>outcome</th><th>why (the plan)</th><th>key</th><th>time</th><th>image</th><th>log</th></tr>
${record.nodes
  .map(
    (n) =>
      `<tr class="${n.outcome === "not reached" ? "not-reached" : n.outcome}" id="row-${esc(n.name)}"><td>${esc(n.name)}</td><td>${esc(n.layer)}</td><td>${esc(n.outcome)}</td><td>${esc(`${n.planned}: ${n.reason}`)}</td><td><code>${n.key ? esc(shortKey(n.key)) : ""}</code></td><td>${n.seconds !== undefined ? `${n.seconds} s` : ""}</td><td><code>${n.id ? esc(n.id.slice(0, 19)) : ""}</code></td><td>${link(n)}</td></tr>`,
  )
  .join("\n")}
</table>
${amis.length ? `<h2>AMIs</h2>\n${amis.map(amiSection).join("\n")}` : ""}
<h2>Package changes</h2>
${withPackages.length ? withPackages.map(packageTable).join("\n") : "<p>No package changes in what this run built.</p>"}
${nightlySection(record)}
</body>
</html>
`;
}
