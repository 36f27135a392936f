/**
 * Flag parsing shared by the subcommands: `node:util` parseArgs in strict mode, with its
 * errors turned into `usage` errors, plus helpers for config files and signals.
 *
 * @module
 */
import { parseArgs, type ParseArgsConfig } from "node:util";
import { JwError } from "../shared/errors.ts";
import { parseConfigText } from "../shared/config/load.ts";

/** Option definitions as parseArgs takes them. */
export type Options = NonNullable<ParseArgsConfig["options"]>;

/** Parsed flags and positionals. */
export interface Parsed {
  values: Record<string, string | boolean | (string | boolean)[] | undefined>;
  positionals: string[];
}

/**
 * Parses `argv` strictly against `options` (`--help`/`-h` is always accepted).
 * @throws JwError `usage` naming the bad flag.
 */
export function parseFlags(argv: string[], options: Options, allowPositionals = true): Parsed {
  try {
    const { values, positionals } = parseArgs({
      args: argv,
      options: { ...options, help: { type: "boolean", short: "h" } },
      strict: true,
      allowPositionals,
    });
    return { values: values as Parsed["values"], positionals };
  } catch (err) {
    throw new JwError(
      "usage",
      (err as Error).message.replace(/\. To specify a positional.*$/s, ""),
      {
        cause: err,
      },
    );
  }
}

/** A string flag's value, or undefined. */
export function str(p: Parsed, name: string): string | undefined {
  const v = p.values[name];
  return typeof v === "string" ? v : undefined;
}

/** A repeatable string flag's values. */
export function list(p: Parsed, name: string): string[] | undefined {
  const v = p.values[name];
  if (v === undefined) return undefined;
  return (Array.isArray(v) ? v : [v]).map(String);
}

/**
 * Turns repeated `k=v` flags into an object.
 * @throws JwError `usage` for an item without `=`.
 */
export function keyValues(
  items: string[] | undefined,
  flag: string,
): Record<string, string> | undefined {
  if (!items) return undefined;
  const out: Record<string, string> = {};
  for (const item of items) {
    const eq = item.indexOf("=");
    if (eq < 1) throw new JwError("usage", `--${flag} expects KEY=VALUE, got "${item}"`);
    out[item.slice(0, eq)] = item.slice(eq + 1);
  }
  return out;
}

/**
 * Reads and parses the config file named by `--config` or `JW_CONFIG`, if any.
 * @throws JwError `config` when the file cannot be read or parsed.
 */
export async function readConfigFile(p: Parsed): Promise<{ file?: unknown; fileName?: string }> {
  const fileName = str(p, "config") ?? Deno.env.get("JW_CONFIG");
  if (!fileName) return {};
  let text: string;
  try {
    text = await Deno.readTextFile(fileName);
  } catch (err) {
    throw new JwError("config", `cannot read config file ${fileName}: ${(err as Error).message}`, {
      cause: err,
    });
  }
  return { file: parseConfigText(text, fileName), fileName };
}

/** The environment as a plain object (JW_* lookups). */
export function environment(): Record<string, string> {
  return Deno.env.toObject();
}

/**
 * Resolves on the first SIGINT or SIGTERM. A second one more than a second later exits the
 * process at once with 130; one within that second is the same Ctrl-C delivered twice (by
 * the terminal and by a wrapper such as `deno task` or `npx` forwarding it) and is ignored.
 */
export function waitForShutdownSignal(): Promise<string> {
  return new Promise((resolve) => {
    let firstAt: number | undefined;
    const handler = (sig: Deno.Signal) => () => {
      if (firstAt !== undefined) {
        if (Date.now() - firstAt > 1000) Deno.exit(130);
        return;
      }
      firstAt = Date.now();
      resolve(sig);
    };
    for (const sig of ["SIGINT", "SIGTERM"] as const) Deno.addSignalListener(sig, handler(sig));
  });
}

/**
 * Checks the subcommand of a command group (`jobs install`, `scripts push`) and that only its
 * own flags of the group's flags are given.
 * @param table the flags each subcommand takes, by subcommand.
 * @param groupFlags every flag of the group.
 * @throws JwError `usage` for a missing or unknown subcommand, or a flag it does not take.
 */
export function checkSubcommand(
  group: string,
  sub: string | undefined,
  table: Record<string, readonly string[]>,
  groupFlags: readonly string[],
  p: Parsed,
): void {
  const allowed = Object.hasOwn(table, sub ?? "") ? table[sub!] : undefined;
  if (!allowed) {
    const names = Object.keys(table);
    throw new JwError(
      "usage",
      `${group} needs ${names.slice(0, -1).join(", ")} or ${names.at(-1)}${
        sub ? `, got "${sub}"` : ""
      }`,
    );
  }
  for (const [flag, value] of Object.entries(p.values)) {
    if (value !== undefined && groupFlags.includes(flag) && !allowed.includes(flag)) {
      throw new JwError("usage", `--${flag} does not apply to "client ${group} ${sub}"`);
    }
  }
}
