/**
 * A run in Markdown for a CI job's summary page (GitHub's GITHUB_STEP_SUMMARY): failures first,
 * then what was rebuilt and why, package changes, and the graph as Mermaid, which GitHub draws.
 * Pure: what it shows comes from the run's record, already redacted.
 */
import { shortKey } from "../config/model.js";
import { mermaidText } from "../plan/picture.js";
import { describeDiff, diffIsEmpty } from "../sbom/package-diff.js";
import { OUTCOME_COLOURS } from "./html.js";
import type { Outcome, RunRecord } from "./record.js";

/** Markdown table cells hold no pipes or line breaks. */
const cell = (s: string) => s.replace(/\|/g, "\\|").replace(/\s+/g, " ").trim();

export function mermaidOf(record: RunRecord): string {
  const id = new Map(record.nodes.map((n, i) => [n.name, `n${i}`]));
  const outcomes = [...new Set(record.nodes.map((n) => n.outcome))];
  const cls = (o: Outcome) => o.replace(" ", "_");
  return [
    "flowchart LR",
    ...record.nodes.map(
      (n) =>
        `  ${id.get(n.name)}["${mermaidText(n.name)}<br/>${n.key ? shortKey(n.key) : "key unknown"} · ${n.outcome}"]:::${cls(n.outcome)}`,
    ),
    ...record.nodes.flatMap((n) => n.deps.filter((d) => id.has(d)).map((d) => `  ${id.get(d)} --> ${id.get(n.name)}`)),
    ...outcomes.map((o) => `  classDef ${cls(o)} fill:${OUTCOME_COLOURS[o].fill},stroke:${OUTCOME_COLOURS[o].line}`),
  ].join("\n");
}

export function stepSummary(record: RunRecord, reportPath: string): string {
  const failed = record.nodes.filter((n) => n.outcome === "failed");
  const rebuilt = record.nodes.filter((n) => n.outcome === "built" || n.outcome === "pulled");
  const changes = record.nodes.filter((n) => n.packages && !diffIsEmpty(n.packages));
  const lines = [
    `### bake ${record.command}: ${record.project} — ${record.exit === 0 ? "passed" : `failed (exit ${record.exit})`}`,
    "",
  ];
  if (failed.length) {
    lines.push("**Failed**", "");
    for (const n of failed) {
      lines.push(`- \`${n.name}\`: ${cell(n.failure?.message ?? "failed")}`);
      for (const c of (n.checks ?? []).filter((x) => !x.ok)) lines.push(`  - check ${cell(c.name)}: ${cell(c.detail)}`);
    }
    lines.push("");
  }
  for (const n of record.nodes.filter((x) => x.regions))
    lines.push(
      `**AMI \`${n.name}\`**: ${Object.entries(n.regions!)
        .map(([where, id]) => `${cell(where)} \`${cell(id)}\``)
        .join(", ")}${n.checks ? ` — checks ${n.checks.filter((c) => c.ok).length} of ${n.checks.length} passed` : ""}`,
      "",
    );
  lines.push("| node | outcome | why | key | time |", "|---|---|---|---|---|");
  for (const n of [...failed, ...rebuilt, ...record.nodes.filter((x) => !failed.includes(x) && !rebuilt.includes(x))])
    lines.push(
      `| ${cell(n.name)} | ${n.outcome} | ${cell(n.reason)} | ${n.key ? `\`${shortKey(n.key)}\`` : ""} | ${n.seconds !== undefined ? `${n.seconds} s` : ""} |`,
    );
  lines.push("");
  if (changes.length) {
    lines.push("**Package changes**", "");
    for (const n of changes) lines.push(`- \`${n.name}\`: ${cell(describeDiff(n.packages!))}`);
    lines.push("");
  }
  if (record.nightly?.pruned.length) {
    lines.push("**Pruned**", "");
    for (const p of record.nightly.pruned) lines.push(`- ${cell(`${p.kind} ${p.name} ${p.id} (${p.where})`)}`);
    lines.push("");
  }
  lines.push("```mermaid", mermaidOf(record), "```", "", `Report: \`${reportPath}\``, "");
  return lines.join("\n");
}
