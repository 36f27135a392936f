/**
 * Checks a path a command wants to read or write against the agent's allowed paths
 * (`--allow-read`, `--allow-write`; the same lists scripts are limited to).
 *
 * A path must be absolute. It is normalised (`..` resolved), and symlinks in it are followed:
 * for a path that exists, its real path must be inside an allowed root; for one that does not
 * exist yet (a file to create), the real path of its nearest existing ancestor, with the rest
 * appended, must be. So neither `..` nor a symlink pointing elsewhere leaves the roots.
 *
 * @module
 */
import { posix } from "node:path";
import { JwError } from "../../shared/errors.ts";
import { pathWithin } from "../scripts/policy.ts";
import type { PathPolicy } from "./commands.ts";

/** The agent flag that allows each kind. */
const FLAGS = { read: "--allow-read", write: "--allow-write" } as const;

/**
 * The real path of `path` (absolute, normalised, symlinks followed as far as it exists).
 * @throws JwError `invalid_args` when `path` is not absolute.
 */
export async function realPathOf(path: string): Promise<string> {
  if (!posix.isAbsolute(path)) {
    throw new JwError("invalid_args", `path must be absolute: ${JSON.stringify(path)}`, {
      detail: { path },
    });
  }
  let head = posix.normalize(path);
  const rest: string[] = [];
  for (;;) {
    try {
      const real = await Deno.realPath(head);
      return rest.length ? posix.join(real, ...rest.reverse()) : real;
    } catch (err) {
      if (!(err instanceof Deno.errors.NotFound) || head === "/") throw err;
      rest.push(posix.basename(head));
      head = posix.dirname(head);
    }
  }
}

/**
 * Checks that `path` may be read (or written) under `paths`, and returns its real path (use
 * that one, so what was checked is what is opened).
 * @throws JwError `invalid_args` for a relative path; `forbidden` when it is outside every
 *   allowed root (naming the flag that would allow it).
 */
export async function checkPath(
  paths: PathPolicy,
  kind: "read" | "write",
  path: string,
): Promise<string> {
  const real = await realPathOf(path);
  const roots = paths[kind];
  for (const root of roots) {
    // The root itself may be (or sit under) a symlink: compare real paths.
    let realRoot: string;
    try {
      realRoot = await realPathOf(root);
    } catch {
      continue;
    }
    if (pathWithin(real, realRoot)) return real;
  }
  const shown = real === posix.normalize(path) ? path : `${path} (really ${real})`;
  throw new JwError(
    "forbidden",
    roots.length === 0
      ? `${kind} ${shown}: this agent allows no ${kind} paths (${FLAGS[kind]} PATH would)`
      : `${kind} ${shown}: outside the paths this agent allows (${FLAGS[kind]} ${
        // What to read is the path itself; what to write is a file in its directory.
        kind === "read" ? real : posix.dirname(real)} would)`,
    { detail: { path, real, permission: kind } },
  );
}
