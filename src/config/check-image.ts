/**
 * An image's entry in bake.yml checked beyond the schema: its place in the graph (parent, layer),
 * its sources (rootfs, from), the files it names (inside the project and there), build args,
 * secrets, its run: contract and its goss test.
 */
import path from "node:path";
import type { DebootstrapEntry, ImageEntry, TestEntry } from "./schema.js";
import { checkRun } from "./check-run.js";
import { TEST_RETRY, type ImageNode, type Layer, type RootfsSpec, type TestSpec } from "./model.js";
import type { SourceMap, YamlPath } from "./source-map.js";
import { splitCredentials, stripCredentials } from "./url-credentials.js";
import { ENV_NAME, kindOf, type Report } from "./check-report.js";

export function checkImage(
  name: string,
  img: ImageEntry,
  layer: Layer,
  layers: Map<string, Layer>,
  at: YamlPath,
  dir: string,
  map: SourceMap,
  err: Report,
): ImageNode {
  const node: ImageNode = { name, layer, parent: img.parent, args: {}, position: map.locate(at, true) };
  checkLineage(name, img, layer, layers, at, err);
  checkSources(node, img, at, dir, err);
  checkBuildFiles(node, img, at, dir, err);
  checkArgs(node, img, at, err);
  if (img.run) node.run = checkRun(img.run, [...at, "run"], err);
  if (img.test !== undefined) node.test = checkTest(img.test, [...at, "test"], dir, err, map);
  if (img.secrets) node.secrets = checkSecrets(img.secrets, at, dir, err);
  return node;
}

/** A base has exactly one source and no run:; a service or release has a parent that exists, is not a release, and a Dockerfile. */
function checkLineage(
  name: string,
  img: ImageEntry,
  layer: Layer,
  layers: Map<string, Layer>,
  at: YamlPath,
  err: Report,
): void {
  if (img.parent === undefined) {
    if (layer === "release")
      err(
        [...at, "run"],
        `image "${name}" has run: but no parent`,
        "a release is built on a base or service image: add parent: <image>",
      );
    const sources = ["rootfs", "from"].filter((k) => (img as any)[k] !== undefined);
    if (sources.length !== 1) {
      err(
        at,
        `base image "${name}" needs exactly one of rootfs: or from:`,
        sources.length ? "keep one of them" : "add rootfs: { debootstrap: {...} } or from: <image>, or a parent:",
        true,
      );
    }
  } else {
    if (img.parent === name)
      err([...at, "parent"], `image "${name}" is its own parent`, "point parent: at another image");
    else if (!layers.has(img.parent))
      err(
        [...at, "parent"],
        `parent "${img.parent}" of image "${name}" is not defined`,
        `define images.${img.parent}, or use one of: ${[...layers.keys()].join(", ")}`,
      );
    else {
      const parentLayer = layers.get(img.parent)!;
      // A release stands on a service or straight on a base: base → service → release is the
      // reference's shape, not a rule (a two-layer graph needs no pass-through service).
      if (parentLayer === "release")
        err(
          [...at, "parent"],
          `parent "${img.parent}" of "${name}" is a release`,
          "releases are leaves: build on the service or base below it instead",
        );
    }
    for (const k of ["rootfs", "from"] as const)
      if (img[k] !== undefined)
        err([...at, k], `image "${name}" has a parent, so it cannot also have ${k}:`, `remove ${k}: or parent:`, true);
    if (img.dockerfile === undefined)
      err(
        at,
        `image "${name}" has a parent but no dockerfile:`,
        "services and releases are built from a Dockerfile: add dockerfile: path/to/Dockerfile",
        true,
      );
  }
}

/** A base's rootfs (a tarball inside the project, or a debootstrap spec) or upstream image. */
function checkSources(node: ImageNode, img: ImageEntry, at: YamlPath, dir: string, err: Report): void {
  const name = node.name;
  if (img.rootfs) {
    const kinds = Object.keys(img.rootfs);
    if (kinds.length !== 1)
      err(
        [...at, "rootfs"],
        `rootfs of "${name}" needs exactly one of debootstrap: or tar:`,
        kinds.length ? "keep one of them" : "add debootstrap: { suite: bookworm } or tar: path/to/rootfs.tar",
      );
    else if (img.rootfs.tar !== undefined) {
      const tar = path.resolve(dir, img.rootfs.tar);
      if (!err.outside([...at, "rootfs", "tar"], "rootfs tarball", img.rootfs.tar, tar) && kindOf(tar) !== "file")
        err([...at, "rootfs", "tar"], `rootfs tarball ${img.rootfs.tar} does not exist`, `looked for ${tar}`);
      node.rootfs = { tar };
    } else if (img.rootfs.debootstrap) {
      node.rootfs = checkDebootstrap(img.rootfs.debootstrap, [...at, "rootfs", "debootstrap"], err);
    }
  }
  if (img.from !== undefined) {
    if (!/^[a-z0-9][a-zA-Z0-9._\-/:@]*$/.test(img.from) || /\s/.test(img.from))
      err(
        [...at, "from"],
        `from: "${img.from}" is not an image reference`,
        "e.g. debian:bookworm-slim or 127.0.0.1:5000/upstream/debian:12",
      );
    node.from = img.from;
  }
}

/** The Dockerfile and build context: files inside the project (or allowed from outside) that exist. */
function checkBuildFiles(node: ImageNode, img: ImageEntry, at: YamlPath, dir: string, err: Report): void {
  const name = node.name;
  if (img.dockerfile !== undefined) {
    const file = path.resolve(dir, img.dockerfile);
    if (!err.outside([...at, "dockerfile"], "Dockerfile", img.dockerfile, file) && kindOf(file) !== "file")
      err([...at, "dockerfile"], `Dockerfile ${img.dockerfile} does not exist`, `looked for ${file}`);
    node.dockerfile = file;
    node.context = path.dirname(file);
  }
  if (img.context !== undefined) {
    const ctx = path.resolve(dir, img.context);
    if (!err.outside([...at, "context"], "build context", img.context, ctx) && kindOf(ctx) !== "dir")
      err([...at, "context"], `build context ${img.context} is not a folder`, `looked for ${ctx}`);
    if (img.dockerfile === undefined)
      err(
        [...at, "context"],
        `image "${name}" has a context: but no dockerfile:`,
        "add dockerfile:, or remove context:",
        true,
      );
    node.context = ctx;
  }
}

function checkArgs(node: ImageNode, img: ImageEntry, at: YamlPath, err: Report): void {
  for (const [k, v] of Object.entries(img.args ?? {})) {
    if (!ENV_NAME.test(k))
      err(
        [...at, "args", k],
        `build arg name "${k}" is not valid`,
        "use letters, digits and _, not starting with a digit",
        true,
      );
    if (k === "BAKE_PARENT")
      err([...at, "args", k], "BAKE_PARENT is set by bake to the parent's image id", "remove it from args:", true);
    node.args[k] = String(v);
  }
}

/** Build secrets: each from an environment variable or a file inside the project. */
function checkSecrets(
  entries: NonNullable<ImageEntry["secrets"]>,
  at: YamlPath,
  dir: string,
  err: Report,
): NonNullable<ImageNode["secrets"]> {
  const secrets: NonNullable<ImageNode["secrets"]> = {};
  for (const [id, from] of Object.entries(entries)) {
    const where = [...at, "secrets", id];
    if (!/^[A-Za-z0-9_.-]+$/.test(id)) err(where, `secret id "${id}" is not valid`, "letters, digits, _ . -", true);
    if ((from.env === undefined) === (from.file === undefined))
      err(where, `secret "${id}" needs exactly one of env: or file:`, "e.g. { env: NPM_TOKEN }");
    else if (from.env !== undefined && !ENV_NAME.test(from.env))
      err([...where, "env"], `"${from.env}" is not a valid environment variable name`);
    else if (from.file !== undefined) {
      const file = path.resolve(dir, from.file);
      if (!err.outside([...where, "file"], "secret file", from.file, file) && kindOf(file) !== "file")
        err([...where, "file"], `secret file ${from.file} does not exist`, `looked for ${file}`);
      secrets[id] = { file };
      continue;
    }
    secrets[id] = { env: from.env };
  }
  return secrets;
}

/** A debootstrap spec: its suite and mirror checked, the mirror's credentials kept apart. */
export function checkDebootstrap(d: DebootstrapEntry, at: YamlPath, err: Report): RootfsSpec {
  if (!/^[a-z][a-z0-9-]*$/.test(d.suite))
    err([...at, "suite"], `debootstrap suite "${d.suite}" is not a suite name`, "e.g. bookworm");
  if (d.mirror !== undefined && !/^(https?|file):\/\/\S+$/.test(d.mirror))
    err([...at, "mirror"], `mirror "${stripCredentials(d.mirror)}" is not an http(s):// or file:// URL`);
  const mirror = d.mirror === undefined ? undefined : splitCredentials(d.mirror);
  return {
    debootstrap: { suite: d.suite, variant: d.variant, include: [...(d.include ?? [])].sort(), mirror: mirror?.url },
    ...(mirror?.credentials ? { mirrorCredentials: mirror.credentials } : {}),
  };
}

export function checkTest(test: TestEntry, at: YamlPath, dir: string, err: Report, map: SourceMap): TestSpec {
  const entry = typeof test === "string" ? { spec: test } : test;
  const file = (key: "spec" | "vars", value: string) => {
    const where = typeof test === "string" ? at : [...at, key];
    const resolved = path.resolve(dir, value);
    if (
      !err.outside(where, key === "spec" ? "goss spec" : "goss vars file", value, resolved) &&
      kindOf(resolved) !== "file"
    )
      err(
        where,
        `${key === "spec" ? "goss spec" : "goss vars file"} ${value} does not exist`,
        `looked for ${resolved}`,
      );
    return resolved;
  };
  const options: { retry_timeout?: string; sleep?: string } = typeof test === "string" ? {} : test;
  return {
    spec: file("spec", entry.spec),
    ...(entry.vars !== undefined ? { vars: file("vars", entry.vars) } : {}),
    retryTimeout: options.retry_timeout ?? TEST_RETRY.retryTimeout,
    sleep: options.sleep ?? TEST_RETRY.sleep,
    position: map.locate(at),
  };
}
