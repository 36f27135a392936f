/**
 * The list of built-in commands. A new command category gets one line here (and its file
 * beside this one, see commands.ts).
 *
 * @module
 */
import type { Registry } from "./commands.ts";
import { createExecCommand, type ExecCommandOptions } from "./exec.ts";
import { createFileCommands } from "./file.ts";
import { createFsWatchCommand } from "./fs.ts";
import { createJournalCommand } from "./journal.ts";
import { createJobCommands, type JobControl } from "./job.ts";
import { createScriptCommands, type ScriptCommandOptions } from "./script.ts";
import { createTagsCommand } from "./tags.ts";

/** What the built-in commands need. */
export interface BuiltinOptions {
  /** `exec.run` settings (default timeout, allowEnv). */
  exec: ExecCommandOptions;
  /** The job runner, behind `job.list`, `job.delete` and `job.runs`. */
  jobs: JobControl;
  /** The script commands' stores, trust and policy; without it no `script.*` commands. */
  scripts?: ScriptCommandOptions;
}

/**
 * Registers every built-in command: `exec.run`, `tags.set`, `job.list`, `job.delete`,
 * `job.runs`, `fs.watch`, `file.tail`, `file.fetch`, `journal.watch`, and (when `options.scripts` is
 * given) `script.register`, `script.run`, `script.delete`, `script.list`.
 * @throws JwError `internal` when one of them is already registered.
 */
export function registerBuiltins(registry: Registry, options: BuiltinOptions): void {
  registry.register(createExecCommand(options.exec));
  registry.register(createTagsCommand());
  for (const command of createJobCommands(options.jobs)) registry.register(command);
  registry.register(createFsWatchCommand());
  for (const command of createFileCommands()) registry.register(command);
  registry.register(createJournalCommand());
  if (options.scripts) {
    for (const command of createScriptCommands(options.scripts)) registry.register(command);
  }
}
