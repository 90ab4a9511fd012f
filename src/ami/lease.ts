/**
 * The AWS lease: one bake of an AMI key at a time across machines (two CI runners, one account),
 * held by the account itself, so it needs no service besides EC2 and no permission Packer does
 * not already need (key pairs).
 *
 * A lease is a key pair named `bake-lease-<project>-<ami>-<key12>-g<N>`. Creating a key pair is
 * atomic by name, so of two bakes creating the same generation one wins. The holder tags it
 * with who holds it and until when (`bake:lease-expires`) and renews that while it bakes. A
 * waiter polls; when the newest generation has expired (its holder died or lost its network),
 * the waiter creates the next generation, and again only one wins. Release deletes the holder's
 * own generation, by a name no other bake can hold. A holder that finds a newer generation when it
 * renews has lost the lease (it stalled past the expiry) and says so; the AMI it bakes still
 * carries the key, and the newest AMI with a key is the one bake returns.
 * Guarantees: while the holder renews, no second bake of the key starts anywhere; a dead holder
 * delays others by at most the TTL; clocks must agree to well within the TTL.
 */
import { hostname } from "node:os";
import { interruption } from "../errors.js";
import type { Ec2Tool } from "../tools/ec2.js";

export const LEASE_TAG = { holder: "bake:lease-holder", expires: "bake:lease-expires" } as const;

export interface LeaseRecord {
  name: string;
  generation: number;
  expires: number;
  holder: string;
}

export function leasePrefix(project: string, ami: string, key12: string): string {
  return `bake-lease-${project}-${ami}-${key12}-g`;
}

/** Pure: the leases of one key as the account lists them, newest generation first. */
export function leaseRecords(prefix: string, pairs: { name: string; tags: Record<string, string> }[]): LeaseRecord[] {
  return pairs
    .map((p) => ({
      name: p.name,
      generation: Number(p.name.slice(prefix.length)),
      expires: Date.parse(p.tags[LEASE_TAG.expires] ?? "") || 0,
      holder: p.tags[LEASE_TAG.holder] ?? "unknown",
    }))
    .filter((l) => Number.isInteger(l.generation) && l.generation > 0)
    .sort((a, b) => b.generation - a.generation);
}

/** Pure: what a bake does next, given the leases and the time. */
export function nextLeaseStep(
  leases: LeaseRecord[],
  now: number,
): { action: "create"; generation: number } | { action: "wait"; holder: string; expires: number } {
  const newest = leases[0];
  if (!newest || newest.expires <= now) return { action: "create", generation: (newest?.generation ?? 0) + 1 };
  return { action: "wait", holder: newest.holder, expires: newest.expires };
}

export interface HeldLease {
  name: string;
  release(): Promise<void>;
}

export function leaseTtlMs(env = process.env): number {
  const s = Number(env.BAKE_AWS_LEASE_TTL);
  return Number.isFinite(s) && s > 0 ? s * 1000 : 10 * 60_000;
}

export async function acquireLease(
  ec2: Ec2Tool,
  region: string,
  prefix: string,
  options: {
    signal?: AbortSignal;
    onWait: (text: string) => void;
    onLost: (text: string) => void;
    ttlMs?: number;
    pollMs?: number;
  },
): Promise<HeldLease> {
  const ttl = options.ttlMs ?? leaseTtlMs();
  const holder = `${hostname()} pid ${process.pid}`;
  const tags = () => ({ [LEASE_TAG.holder]: holder, [LEASE_TAG.expires]: new Date(Date.now() + ttl).toISOString() });
  let told = "";
  for (;;) {
    if (options.signal?.aborted) throw interruption(options.signal);
    const leases = leaseRecords(prefix, await ec2.listKeyPairs(region, prefix));
    const step = nextLeaseStep(leases, Date.now());
    if (step.action === "create") {
      const name = `${prefix}${step.generation}`;
      if (await ec2.createKeyPair(region, name, tags())) {
        // Expired generations are dead holders' leases: removed by the one bake that took over.
        for (const old of leases) await ec2.deleteKeyPair(region, old.name).catch(() => undefined);
        return holdLease(ec2, region, prefix, name, step.generation, tags, ttl, options.onLost);
      }
      continue;
    }
    const text = `waiting for the AWS lease ${prefix.slice(0, -2)}: held by ${step.holder} until ${new Date(step.expires).toISOString()} (renewed while it bakes)`;
    if (text !== told) options.onWait((told = text));
    await new Promise((r) => setTimeout(r, options.pollMs ?? Math.min(10_000, ttl / 4)));
  }
}

function holdLease(
  ec2: Ec2Tool,
  region: string,
  prefix: string,
  name: string,
  generation: number,
  tags: () => Record<string, string>,
  ttl: number,
  onLost: (text: string) => void,
): HeldLease {
  let lost = false;
  const renew = async () => {
    const pairs = await ec2.listKeyPairs(region, prefix);
    const leases = leaseRecords(prefix, pairs);
    const mine = leases.find((l) => l.name === name);
    const newer = leases.find((l) => l.generation > generation);
    if (!mine || newer) {
      if (!lost)
        onLost(
          `lost the AWS lease ${name}${newer ? ` to ${newer.holder}` : ""}: this bake stalled past its expiry; another may bake the same key`,
        );
      lost = true;
      return;
    }
    await ec2.tagKeyPair(region, pairs.find((p) => p.name === name)!.id, tags());
  };
  const timer = setInterval(() => void renew().catch(() => undefined), ttl / 3);
  timer.unref();
  return {
    name,
    async release() {
      clearInterval(timer);
      if (!lost) await ec2.deleteKeyPair(region, name);
    },
  };
}
