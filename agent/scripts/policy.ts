/**
 * The agent's script policy: the most any script may ask for. Set with `--allow-run`,
 * `--allow-read`, `--allow-write` and `--allow-net` (named like Deno's own flags) or
 * `policy: {run, read, write, net}` in the agent config. A script whose header asks for more
 * is refused before it starts, naming the permission.
 *
 * @module
 */
import { posix } from "node:path";
import { JwError } from "../../shared/errors.ts";
import type { ScriptPermissions } from "../../shared/protocol/mod.ts";

/** What scripts on this agent may be granted. */
export interface ScriptPolicy {
  /** Programs (absolute paths); scripts start them only through `exec.run`. */
  run: readonly string[];
  /** Files or directories (a directory covers everything below it). */
  read: readonly string[];
  /** Files or directories (a directory covers everything below it). */
  write: readonly string[];
  /** `host` (any port) or `host:port`. */
  net: readonly string[];
}

const FLAGS: Record<keyof ScriptPolicy, string> = {
  run: "--allow-run",
  read: "--allow-read",
  write: "--allow-write",
  net: "--allow-net",
};

/** True when `path` is `root` or below it (both absolute; compared after normalising). */
export function pathWithin(path: string, root: string): boolean {
  const p = posix.normalize(path);
  const r = posix.normalize(root).replace(/\/+$/, "") || "/";
  return r === "/" || p === r || p.startsWith(r + "/");
}

/** Splits `host[:port]` (IPv6 in brackets). */
function hostPort(entry: string): { host: string; port?: string } {
  const m = /^(\[[^\]]+\]|[^:]+)(?::(\d+))?$/.exec(entry);
  return m ? { host: m[1].toLowerCase(), port: m[2] } : { host: entry.toLowerCase() };
}

/** True when a `host[:port]` request is covered by a policy entry. */
export function netAllowed(request: string, entry: string): boolean {
  const want = hostPort(request);
  const have = hostPort(entry);
  if (want.host !== have.host) return false;
  return have.port === undefined || want.port === have.port;
}

/**
 * Checks a script's header permissions against the policy.
 * @throws JwError `forbidden` naming the first permission the policy does not cover and the
 *   flag that would allow it.
 */
export function checkPermissions(
  name: string,
  asked: ScriptPermissions,
  policy: ScriptPolicy,
): void {
  const covers: Record<keyof ScriptPolicy, (want: string, have: string) => boolean> = {
    run: (want, have) => posix.normalize(want) === posix.normalize(have),
    read: pathWithin,
    write: pathWithin,
    net: netAllowed,
  };
  for (const kind of ["run", "read", "write", "net"] as const) {
    for (const want of asked[kind]) {
      if (!policy[kind].some((have) => covers[kind](want, have))) {
        throw new JwError(
          "forbidden",
          `script "${name}" asks for ${kind} ${want}, which this agent's policy does not allow ` +
            `(${FLAGS[kind]} ${want} would)`,
          { detail: { name, permission: kind, value: want } },
        );
      }
    }
  }
}
