/**
 * Fills stored scripts into `script.register` commands: an operator names a script the server
 * holds (`{name, version?}`) and the agents receive the whole signed file (`script`).
 *
 * @module
 */
import { JwError } from "../../shared/errors.ts";
import type { JobSpec } from "../../shared/protocol/agent.ts";
import { ScriptName } from "../../shared/protocol/script.ts";
import type { ScriptStore } from "./store.ts";

/** The command whose args are expanded. */
export const REGISTER_KEY = "script.register";

/**
 * Returns a job expander for `Dispatcher` (see `DispatcherOptions.expand`): a
 * `script.register` job whose args have `name` and no `script` gets `script` set to the
 * stored file text (the highest version, or `version` when given); `name` and `version`
 * stay, so the agent checks them against the header. Any other job is returned unchanged.
 * Never modifies its argument.
 * @throws JwError `invalid_args` (a bad name or version), `not_found` (not stored).
 */
export function createScriptExpander(
  store: Pick<ScriptStore, "get">,
): (job: JobSpec) => JobSpec {
  return (job) => {
    const args = job.args;
    if (job.key !== REGISTER_KEY || args.script !== undefined || args.name === undefined) {
      return job;
    }
    if (!ScriptName.safeParse(args.name).success) {
      throw new JwError(
        "invalid_args",
        `${REGISTER_KEY}: bad name ${
          JSON.stringify(args.name).slice(0, 80)
        }: must be 1-64 of a-z 0-9 . _ - starting with a letter or digit`,
      );
    }
    const version = args.version;
    if (
      version !== undefined &&
      !(typeof version === "number" && Number.isInteger(version) && version >= 1)
    ) {
      throw new JwError(
        "invalid_args",
        `${REGISTER_KEY}: version must be a positive integer, got ${
          JSON.stringify(version).slice(0, 40)
        }`,
      );
    }
    const { text } = store.get(args.name as string, version as number | undefined);
    return { ...job, args: { ...args, script: text } };
  };
}
