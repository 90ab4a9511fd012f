/** `bake doctor` against the real services: one line per check, a fix for each failure. */
import { test } from "uvu";
import * as assert from "uvu/assert";
import { symlinkSync, writeFileSync } from "node:fs";
import { createServer } from "node:http";
import type { AddressInfo } from "node:net";
import path from "node:path";
import { bake, ROOT, tempDir } from "../helpers/bake.js";
import { MOTO, motoEnv } from "../helpers/moto.js";

const env = { ...motoEnv, BAKE_REGISTRY: "127.0.0.1:5000" };

// The reference app-host's bundle bucket, on moto's S3.
test.before(async () => {
  const res = await fetch(`${MOTO}/app-host-bundles`, { method: "PUT" });
  assert.ok(res.ok || res.status === 409, `bucket: HTTP ${res.status}`);
});

test("all services up: every check ok, exit 0", async () => {
  const r = await bake(["doctor"], { cwd: ROOT, env });
  assert.is(r.code, 0, r.stdout + r.stderr);
  for (const name of ["bake.yml", "docker engine", "registry", "packer", "ansible-playbook", "goss", "qemu", "aws"])
    assert.match(r.stdout, new RegExp(`^ok\\s+${name}`, "m"));
  assert.match(r.stdout, /^ok\s+goss\s+v0\.4\.9 at \/usr\/local\/bin\/goss$/m);
  assert.match(r.stdout, /registry\s+127\.0\.0\.1:5000 answers/);
  assert.match(
    r.stdout,
    /docker engine\s+\S+ \(API 1\.\d+\) at unix:\/\/\/var\/run\/docker\.sock \(unix\); builds through BuildKit with a session$/m,
  );
  assert.match(r.stdout, /packer\s+1\.\d+\.\d+/);
  assert.match(r.stdout, `endpoint ${MOTO} answers in us-east-1`);
  assert.match(r.stdout, /^ok\s+qemu\s+qemu-system-x86_64 \d+\.\d+\.\d+\S*; accelerator (kvm|tcg|not probed yet)/m);
  const forced = await bake(["doctor"], { cwd: ROOT, env: { ...env, BAKE_QEMU_ACCELERATOR: "tcg" } });
  assert.match(forced.stdout, /^ok\s+qemu\s+qemu-system-x86_64 \S+; accelerator tcg \(BAKE_QEMU_ACCELERATOR\)$/m);
});

test("--json gives the checks as data", async () => {
  const r = await bake(["doctor", "--json"], { cwd: ROOT, env });
  const checks = JSON.parse(r.stdout).checks as { name: string; status: string }[];
  assert.equal(
    checks.map((c) => c.name),
    [
      "bake.yml",
      "docker engine",
      "registry",
      "packer",
      "ansible-playbook",
      "goss",
      "qemu",
      "aws",
      "x509 app-host",
      "bucket app-host",
    ],
  );
});

test("engine and registry down, no packer, no credentials: each failure says how to fix it, exit 1", async () => {
  const bin = tempDir("bake-path-");
  symlinkSync("/usr/bin/ansible-playbook", path.join(bin, "ansible-playbook"));
  const r = await bake(["doctor"], {
    cwd: ROOT,
    env: { DOCKER_HOST: "unix:///tmp/no-engine.sock", BAKE_REGISTRY: "127.0.0.1:5999", PATH: bin },
  });
  assert.is(r.code, 1, r.stdout + r.stderr);
  assert.match(
    r.stdout,
    /^FAIL\s+docker engine\s+docker engine unreachable at unix:\/\/\/tmp\/no-engine\.sock.*\n\s+fix: make services/m,
  );
  assert.match(r.stdout, /^FAIL\s+registry\s+127\.0\.0\.1:5999 unreachable.*\n\s+fix: make services/m);
  assert.match(r.stdout, /^FAIL\s+packer\s+packer is not installed: run make setup\n\s+fix: make setup/m);
  assert.match(r.stdout, /^warn\s+aws\s+no AWS credentials.*\n\s+fix: export AWS_PROFILE/m);
  assert.match(r.stdout, /^ok\s+ansible-playbook/m);
  // The reference bake.yml has test: specs, so goss is needed.
  // The reference bake.yml has a vm: disk, so QEMU is needed.
  assert.match(
    r.stdout,
    /^FAIL\s+qemu\s+qemu-system-x86_64 is not installed .*; bake\.yml has vm: disks \(--target vm\)\n\s+fix: make setup/m,
  );
  assert.match(
    r.stdout,
    /^FAIL\s+goss\s+not found \(not on PATH\); bake\.yml has test: specs\n\s+fix: make setup, or set BAKE_GOSS/m,
  );
});

test("a registry and an AWS endpoint that take the connection and never answer: each is named as not answering within 10 s", async () => {
  const silent = createServer(() => undefined); // holds every connection, answers nothing
  await new Promise<void>((resolve) => silent.listen(0, "127.0.0.1", resolve));
  const port = (silent.address() as AddressInfo).port;
  try {
    const r = await bake(["doctor"], {
      cwd: ROOT,
      env: { ...env, BAKE_REGISTRY: `127.0.0.1:${port}`, AWS_ENDPOINT_URL: `http://127.0.0.1:${port}` },
    });
    assert.is(r.code, 1, r.stdout + r.stderr);
    assert.match(
      r.stdout,
      new RegExp(`^FAIL\\s+registry\\s+127\\.0\\.0\\.1:${port} unreachable \\(no answer within 10s\\)$`, "m"),
    );
    assert.match(
      r.stdout,
      new RegExp(`^FAIL\\s+aws\\s+endpoint http://127\\.0\\.0\\.1:${port} in us-east-1: no answer within 10s$`, "m"),
    );
    assert.match(r.stdout, /^FAIL\s+bucket app-host\s+s3:\/\/app-host-bundles: no answer within 10s$/m);
  } finally {
    silent.closeAllConnections?.();
    silent.close();
  }
});

test("an instance-store AMI: the bundle's x509 pair is named (warn), readable (ok) or missing (FAIL)", async () => {
  const unset = await bake(["doctor"], {
    cwd: ROOT,
    env: { ...env, BAKE_X509_CERT: undefined, BAKE_X509_KEY: undefined },
  });
  assert.match(
    unset.stdout,
    /^warn\s+x509 app-host\s+BAKE_X509_CERT and BAKE_X509_KEY not set: bake ami app-host --target aws needs/m,
  );
  const dir = tempDir("bake-x509-");
  for (const f of ["cert.pem", "key.pem"]) writeFileSync(path.join(dir, f), "not a real pem\n");
  const ok = await bake(["doctor"], {
    cwd: ROOT,
    env: { ...env, BAKE_X509_CERT: path.join(dir, "cert.pem"), BAKE_X509_KEY: path.join(dir, "key.pem") },
  });
  assert.match(ok.stdout, /^ok\s+x509 app-host\s+certificate \S+cert\.pem, key \S+key\.pem$/m);
  const missing = await bake(["doctor"], {
    cwd: ROOT,
    env: { ...env, BAKE_X509_CERT: path.join(dir, "cert.pem"), BAKE_X509_KEY: path.join(dir, "nope.pem") },
  });
  assert.is(missing.code, 1);
  assert.match(missing.stdout, /^FAIL\s+x509 app-host\s+BAKE_X509_KEY=\S+nope\.pem: not a readable file/m);
});

test("an instance-store AMI's bundle bucket: ok when it exists, FAIL with the command that makes it when not", async () => {
  const ok = await bake(["doctor"], { cwd: ROOT, env });
  assert.match(ok.stdout, /^ok\s+bucket app-host\s+s3:\/\/app-host-bundles exists and answers \(us-east-1\)$/m);
  const missing = await bake(["doctor"], {
    cwd: ROOT,
    env: { ...env, BUNDLE_BUCKET: `no-such-bucket-${process.pid}` },
  });
  assert.is(missing.code, 1);
  assert.match(
    missing.stdout,
    new RegExp(
      `^FAIL\\s+bucket app-host\\s+s3://no-such-bucket-${process.pid} does not exist: app-host's bundle is uploaded there\\n\\s+fix: create it in us-east-1 \\(aws s3 mb s3://no-such-bucket-${process.pid} --region us-east-1\\)`,
      "m",
    ),
  );
});

test("BAKE_GOSS names the goss binary bake uses", async () => {
  const r = await bake(["doctor"], {
    cwd: ROOT,
    env: { ...env, BAKE_GOSS: "/usr/local/bin/goss", PATH: "/usr/bin:/bin" },
  });
  assert.match(r.stdout, /^ok\s+goss\s+v0\.4\.9 at \/usr\/local\/bin\/goss \(BAKE_GOSS\)$/m);
});

test.run();
