#!/usr/bin/env node
/** bake's command line: yargs definitions, and the one place errors become exit codes. */
import path from "node:path";
import yargs from "yargs";
import { hideBin } from "yargs/helpers";
import {
  BakeError,
  BuildFailedError,
  ConfigError,
  ConfigErrors,
  EXIT,
  InterruptedError,
  interruption,
  ToolFailedError,
  UsageError,
  exitCodeFor,
} from "./errors.js";
import type { Tools } from "./state/read.js";
import { TARGET_NAMES, type Target } from "./graph/keys.js";
import { ALLOW_PATHS_ENV } from "./config/project-paths.js";
import { applyDockerContext, connectDocker } from "./tools/docker.js";
import { connectEc2 } from "./tools/ec2.js";
import { runForcedCleanups } from "./state/forced-cleanup.js";
import { killProcessGroups } from "./tools/exec.js";
import { bakeVersion } from "./package-root.js";

// Both tools load their SDKs on first use, so a command pays only for what it touches.
const tools: Tools = {
  docker: () => connectDocker({ timeoutMs: 10_000 }),
  ec2: () => connectEc2(),
};

const stdout = (text: string) => process.stdout.write(text.endsWith("\n") ? text : `${text}\n`);
const stderr = (text: string) => process.stderr.write(text.endsWith("\n") ? text : `${text}\n`);

const STOP_SIGNALS: NodeJS.Signals[] = ["SIGINT", "SIGTERM", "SIGHUP"];

/**
 * Runs a command with an AbortSignal that SIGINT, SIGTERM (what CI sends on cancel) and SIGHUP
 * (a closed terminal) trigger. The command stops between steps, cleans up and throws
 * InterruptedError (exit 130); a second signal kills the tools bake started and exits at once.
 */
async function withInterrupt<T>(fn: (signal: AbortSignal) => Promise<T>): Promise<T> {
  const controller = new AbortController();
  let count = 0;
  const onSignal = (sig: NodeJS.Signals) => {
    count += 1;
    if (count > 2) process.exit(EXIT.interrupted);
    if (count > 1) {
      const killed = killProcessGroups();
      process.stderr.write(
        `\n${sig} again: stopping at once${killed ? ` (killed ${killed} running tool${killed > 1 ? "s" : ""}: what they had started, such as a Packer build container or instance, may remain)` : ""}; removing what holds secrets first\n`,
      );
      // What holds secrets goes even now (boot-test containers, VM boot copies), within seconds.
      void runForcedCleanups().finally(() => process.exit(EXIT.interrupted));
      return;
    }
    process.stderr.write(`\n${sig}: stopping and cleaning up (again to force)\n`);
    controller.abort(new InterruptedError(sig));
  };
  for (const sig of STOP_SIGNALS) process.on(sig, onSignal);
  try {
    const result = await fn(controller.signal);
    if (controller.signal.aborted) throw interruption(controller.signal);
    return result;
  } catch (e) {
    if (controller.signal.aborted) throw interruption(controller.signal);
    throw e;
  } finally {
    for (const sig of STOP_SIGNALS) process.off(sig, onSignal);
  }
}

export async function main(argv: string[]): Promise<number> {
  let verbose = argv.includes("--verbose");
  let code: number = EXIT.ok;
  const parser = yargs(argv)
    .scriptName("bake")
    .usage("$0 <command> [options]")
    .option("file", { type: "string", default: "bake.yml", describe: "the pipeline file" })
    .option("json", { type: "boolean", default: false, describe: "machine output on stdout" })
    .option("verbose", { type: "boolean", default: false, describe: "show stack traces and debug detail" })
    .option("allow-path", {
      type: "string",
      array: true,
      describe: "a folder outside the project that bake.yml may name (also BAKE_ALLOW_PATHS, colon-separated)",
    })
    .option("context", {
      type: "string",
      describe:
        "the docker context whose engine builds run on (default: DOCKER_HOST, DOCKER_CONTEXT, then docker's current context)",
    })
    .middleware((args) => {
      // Once, before anything reaches the engine: a context becomes DOCKER_HOST and its TLS variables.
      applyDockerContext(args.context as string | undefined);
      // The opt-in lives outside bake.yml, which a change under review could edit.
      const allowed = (args["allow-path"] as string[] | undefined) ?? [];
      if (allowed.length)
        process.env[ALLOW_PATHS_ENV] = [process.env[ALLOW_PATHS_ENV], ...allowed.map((p) => path.resolve(p))]
          .filter(Boolean)
          .join(":");
    })
    .command(
      "plan [nodes..]",
      "the graph in build order: each node's key, whether it is cached or will build, and why",
      (y) =>
        y
          .positional("nodes", { type: "string", array: true, describe: "only these nodes (and what they need)" })
          .option("target", { choices: TARGET_NAMES, default: "aws" as const, describe: "where AMIs are baked" })
          .option("pull", {
            type: "boolean",
            default: false,
            describe: "ask the registry for the newest digest of every from: image",
          })
          .option("matrix", {
            type: "boolean",
            default: false,
            describe: "print the nodes to build as a CI matrix (JSON), grouped by level",
          })
          .option("format", {
            choices: ["table", "json", "dot", "mermaid", "svg"] as const,
            describe:
              "table (the default), json (as --json), or the graph as a picture: dot (Graphviz), mermaid (pastes into a GitHub comment) or svg (drawn offline)",
          }),
      async (args) => {
        const { planCommand } = await import("./commands/plan.js");
        await planCommand(
          {
            file: args.file,
            nodes: (args.nodes as string[] | undefined) ?? [],
            target: args.target as Target,
            json: args.json || args.format === "json",
            pull: args.pull,
            matrix: args.matrix,
            picture:
              args.format === "dot" || args.format === "mermaid" || args.format === "svg" ? args.format : undefined,
          },
          tools,
          stdout,
        );
      },
    )
    .command(
      "build [nodes..]",
      "build container images (and their parents); nothing whose key exists is built again",
      (y) =>
        y
          .positional("nodes", { type: "string", array: true, describe: "only these images (and their parents)" })
          .option("push", {
            type: "boolean",
            default: false,
            describe: "push every image to the registry and record digests",
          })
          .option("pull", {
            type: "boolean",
            default: false,
            describe: "ask the registry for the newest digest of every from: image",
          })
          // yargs reads --no-cache as cache=false.
          .option("cache", {
            type: "boolean",
            default: true,
            describe: "--no-cache: rebuild even when the key exists, without the engine's layer cache",
          })
          .option("concurrency", { type: "number", default: 2, describe: "images built at once" })
          .option("tag", {
            type: "string",
            array: true,
            default: [] as string[],
            describe: "extra moving tag, applied after the whole run succeeded",
          }),
      async (args) => {
        const { buildCommand } = await import("./commands/build.js");
        await withInterrupt((signal) =>
          buildCommand(
            {
              file: args.file,
              nodes: (args.nodes as string[] | undefined) ?? [],
              push: args.push,
              pull: args.pull,
              noCache: !args.cache,
              concurrency: args.concurrency,
              tags: args.tag as string[],
              json: args.json,
              signal,
            },
            tools,
            stdout,
            stderr,
          ),
        );
      },
    )
    .command(
      "render <ami>",
      "render the Packer HCL2 for an AMI",
      (y) =>
        y
          .positional("ami", { type: "string", demandOption: true })
          .option("target", { choices: TARGET_NAMES, default: "aws" as const })
          .option("out", { type: "string", describe: "write the folder here (default: print the HCL)" }),
      async (args) => {
        const { renderCommand } = await import("./commands/render.js");
        await renderCommand(
          { file: args.file, ami: args.ami as string, target: args.target as Target, out: args.out },
          tools,
          stdout,
          stderr,
        );
      },
    )
    .command(
      "ami <ami>",
      "build what the AMI needs, bake it (or return the one with the same key), tag, copy, share, write the manifest",
      (y) =>
        y
          .positional("ami", { type: "string", demandOption: true })
          .option("target", { choices: TARGET_NAMES, default: "aws" as const })
          .option("force", {
            type: "boolean",
            default: false,
            describe: "bake even when an AMI with the same key exists",
          })
          .option("dry-run", { type: "boolean", default: false, describe: "plan and render only" })
          .option("boot-test", {
            type: "boolean",
            default: true,
            describe: "boot the baked host (--target local or vm) and check it (--no-boot-test skips)",
          }),
      async (args) => {
        const { amiCommand } = await import("./commands/ami.js");
        await withInterrupt((signal) =>
          amiCommand(
            {
              file: args.file,
              ami: args.ami as string,
              target: args.target as Target,
              force: args.force,
              dryRun: args["dry-run"],
              json: args.json,
              bootTest: args["boot-test"],
              signal,
            },
            tools,
            stdout,
            stderr,
          ),
        );
      },
    )
    .command(
      "sbom <node>",
      "the SBOM of what the node's current key built: an image's packages, or an AMI's host and the images it ships",
      (y) =>
        y
          .positional("node", { type: "string", demandOption: true })
          .option("format", { choices: ["spdx-json", "cyclonedx-json"] as const, default: "spdx-json" as const })
          .option("target", {
            choices: TARGET_NAMES,
            default: "aws" as const,
            describe: "for an AMI: the target whose bake to describe",
          })
          .option("out", { type: "string", describe: "write the SBOM to this file (default: stdout)" }),
      async (args) => {
        const { sbomCommand } = await import("./commands/sbom.js");
        await sbomCommand(
          {
            file: args.file,
            node: args.node as string,
            format: args.format as "spdx-json" | "cyclonedx-json",
            target: args.target as Target,
            out: args.out,
          },
          tools,
          stdout,
          stderr,
        );
      },
    )
    .command(
      "report [run]",
      "a run's report (report.html beside its logs), drawn again from its record: the latest run, or the one named; --json prints the record",
      (y) => y.positional("run", { type: "string", describe: "a run's folder name under .bake/logs" }),
      async (args) => {
        const { reportCommand } = await import("./commands/report.js");
        reportCommand({ file: args.file, run: args.run as string | undefined, json: args.json }, stdout);
      },
    )
    .command(
      "verify <node>",
      "recompute the node's key from the working tree and check it against its provenance statement, its image's labels and the manifest",
      (y) =>
        y.positional("node", { type: "string", demandOption: true }).option("target", {
          choices: TARGET_NAMES,
          default: "aws" as const,
          describe: "for an AMI: the target whose bake to check",
        }),
      async (args) => {
        const { verifyCommand } = await import("./commands/verify.js");
        const result = await verifyCommand(
          { file: args.file, node: args.node as string, target: args.target as Target, json: args.json },
          tools,
          stdout,
        );
        if (!result.ok) code = EXIT.failed;
      },
    )
    .command(
      "test [nodes..]",
      "run the test: specs (goss) of the images and AMIs (local images, VM disks) that exist, building nothing",
      (y) =>
        y
          .positional("nodes", {
            type: "string",
            array: true,
            describe: "only these nodes (default: every node with a test:)",
          })
          .option("target", {
            choices: ["local", "vm"] as const,
            default: "local" as const,
            describe: "for an AMI: the local machine image, or the VM disk booted under QEMU",
          }),
      async (args) => {
        const { testCommand } = await import("./commands/test.js");
        const results = await withInterrupt((signal) =>
          testCommand(
            {
              file: args.file,
              nodes: (args.nodes as string[] | undefined) ?? [],
              target: args.target as "local" | "vm",
              json: args.json,
              signal,
            },
            tools,
            stdout,
            stderr,
          ),
        );
        if (results.some((r) => !r.ok)) code = EXIT.failed;
      },
    )
    .command(
      "up [services..]",
      "build what is missing and run release containers with their runtime contract; waits for health, prints URLs",
      (y) =>
        y.positional("services", { type: "string", array: true }).option("via", {
          choices: ["api", "ansible"] as const,
          default: "api" as const,
          describe: "start through the Docker API, or through the production Ansible service role",
        }),
      async (args) => {
        const { upCommand } = await import("./commands/up.js");
        await withInterrupt((signal) =>
          upCommand(
            {
              file: args.file,
              services: (args.services as string[] | undefined) ?? [],
              via: args.via as "api" | "ansible",
              json: args.json,
              signal,
            },
            tools,
            stdout,
            stderr,
          ),
        );
      },
    )
    .command(
      "down [services..]",
      "remove the containers (and network) bake up started",
      (y) => y.positional("services", { type: "string", array: true }),
      async (args) => {
        const { downCommand } = await import("./commands/up.js");
        await downCommand({ file: args.file, services: (args.services as string[] | undefined) ?? [] }, tools, stdout);
      },
    )
    .command(
      "ps",
      "the project's running services",
      (y) => y,
      async (args) => {
        const { psCommand } = await import("./commands/up.js");
        await psCommand({ file: args.file, json: args.json }, tools, stdout);
      },
    )
    .command(
      "logs [service]",
      "a service's logs (all services, prefixed, without a name)",
      (y) =>
        y.positional("service", { type: "string" }).option("follow", { alias: "f", type: "boolean", default: false }),
      async (args) => {
        const { logsCommand } = await import("./commands/up.js");
        await withInterrupt((signal) =>
          logsCommand({ file: args.file, service: args.service, follow: args.follow, signal }, tools),
        ).catch((e) => {
          if (!(e instanceof InterruptedError)) throw e;
        });
      },
    )
    .command(
      "exec <service> [command..]",
      "run a command in a service's container: bake exec <service> -- <command>",
      (y) =>
        y
          .positional("service", { type: "string", demandOption: true })
          .positional("command", { type: "string", array: true })
          .parserConfiguration({ "populate--": true }),
      async (args) => {
        const { execCommand } = await import("./commands/up.js");
        const command = [
          ...((args.command as string[] | undefined) ?? []),
          ...(((args as any)["--"] as string[] | undefined) ?? []),
        ].map(String);
        code = await execCommand({ file: args.file, service: args.service as string, command }, tools);
      },
    )
    .command(
      "nightly",
      "refresh bases from upstream, rebuild what changed, bake AMIs, prune, report",
      (y) =>
        y
          .option("target", { choices: TARGET_NAMES, default: "aws" as const })
          .option("dry-run", {
            type: "boolean",
            default: false,
            describe: "report what would change; build, bake and remove nothing",
          })
          .option("force", {
            type: "boolean",
            default: false,
            describe: "rebuild every image even when its upstream did not change",
          }),
      async (args) => {
        const { nightlyCommand } = await import("./commands/nightly.js");
        const report = await withInterrupt((signal) =>
          nightlyCommand(
            {
              file: args.file,
              target: args.target as Target,
              dryRun: args["dry-run"],
              force: args.force,
              json: args.json,
              signal,
            },
            tools,
            stdout,
            stderr,
          ),
        );
        if (report.failed.length) code = EXIT.failed;
      },
    )
    .command(
      "prune",
      "retention for AMIs (with their snapshots) and local images; a plan unless --yes",
      (y) =>
        y
          .option("yes", { type: "boolean", default: false, describe: "remove what the plan lists" })
          .option("keep-images", {
            type: "number",
            default: 2,
            describe: "earlier local builds kept per image, besides the current key",
          })
          .check((a) => {
            // yargs reads "foo" as NaN: a removal count must never come from a typo.
            if (!Number.isInteger(a["keep-images"]) || (a["keep-images"] as number) < 0)
              throw new UsageError("--keep-images takes a whole number of 0 or more");
            return true;
          }),
      async (args) => {
        const { pruneCommand } = await import("./commands/prune.js");
        const report = await withInterrupt((signal) =>
          pruneCommand(
            { file: args.file, yes: args.yes, json: args.json, keepImages: args["keep-images"], signal },
            tools,
            stdout,
            stderr,
          ),
        );
        if (report.failed.length) code = EXIT.failed;
      },
    )
    .command(
      "init [dir]",
      "write a starter project: bake.yml, a playbook of your own, a goss spec and a .gitignore for bake's files",
      (y) =>
        y
          .positional("dir", { type: "string", default: ".", describe: "the project's folder (created if missing)" })
          .option("project", { type: "string", describe: "the project name (default: the folder's name)" }),
      async (args) => {
        const { initCommand } = await import("./commands/init.js");
        initCommand({ dir: args.dir as string, project: args.project as string | undefined }, stdout);
      },
    )
    .command(
      "doctor",
      "check docker, registry, packer, ansible and AWS; one fix per problem",
      (y) => y,
      async (args) => {
        const { doctorCommand } = await import("./commands/doctor.js");
        const checks = await doctorCommand({ file: args.file, json: args.json }, tools, stdout);
        if (checks.some((c) => c.status === "fail")) code = EXIT.failed;
      },
    )
    .demandCommand(1, "name a command: bake <command>")
    .strict()
    .recommendCommands()
    .help()
    .version("version", "show bake's version", `bake ${bakeVersion()}`)
    .wrap(Math.min(110, process.stdout.columns || 110))
    .fail((message, error) => {
      if (error) throw error;
      throw new UsageError(`${message}\n(see bake --help)`);
    });
  try {
    const args = await parser.parseAsync();
    verbose = Boolean(args.verbose);
    return code;
  } catch (error) {
    printError(error, verbose);
    return exitCodeFor(error);
  }
}

function printError(error: unknown, verbose: boolean): void {
  const write = (s: string) => process.stderr.write(`${s}\n`);
  if (error instanceof ConfigErrors) for (const e of error.errors) write(`error: ${e.describe()}`);
  else if (error instanceof ConfigError) write(`error: ${error.describe()}`);
  else if (error instanceof UsageError) write(`error: ${error.message}`);
  else if (error instanceof BuildFailedError)
    write(`error: ${error.message}${error.detail ? `\n${error.detail}` : ""}`);
  else if (error instanceof ToolFailedError)
    write(`error: ${error.message}${error.stderrTail ? `\n${error.stderrTail}` : ""}`);
  else if (error instanceof BakeError) write(`error: ${error.message}`);
  else write(`error: ${(error as Error)?.message ?? String(error)}`);
  if (verbose && error instanceof Error && error.stack) write(error.stack);
}

main(hideBin(process.argv)).then((code) => {
  process.exitCode = code;
});
