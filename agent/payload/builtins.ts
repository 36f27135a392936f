/**
 * The list of built-in commands. A new command category gets one line here (and its file
 * beside this one, see commands.ts).
 *
 * @module
 */
import type { Registry } from "./commands.ts";
import { createExecCommand, type ExecCommandOptions } from "./exec.ts";
import { createJobCommands, type JobControl } from "./job.ts";
import { createTagsCommand } from "./tags.ts";

/** What the built-in commands need. */
export interface BuiltinOptions {
  /** `exec.run` settings (default timeout, allowEnv). */
  exec: ExecCommandOptions;
  /** The job runner, behind `job.list`, `job.delete` and `job.runs`. */
  jobs: JobControl;
}

/**
 * Registers every built-in command: `exec.run`, `tags.set`, `job.list`, `job.delete`,
 * `job.runs`.
 * @throws JwError `internal` when one of them is already registered.
 */
export function registerBuiltins(registry: Registry, options: BuiltinOptions): void {
  registry.register(createExecCommand(options.exec));
  registry.register(createTagsCommand());
  for (const command of createJobCommands(options.jobs)) registry.register(command);
}
