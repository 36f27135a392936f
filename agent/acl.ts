/**
 * The command ACL: which command keys this agent accepts (`allowCommands` in its config).
 * Applied as a wrapper around the command registry, so every way a command is looked up —
 * a command frame, an installed job, a job reloaded at start — passes the same check before
 * a job is created.
 *
 * @module
 */
import { JwError } from "../shared/errors.ts";
import type { Registry } from "./payload/commands.ts";

/** Decides whether a command key may run on this agent. */
export interface CommandAcl {
  /** True when `key` matches an entry: the exact key, `category.*` (any depth below), or `*`. */
  allows(key: string): boolean;
  /**
   * Throws when `key` is not allowed.
   * @throws JwError `forbidden` naming the key and the `allowCommands` option.
   */
  check(key: string): void;
}

/**
 * Creates the ACL for `allowCommands` entries: `"*"` (everything), `"exec.run"` (one key) or
 * `"job.*"` (every key under `job.`, e.g. `job.list`, and nested `job.a.b`). An empty list
 * allows nothing. Entries are not validated here (the config schema does that).
 */
export function createCommandAcl(allowCommands: readonly string[]): CommandAcl {
  const all = allowCommands.includes("*");
  const exact = new Set(allowCommands.filter((e) => !e.endsWith("*")));
  const prefixes = allowCommands.filter((e) => e.endsWith(".*")).map((e) => e.slice(0, -1));
  const allows = (key: string): boolean =>
    all || exact.has(key) || prefixes.some((prefix) => key.startsWith(prefix));
  return {
    allows,
    check(key) {
      if (allows(key)) return;
      throw new JwError(
        "forbidden",
        `command ${key} is not allowed on this agent: it is not on the agent's allowCommands list`,
        { detail: { key } },
      );
    },
  };
}

/**
 * Wraps `registry` so `get` and `prepare` refuse keys the ACL does not allow, before looking
 * the key up or checking arguments (a forbidden key is `forbidden` whether or not it exists).
 * `keys()` lists only allowed keys; `register` is passed through.
 */
export function withAcl(registry: Registry, acl: CommandAcl): Registry {
  return {
    register: (command) => registry.register(command),
    get(key) {
      acl.check(key);
      return registry.get(key);
    },
    prepare(key, args) {
      acl.check(key);
      return registry.prepare(key, args);
    },
    keys: () => registry.keys().filter((key) => acl.allows(key)),
  };
}
