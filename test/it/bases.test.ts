/** Base images from an upstream image (through the local registry) and from debootstrap. */
import { test } from "uvu";
import * as assert from "uvu/assert";
import { execa } from "execa";
import { bake, tempTree } from "../helpers/bake.js";
import { busyboxImage, docker, removeProject, uniqueProject } from "../helpers/engine.js";

const project = uniqueProject("bases-it");
const upstream = `127.0.0.1:5000/bake-test-upstream/busybox:${process.pid}`;

test.after(async () => {
  await removeProject(project);
  await removeProject(`${project}-deb`);
});

const plan = async (cwd: string, extra: string[] = []) =>
  JSON.parse((await bake(["plan", "--json", "--target", "local", ...extra], { cwd })).stdout).nodes as {
    name: string;
    key: string;
    status: string;
    reason: string;
  }[];

test("from: an upstream image — pinned by digest; a moved tag rebuilds only with --pull", async () => {
  const busybox = await busyboxImage();
  await docker.getImage(busybox).tag({ repo: upstream.split(":").slice(0, 2).join(":"), tag: String(process.pid) });
  await execa("docker", ["push", upstream]);
  const dir = tempTree({
    "bake.yml": `project: ${project}\nimages:\n  base: { from: "${upstream}" }\n  svc: { parent: base, dockerfile: svc/Dockerfile }\n`,
    "svc/Dockerfile": "ARG BAKE_PARENT\nFROM ${BAKE_PARENT}\nRUN echo svc > /svc\n",
  });
  const first = await bake(["build", "--json"], { cwd: dir });
  assert.is(first.code, 0, first.stderr);
  const built = JSON.parse(first.stdout).images;
  assert.is(built.base.action, "built");
  const base = await docker.getImage(built.base.id).inspect();
  assert.match(
    JSON.parse(base.Config.Labels["bake.inputs"]).from,
    new RegExp(`^${upstream.replace(/[.]/g, "\\.")}@sha256:[0-9a-f]{64}$`),
  );

  // Move the tag in the registry to a patched image, while this engine keeps the old one under it.
  const old = (await docker.getImage(upstream).inspect()).Id;
  await execa("docker", ["build", "-t", upstream, "-"], {
    input: `FROM ${upstream}\nRUN echo patched > /patched\n`,
    env: { DOCKER_BUILDKIT: "0" },
  });
  await execa("docker", ["push", upstream]);
  await docker.getImage(old).tag({ repo: upstream.split(":").slice(0, 2).join(":"), tag: String(process.pid) });
  const quiet = await plan(dir);
  assert.equal(
    quiet.map((n) => n.status),
    ["cached", "cached"],
    "without --pull the local digest stands",
  );
  const fresh = await plan(dir, ["--pull"]);
  assert.equal(
    fresh.map((n) => n.status),
    ["build", "build"],
  );
  assert.match(fresh[0].reason, /^upstream image changed since [0-9a-f]{12}$/);
  assert.match(fresh[1].reason, /^parent image changed since/);
  const second = await bake(["build", "--pull", "--json"], { cwd: dir });
  assert.is(second.code, 0, second.stderr);
  const rebuilt = JSON.parse(second.stdout).images;
  assert.equal([rebuilt.base.action, rebuilt.svc.action], ["built", "built"]);
  const { stdout } = await execa("docker", ["run", "--rm", rebuilt.svc.id, "cat", "/patched", "/svc"]);
  assert.is(stdout, "patched\nsvc");
});

test("from: an image the registry does not have is reported, not built", async () => {
  const dir = tempTree({
    "bake.yml": `project: ${project}-missing\nimages:\n  base: { from: "127.0.0.1:5000/bake-test-upstream/nothing:here" }\n`,
  });
  const p = await bake(["plan", "--json", "--target", "local"], { cwd: dir });
  assert.is(p.code, 0, p.stderr);
  const node = JSON.parse(p.stdout).nodes[0];
  assert.equal([node.key, node.status], [null, "unknown"]);
  assert.match(node.reason, /upstream image 127\.0\.0\.1:5000\/bake-test-upstream\/nothing:here not found/);
  const b = await bake(["build"], { cwd: dir });
  assert.is(b.code, 2);
  assert.match(b.stderr, /cannot build base/);
});

test("a debootstrap base (the reference spec): python3 runs in the built image", async () => {
  const dir = tempTree({
    "bake.yml": `project: ${project}-deb
images:
  base:
    rootfs:
      debootstrap: { suite: bookworm, variant: minbase, include: [python3, ca-certificates] }
  app: { parent: base, dockerfile: app/Dockerfile }
`,
    "app/Dockerfile": "ARG BAKE_PARENT\nFROM ${BAKE_PARENT}\nRUN python3 -c 'print(2 + 2)' > /four\n",
  });
  const r = await bake(["build", "--json"], { cwd: dir });
  assert.is(r.code, 0, r.stderr);
  const images = JSON.parse(r.stdout).images;
  const { stdout } = await execa("docker", [
    "run",
    "--rm",
    images.app.id,
    "sh",
    "-c",
    "cat /four /etc/debian_version; python3 --version",
  ]);
  assert.match(stdout, /^4\n12\.\d+\nPython 3\.11\.\d+$/);
  // What debootstrap downloaded and apt's lists are not in the base, as in Debian's own images.
  const leftovers = await execa("docker", [
    "run",
    "--rm",
    images.base.id,
    "find",
    "/var/cache/apt",
    "/var/lib/apt/lists",
    "-type",
    "f",
    "(",
    "-name",
    "*.deb",
    "-o",
    "-name",
    "*.bin",
    "-o",
    "-name",
    "*_InRelease",
    "-o",
    "-name",
    "*_Packages*",
    ")",
  ]);
  assert.is(leftovers.stdout, "");
  const again = await bake(["build", "--json"], { cwd: dir });
  assert.equal(
    Object.values(JSON.parse(again.stdout).images).map((i: any) => i.action),
    ["cached", "cached"],
  );

  // The base's package list, read from its dpkg database without running it, is what dpkg-query
  // run inside the image prints.
  const sbom = await bake(["sbom", "base", "--format", "cyclonedx-json"], { cwd: dir });
  assert.is(sbom.code, 0, sbom.stderr);
  const listed = JSON.parse(sbom.stdout)
    .components.map((c: any) => `${c.name} ${c.version}`)
    .sort();
  const query = await execa("docker", [
    "run",
    "--rm",
    images.base.id,
    "dpkg-query",
    "-W",
    "-f",
    "${db:Status-Status} ${Package} ${Version}\\n",
  ]);
  const reference = query.stdout
    .split("\n")
    .filter((l) => l.startsWith("installed "))
    .map((l) => l.slice("installed ".length))
    .sort();
  assert.ok(reference.length > 80, `a minbase with python3 has over 80 packages: ${reference.length}`);
  assert.equal(listed, reference);
  assert.ok(
    listed.some((l: string) => /^python3\.11 3\.11\./.test(l)) && listed.some((l: string) => l.startsWith("libc6 ")),
    listed.join(", "),
  );
  assert.match(
    JSON.parse(sbom.stdout).components.find((c: any) => c.name === "libc6").purl,
    /^pkg:deb\/debian\/libc6@[^?]+\?arch=amd64&distro=debian-12&upstream=glibc$/,
  );
});

test.run();
