/**
 * `jw client scripts …`: the signed scripts stored on the server. `list`, `show` and
 * `delete` call `/v1/scripts`; `push` is a run of `script.register {name, version?}`, which
 * the server fills in with the stored file before sending it to the agents.
 *
 * @module
 */
import { JwError } from "../shared/errors.ts";
import { ScriptName } from "../shared/protocol/script.ts";
import type { ApiClient } from "./_api.ts";
import { checkSubcommand, type Parsed, str } from "./_flags.ts";
import { renderOutcome, renderScriptInfo, renderScripts, succeeded } from "./_render.ts";
import { buildRunRequest, streamRun } from "./_run.ts";

/** Usage of `jw client scripts`. */
export const SCRIPTS_USAGE = `scripts commands (signed scripts stored on the server):
  scripts list                            name, version, signer, permissions, uploader
  scripts show NAME [--version N]         print the script file (the newest version by default)
  scripts delete NAME [--version N]       remove it (every version by default) from the server
                                          and from every connected agent
  scripts push NAME [--version N] TARGET  install it on agents (script.register), streamed
                                          like run; takes run's --id, --meta and --timeout`;

/** Flags each scripts subcommand accepts (besides the connection flags). */
export const SCRIPTS_FLAGS: Record<string, string[]> = {
  list: [],
  show: ["version"],
  delete: ["version"],
  push: ["version", "id", "meta", "meta-json", "timeout"],
};

/** Every flag some scripts subcommand takes. */
export const SCRIPTS_FLAG_NAMES: readonly string[] = [
  ...new Set(Object.values(SCRIPTS_FLAGS).flat()),
];

/**
 * `--version N`, if given.
 * @throws JwError `usage` unless N is a positive whole number.
 */
export function versionFlag(p: Parsed): number | undefined {
  const text = str(p, "version");
  if (text === undefined) return undefined;
  const n = Number(text);
  if (!/^\d{1,10}$/.test(text) || n < 1 || n > 2 ** 31 - 1) {
    throw new JwError("usage", `--version expects a positive whole number, got "${text}"`);
  }
  return n;
}

function scriptName(text: string | undefined, sub: string): string {
  if (text === undefined) throw new JwError("usage", `scripts ${sub} needs NAME`);
  if (!ScriptName.safeParse(text).success) {
    throw new JwError(
      "usage",
      `bad script name "${text}": use 1-64 of a-z 0-9 . _ - starting with a letter or digit`,
    );
  }
  return text;
}

/**
 * The run request of `scripts push NAME TARGET`: `script.register` with `{name, version?}`
 * on TARGET, with run's flags.
 * @throws JwError `usage`.
 */
export function buildPushRequest(p: Parsed, args: string[]): ReturnType<typeof buildRunRequest> {
  if (args.length !== 2) {
    throw new JwError("usage", "scripts push needs NAME TARGET, e.g. scripts push disk-report all");
  }
  const [nameText, target] = args;
  const name = scriptName(nameText, "push");
  const version = versionFlag(p);
  const jobArgs = version === undefined ? { name } : { name, version };
  return buildRunRequest(p, [target, "script.register", JSON.stringify(jobArgs)]);
}

/** Entry point of `jw client scripts SUB …`. */
export async function scriptsCommand(
  api: ApiClient,
  p: Parsed,
  args: string[],
  json: boolean,
): Promise<number> {
  const [sub, ...rest] = args;
  checkSubcommand("scripts", sub, SCRIPTS_FLAGS, SCRIPTS_FLAG_NAMES, p);
  switch (sub) {
    case "list": {
      if (rest.length) throw new JwError("usage", "scripts list takes no arguments");
      const scripts = await api.scripts();
      if (json) console.log(JSON.stringify(scripts));
      else console.log(scripts.length ? renderScripts(scripts) : "no scripts stored");
      return 0;
    }
    case "show": {
      if (rest.length > 1) throw new JwError("usage", "scripts show takes one NAME");
      const { script, text } = await api.script(scriptName(rest[0], "show"), versionFlag(p));
      if (json) {
        console.log(JSON.stringify({ script, text }));
        return 0;
      }
      console.error(renderScriptInfo(script));
      await Deno.stdout.write(new TextEncoder().encode(text));
      return 0;
    }
    case "delete": {
      if (rest.length > 1) throw new JwError("usage", "scripts delete takes one NAME");
      const deleted = await api.deleteScript(scriptName(rest[0], "delete"), versionFlag(p));
      const outcomes = Object.entries(deleted.run.agents);
      if (json) console.log(JSON.stringify(deleted));
      else {
        console.log(
          `deleted ${deleted.name} version${deleted.versions.length === 1 ? "" : "s"} ${
            deleted.versions.join(", ")
          } from the server`,
        );
        if (outcomes.length === 0) console.log("no agents connected");
        for (const [agent, outcome] of outcomes) console.log(renderOutcome(agent, outcome));
      }
      // An offline agent gets the deletion from the mailbox when it connects.
      return outcomes.every(([, o]) => succeeded(o) || (o.state === "offline" && o.until)) ? 0 : 1;
    }
    default:
      return await streamRun(api, buildPushRequest(p, rest), json);
  }
}
