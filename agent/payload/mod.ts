/**
 * The agent's commands: the registry and the built-in categories.
 *
 * @module
 */
export * from "./commands.ts";
export { createExecCommand, ExecArgs, type ExecCommandOptions } from "./exec.ts";
export { createTagsCommand, TagsArgs } from "./tags.ts";
