/** The local host's pure parts: the container that boots it, its runtime environment, its stand-ins. */
import { test } from "uvu";
import * as assert from "uvu/assert";
import { hostContainer, runtimeEnvFile } from "../../src/host/boot-test.js";
import { ENGINE_SOCKET_IN_HOST, ENGINE_STANDIN, STANDIN_UNITS } from "../../src/host/standin.js";
import { httpProbe, runtimeContract } from "../../src/runtime/contract.js";
import { passEnvValues, servicesOf } from "../../src/up/services.js";
import { parseConfig } from "../../src/config/load.js";
import { UsageError } from "../../src/errors.js";
import { execa } from "execa";
import path from "node:path";
import { createServer } from "node:http";
import { mkdtempSync, rmSync, symlinkSync } from "node:fs";
import { hostname, tmpdir } from "node:os";
import { ROOT, tempTree } from "../helpers/bake.js";

test("the boot test's host: systemd as PID 1, unprivileged, no network of its own, the engine's socket where the host's engine would be", () => {
  const c: any = hostContainer(
    { image: "sha256:abc", project: "p", ami: "web", engineSocket: "/var/run/docker.sock" },
    "bake-boot-1a2b3c",
  );
  assert.is(c.name, "bake-boot-1a2b3c-p-web");
  assert.equal(c.Cmd, ["/sbin/init"]);
  assert.equal(c.Labels, {
    "bake.project": "p",
    "bake.namespace": "bake-boot-1a2b3c",
    "bake.boot-test": "web",
    "bake.owner": `${hostname()}:${process.pid}`,
  });
  assert.equal(c.HostConfig.Binds, [
    "/sys/fs/cgroup:/sys/fs/cgroup:ro",
    `/var/run/docker.sock:${ENGINE_SOCKET_IN_HOST}`,
  ]);
  assert.equal(Object.keys(c.HostConfig.Tmpfs), ["/run", "/run/lock"]);
  assert.is(c.HostConfig.NetworkMode, "none");
  assert.not.ok("Privileged" in c.HostConfig);
});

test("the runtime environment the boot test hands the host: pass_env values, its namespace, ports the engine picks", () => {
  assert.is(
    runtimeEnvFile({ TOKEN: "a=b c", API: "x" }, "bake-boot-1"),
    "API=x\nTOKEN=a=b c\nBAKE_NAMESPACE=bake-boot-1\nBAKE_PUBLISH=ephemeral\n",
  );
});

test("the engine's stand-in: docker.service succeeds when the socket answers, its socket and containerd are skipped", () => {
  assert.equal(STANDIN_UNITS, ["docker.service.d", "docker.socket.d", "containerd.service.d"]);
  const service = ENGINE_STANDIN["docker.service.d/bake-standin.conf"];
  assert.match(service, /^ExecStart=$/m);
  assert.match(service, new RegExp(`^ExecStart=/bin/sh -c 'test -S ${ENGINE_SOCKET_IN_HOST}'$`, "m"));
  assert.match(service, /^Type=oneshot$/m);
  assert.match(service, /^Restart=no$/m);
  for (const unit of ["docker.socket.d", "containerd.service.d"])
    assert.match(ENGINE_STANDIN[`${unit}/bake-standin.conf`], /^ConditionPathExists=\/nonexistent/m);
});

test("a host's service contract is bake up's create options without pass_env values", () => {
  const contract = runtimeContract({
    project: "p",
    service: "web",
    image: "p/web:0123456789ab",
    key: "k",
    run: {
      ports: [{ hostIp: "127.0.0.1", hostPort: 8080, containerPort: 80, protocol: "tcp" }],
      env: { A: "1" },
      passEnv: ["TOKEN"],
    },
  });
  assert.equal(contract.ansible.create, { ...contract.create({ TOKEN: "x" }), Env: ["A=1"] });
  assert.equal(contract.create({ TOKEN: "x" }).Env, ["A=1", "TOKEN=x"]);
  assert.not.ok(JSON.stringify(contract.ansible).includes("TOKEN=x"));
});

test("an AMI's services are the releases it names, none when it names none (its boot test then expects no service)", () => {
  const text = `project: p
images:
  base: { from: busybox }
  web: { parent: base, dockerfile: Dockerfile, run: { command: [httpd, -f] } }
  api: { parent: base, dockerfile: Dockerfile, run: { command: [httpd, -f] } }
`;
  const dir = tempTree({ "bake.yml": text, Dockerfile: "ARG BAKE_PARENT\nFROM ${BAKE_PARENT}\n" });
  const config = parseConfig(text, path.join(dir, "bake.yml"), dir, {});
  const keys = new Map(["base", "web", "api"].map((n) => [n, n.padEnd(64, "0")]));
  assert.equal(servicesOf(config, [], keys), []);
  assert.equal(
    servicesOf(config, ["api"], keys).map((s) => [s.release.name, s.contract.create({}).Image]),
    [["api", "p/api:api000000000"]],
  );
  assert.throws(
    () => servicesOf(config, ["base"], keys),
    (e: unknown) => e instanceof UsageError,
  );
});

test("a pass_env value with a line break of any kind, or NUL, is refused naming the variable (exit 2), never cut on a host", () => {
  const release = { name: "web", layer: "release", run: { passEnv: ["PEM", "OK"] } } as any;
  const config = { dir: "/nonexistent-project", file: "bake.yml", images: [release] } as any;
  const services = [{ release }] as any;
  assert.equal(passEnvValues(config, services, { PEM: "one line", OK: "a=b c" }), { PEM: "one line", OK: "a=b c" });
  for (const brk of ["\n", "\r", "\v", "\f", "\x1c", "\x1d", "\x1e", "\x85", "\u2028", "\u2029", "\0"]) {
    assert.throws(
      () => passEnvValues(config, services, { PEM: `-----BEGIN KEY-----${brk}abc`, OK: "x" }),
      (e: any) =>
        e instanceof UsageError &&
        /^pass_env PEM: a value holds a line break or NUL/.test(e.message) &&
        !e.message.includes("BEGIN KEY"),
      JSON.stringify(brk),
    );
  }
  assert.throws(() => runtimeEnvFile({ PEM: "a\nBAKE_PUBLISH=host" }), /pass_env PEM holds a line break/);
});

test("the host's agent reads the runtime env file by \\n lines only: other break characters stay in the value, a CRLF ending goes", async () => {
  const dir = tempTree({ "runtime.env": "A=x\fy\u2028z\x85w\r\nB=plain\n# note\nC=last" });
  const script = `import importlib.util, json, sys\nspec = importlib.util.spec_from_file_location("agent", sys.argv[1])\nagent = importlib.util.module_from_spec(spec)\nspec.loader.exec_module(agent)\nprint(json.dumps(agent.read_env_file(sys.argv[2])))\n`;
  const { stdout } = await execa("python3", [
    "-c",
    script,
    path.join(ROOT, "ansible/bake/roles/bake_agent/files/bake-host.py"),
    path.join(dir, "runtime.env"),
  ]);
  assert.equal(JSON.parse(stdout), { A: "x\fy\u2028z\x85w", B: "plain", C: "last" });
});

test.run();

test("a service's HTTP health probe, run by a shell with python3 and neither wget nor curl (a minimal Debian image): a status below 400 is healthy, an error status or a closed port is not", async () => {
  const seen: string[] = [];
  const server = createServer((req, res) => {
    seen.push(`${req.method} ${req.url} ${req.headers.host}`);
    const status = Number(/status=(\d+)/.exec(req.url ?? "")?.[1] ?? 200);
    res.writeHead(status, status === 302 ? { location: "/elsewhere" } : {}).end("body");
  });
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  const port = (server.address() as { port: number }).port;
  // A PATH with a shell and python3 only, as in an image without wget or curl.
  const bin = mkdtempSync(path.join(tmpdir(), "bake-probe-bin-"));
  const python = (await execa("python3", ["-c", "import sys; print(sys.executable)"])).stdout;
  symlinkSync(python, path.join(bin, "python3"));
  symlinkSync("/bin/sh", path.join(bin, "sh"));
  const probe = async (p: number, at: string) => {
    const [kind, command] = httpProbe(p, at);
    assert.is(kind, "CMD-SHELL");
    return (await execa(path.join(bin, "sh"), ["-c", command], { env: { PATH: bin }, extendEnv: false, reject: false }))
      .exitCode;
  };
  try {
    assert.is(await probe(port, "/healthz"), 0);
    assert.is(await probe(port, "/healthz?status=204"), 0);
    assert.is(await probe(port, "/healthz?status=302"), 0);
    assert.is(await probe(port, "/healthz?status=404"), 1);
    assert.is(await probe(port, "/healthz?status=503"), 1);
    assert.equal(seen.slice(0, 2), [`GET /healthz 127.0.0.1:${port}`, `GET /healthz?status=204 127.0.0.1:${port}`]);
    const closed = await new Promise<number>((r) => {
      const s = createServer().listen(0, "127.0.0.1", () => {
        const p = (s.address() as { port: number }).port;
        s.close(() => r(p));
      });
    });
    assert.is(await probe(closed, "/healthz"), 1);
  } finally {
    server.close();
    rmSync(bin, { recursive: true, force: true });
  }
});
