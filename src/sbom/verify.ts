/**
 * `bake verify`'s comparisons, pure: the key recomputed from the working tree against the
 * provenance statement, and the statement against the image the engine holds.
 */
import { shortKey } from "../config/model.js";
import type { InputDigests } from "../graph/keys.js";
import { statementKey, type Statement } from "../state/provenance-file.js";

export interface VerifyCheck {
  name: string;
  ok: boolean;
  detail: string;
}

/** What differs between the statement's files and the working tree's (paths relative to the project). */
export function fileChanges(
  recorded: Statement,
  now: { path: string; digest: string }[],
): { changed: string[]; added: string[]; removed: string[] } {
  const was = new Map(
    recorded.predicate.buildDefinition.resolvedDependencies
      .filter((d) => d.uri?.startsWith("file:"))
      .map((d) => [d.uri!.slice(5), d.digest.sha256]),
  );
  const is = new Map(now.map((f) => [f.path, f.digest]));
  return {
    changed: [...is].filter(([p, d]) => was.has(p) && was.get(p) !== d).map(([p]) => p),
    added: [...is.keys()].filter((p) => !was.has(p)),
    removed: [...was.keys()].filter((p) => !is.has(p)),
  };
}

/** The names of inputs whose digests differ (a parent's key, the Dockerfile, args…). */
export function inputChanges(recorded: InputDigests, now: InputDigests): string[] {
  return [...new Set([...Object.keys(recorded), ...Object.keys(now)])].filter((k) => recorded[k] !== now[k]).sort();
}

export function keyCheck(
  statement: Statement,
  key: string | undefined,
  inputs: InputDigests,
  files: { path: string; digest: string }[] | undefined,
): VerifyCheck {
  const recorded = statementKey(statement);
  if (!key) return { name: "working tree", ok: false, detail: "the key cannot be computed from the working tree" };
  if (recorded === key)
    return { name: "working tree", ok: true, detail: `the working tree's key is the recorded one (${shortKey(key)})` };
  const recordedInputs = (statement.predicate.buildDefinition.internalParameters.inputs ?? {}) as InputDigests;
  const why: string[] = [];
  const names = inputChanges(recordedInputs, inputs);
  if (names.length) why.push(`inputs changed: ${names.join(", ")}`);
  if (files) {
    const f = fileChanges(statement, files);
    if (f.changed.length) why.push(`changed: ${f.changed.join(", ")}`);
    if (f.added.length) why.push(`added: ${f.added.join(", ")}`);
    if (f.removed.length) why.push(`removed: ${f.removed.join(", ")}`);
  }
  return {
    name: "working tree",
    ok: false,
    detail: `the working tree's key ${shortKey(key)} is not the recorded ${shortKey(recorded)}${why.length ? `; ${why.join("; ")}` : ""}`,
  };
}

export function imageCheck(
  statement: Statement,
  image: { id: string; labels: Record<string, string> } | undefined,
): VerifyCheck {
  const id = `sha256:${statement.subject[0].digest.sha256}`;
  if (!image)
    return { name: "image", ok: false, detail: `the engine has no image ${id.slice(0, 19)}, the statement's subject` };
  const key = statementKey(statement);
  const label = image.labels["bake.key"];
  if (label !== key)
    return {
      name: "image",
      ok: false,
      detail: `image ${id.slice(0, 19)} is labelled bake.key=${shortKey(label) ?? "(none)"}, the statement says ${shortKey(key)}`,
    };
  return { name: "image", ok: true, detail: `image ${id.slice(0, 19)} exists, labelled with the recorded key` };
}
