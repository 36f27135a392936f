/**
 * The agent's commands: the registry, the built-in categories, and the one list that
 * registers them (builtins.ts). See commands.ts for where a new command goes.
 *
 * @module
 */
export * from "./commands.ts";
export { type BuiltinOptions, registerBuiltins } from "./builtins.ts";
export { createExecCommand, ExecArgs, type ExecCommandOptions } from "./exec.ts";
export { createTagsCommand, TagsArgs } from "./tags.ts";
export { createFileCommands, FileFetchArgs, FileTailArgs } from "./file.ts";
export { createFsWatchCommand, FsWatchArgs } from "./fs.ts";
export { createJournalCommand, JournalArgs } from "./journal.ts";
export { checkPath } from "./paths.ts";
export {
  createJobCommands,
  type JobControl,
  JobDeleteArgs,
  JobListArgs,
  JobRunsArgs,
} from "./job.ts";
export {
  createScriptCommands,
  type ScriptCommandOptions,
  ScriptDeleteArgs,
  ScriptListArgs,
  ScriptRegisterArgs,
  ScriptRunArgs,
} from "./script.ts";
