/**
 * One bake of an AMI key, once the plan says bake: the machine's lock on the key (and whatever the
 * target holds besides, the account's lease on AWS), a last look for the key, then the shipped
 * images built, the folder rendered and the target's bake (targets/).
 */
import { rmSync } from "node:fs";
import { KEY_TAG_LENGTH, type AmiNode } from "../config/model.js";
import type { Pipeline, Tools } from "../state/read.js";
import { executeBuild } from "../images/execute.js";
import { amiBakeLock, packerEnvironment } from "../ami/bake-ami.js";
import { bootPassEnv } from "../host/local-host.js";
import { gitInfo } from "../tools/git.js";
import { withLock } from "../files/process-lock.js";
import { requireGoss } from "../tools/goss.js";
import { targetOf } from "../targets/index.js";
import type { BakeOutcome, BakeRun } from "../targets/target.js";

/** Holds the key's lock (and the target's hold), looks again for the key, and bakes only when it is still missing. */
export async function bakeOnce(pipeline: Pipeline, ami: AmiNode, tools: Tools, run: BakeRun): Promise<BakeOutcome> {
  const key12 = run.key.slice(0, KEY_TAG_LENGTH);
  return withLock(
    amiBakeLock(pipeline.config.project, run.dir),
    async (lost) => {
      // A lock taken over stops the bake as an interrupt would, but the folder and disks the lock
      // guards are the new holder's: the clean-ups leave them (run.lockLost).
      run = { ...run, signal: AbortSignal.any([run.signal, lost]), lockLost: lost };
      try {
        return await bakeHeld(pipeline, ami, tools, run, key12);
      } catch (e) {
        if (lost.aborted) throw lost.reason;
        throw e;
      }
    },
    { signal: run.signal, onWait: (holder) => run.say(`waiting for key ${key12}: ${holder} is baking it`) },
  );
}

/** With the key's lock held: the target's hold, a last look for the key, then the bake. */
async function bakeHeld(
  pipeline: Pipeline,
  ami: AmiNode,
  tools: Tools,
  run: BakeRun,
  key12: string,
): Promise<BakeOutcome> {
  const target = targetOf(run.target);
  const held = target.hold
    ? await target.hold(pipeline, ami, run.key, tools, { signal: run.signal, say: run.say })
    : undefined;
  try {
    const meanwhile = run.force ? undefined : await target.find(pipeline, ami, run.key, tools);
    if (meanwhile) {
      run.say(`another bake finished key ${key12} while this one waited: ${meanwhile}`);
      const regions = await target.whole(pipeline, ami, meanwhile, tools, {
        sourceAmi: run.sourceAmi,
        revision: run.revision,
        signal: run.signal,
        onLine: run.say,
      });
      return { regions, action: "existing", images: {} };
    }
    return await bake(pipeline, ami, tools, run);
  } finally {
    await held
      ?.release()
      .catch((e: Error) => run.say(`the AWS lease ${held.name} was not released (it expires by itself): ${e.message}`));
  }
}

async function bake(pipeline: Pipeline, ami: AmiNode, tools: Tools, run: BakeRun): Promise<BakeOutcome> {
  const target = targetOf(run.target);
  // The AMI's test runs after the Packer run (or as its last step): without goss, stop now.
  if (ami.test) requireGoss();
  const { secrets, withheld } = packerEnvironment(pipeline, ami, target.variables(ami).sensitive);
  // A boot test hands the host its pass_env values as user-data would: all must be set (exit 2), before anything builds.
  const passEnv = target.bootsHere && run.bootTest ? bootPassEnv(pipeline, ami) : {};
  if (target.bootsHere && !run.bootTest) run.say("boot test: skipped (--no-boot-test): the host is baked, not booted");
  const docker = tools.docker();
  const built = await executeBuild(
    pipeline,
    run.plan.filter((e) => e.kind === "image"),
    docker,
    () => gitInfo(pipeline.config.dir),
    run.logs,
    {
      noCache: false,
      push: false,
      concurrency: 2,
      tags: [],
      signal: run.signal,
      plain: Boolean(process.env.CI) || !process.stderr.isTTY,
    },
  );
  const state = pipeline.state.images.ok ? pipeline.state.images.value : [];
  for (const r of built)
    if (!state.some((s) => s.id === r.id))
      state.push({ id: r.id, tags: r.tags, node: r.name, key: r.key, created: Date.now() / 1000 });
  await target.checkBuilt?.(pipeline, ami, docker);
  rmSync(run.dir, { recursive: true, force: true });
  const folder = await target.render(pipeline, ami, run.dir, run.packer, {
    sourceAmi: run.sourceAmi,
    revision: run.revision,
  });
  return target.bake({ pipeline, ami, run, tools, docker, folder, built, env: { secrets, withheld, passEnv } });
}
