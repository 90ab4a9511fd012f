/** A release's run: contract checked beyond the schema: ports in Docker's short forms, env names, pass_env, health. */
import { isIP } from "node:net";
import type { RunEntry } from "./schema.js";
import type { HealthSpec, PortSpec, RunContract } from "./model.js";
import type { YamlPath } from "./source-map.js";
import { ENV_NAME, type Report } from "./check-report.js";

const HEALTH_PATH = /^\/[A-Za-z0-9\-._~/%?=&+,;:@!*()]*$/;

export function checkRun(run: RunEntry, at: YamlPath, err: Report): RunContract {
  const ports: PortSpec[] = [];
  (run.ports ?? []).forEach((p, i) => {
    const parsed = parsePort(String(p));
    if (typeof parsed === "string")
      err(
        [...at, "ports", i],
        `port "${p}" ${parsed}`,
        'use "8080", "8080:80" or "127.0.0.1:8080:80" (optionally /udp)',
      );
    else ports.push(parsed);
  });
  const env: Record<string, string> = {};
  for (const [k, v] of Object.entries(run.env ?? {})) {
    if (!ENV_NAME.test(k))
      err(
        [...at, "env", k],
        `environment variable name "${k}" is not valid`,
        "use letters, digits and _, not starting with a digit",
        true,
      );
    env[k] = String(v);
  }
  const passEnv = run.pass_env ?? [];
  passEnv.forEach((n, i) => {
    if (!ENV_NAME.test(n))
      err(
        [...at, "pass_env", i],
        `pass_env name "${n}" is not a valid environment variable name`,
        "use letters, digits and _, not starting with a digit",
      );
    else if (n in env) err([...at, "pass_env", i], `"${n}" is in both env: and pass_env:`, "keep it in one of them");
  });
  let health: HealthSpec | undefined;
  if (run.health) {
    const h = run.health;
    if ((h.http === undefined) === (h.cmd === undefined))
      err(
        [...at, "health"],
        "health needs exactly one of http: or cmd:",
        "e.g. health: { http: /healthz, port: 8080 }",
      );
    if (h.http !== undefined && !h.http.startsWith("/"))
      err([...at, "health", "http"], `health path "${h.http}" must start with /`, `write /${h.http}`);
    // The path goes into the container's shell health command: URL characters only, no quote or $.
    else if (h.http !== undefined && !HEALTH_PATH.test(h.http))
      err(
        [...at, "health", "http"],
        `health path "${h.http}" may hold only URL characters`,
        "letters, digits and - . _ ~ / % ? = & + , ; : @ ! * ( ); percent-encode anything else",
      );
    if (h.http !== undefined && h.port === undefined)
      err([...at, "health"], "an http health check needs port:", "add port: <the container port that serves it>");
    health = {
      http: h.http,
      port: h.port,
      cmd: h.cmd,
      interval: h.interval ?? 5,
      // Long enough for a probe that starts an interpreter on a small or emulated host (~4 s seen
      // under TCG); Docker's own default is 30 s.
      timeout: h.timeout ?? 10,
      retries: h.retries ?? 10,
    };
  }
  return { ports, env, passEnv, command: run.command, health };
}

/** Docker's short port forms. Returns a reason string when the text is not one of them. */
export function parsePort(text: string): PortSpec | string {
  let spec = text.trim();
  let protocol: "tcp" | "udp" = "tcp";
  const slash = spec.lastIndexOf("/");
  if (slash >= 0) {
    const proto = spec.slice(slash + 1);
    if (proto !== "tcp" && proto !== "udp") return `has an unknown protocol "${proto}"`;
    protocol = proto;
    spec = spec.slice(0, slash);
  }
  let hostIp = "127.0.0.1";
  let rest = spec;
  const ipv6 = /^\[([^\]]+)\]:(.*)$/.exec(spec);
  if (ipv6) {
    hostIp = ipv6[1];
    rest = ipv6[2];
  } else {
    const parts = spec.split(":");
    if (parts.length === 3) {
      hostIp = parts[0];
      rest = `${parts[1]}:${parts[2]}`;
    } else if (parts.length > 3) return "has too many ':'";
  }
  if (!isIP(hostIp)) return `has an invalid address "${hostIp}"`;
  const nums = rest.split(":");
  const toPort = (s: string) => (/^\d{1,5}$/.test(s) && +s >= 1 && +s <= 65535 ? +s : undefined);
  if (nums.length === 1) {
    const c = toPort(nums[0]);
    return c === undefined ? "is not a port between 1 and 65535" : { hostIp, containerPort: c, protocol };
  }
  const host = nums[0] === "" ? undefined : toPort(nums[0]);
  const container = toPort(nums[1]);
  if ((nums[0] !== "" && host === undefined) || container === undefined) return "is not a port between 1 and 65535";
  return { hostIp, hostPort: host, containerPort: container, protocol };
}
