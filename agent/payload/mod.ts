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
