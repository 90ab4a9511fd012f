/**
 * What must go even when bake is forced to stop (a second SIGINT/SIGTERM, the usual CI cancel):
 * what holds secrets — a boot test's host container and the containers its services started
 * (pass_env values in their environment), a VM boot copy (the runtime env file on its disk).
 * Each registers its clean-up while it exists and releases it once removed; the forced stop
 * runs every clean-up still registered, bounded in time, before bake exits. What a forced stop
 * still leaves (an engine that did not answer in time), `bake prune` finds by its owner.
 */
type Cleanup = () => unknown;

const registered = new Set<Cleanup>();

/** Registers a clean-up for a forced stop; the returned function releases it. */
export function cleanUpOnForcedStop(cleanup: Cleanup): () => void {
  registered.add(cleanup);
  return () => void registered.delete(cleanup);
}

/** Runs every registered clean-up at once, for at most `timeoutMs`; returns how many ran. */
export async function runForcedCleanups(timeoutMs = 10_000): Promise<number> {
  const all = [...registered];
  registered.clear();
  let timer: NodeJS.Timeout | undefined;
  const bound = new Promise<void>((resolve) => {
    timer = setTimeout(resolve, timeoutMs);
  });
  await Promise.race([Promise.allSettled(all.map(async (c) => c())), bound]);
  clearTimeout(timer);
  return all.length;
}
