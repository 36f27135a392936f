/**
 * The `fs` category. `fs.watch` watches a directory (or a file) and reports its changes, one
 * structured output per change, until the job is deleted or replaced, the agent stops, or
 * `for` has passed.
 *
 * Args (unknown keys refused):
 * - `path` — absolute; an existing directory or file inside the agent's `--allow-read` paths
 *   (symlinks are followed: the real path is watched and reported).
 * - `recursive` — also report changes below subdirectories. Default false: only the path itself
 *   and its direct children.
 * - `events` — which of `"create"`, `"modify"`, `"remove"`, `"rename"` to report. Default all.
 * - `debounce` — a duration ("100ms", "2s" or a number of ms), at most "1m"; default "100ms".
 *   The changes to one path within `debounce` of its first change are merged into one output.
 * - `for` — a positive duration; stop by itself after it. Default: run until stopped.
 *
 * Outputs: once the watch is in place, a `debug` log "watching PATH". Then one data output per
 * change, `{event, path, isDir}`; a rename whose old path is known also carries `from` and
 * `to` (`path` is the new path, equal to `to`). `isDir` comes from the path as it is when the
 * output is sent; for a path that is gone, from what was last seen of it (subdirectories
 * present at the start and those seen since), else false. Symlinks are reported as
 * themselves, never followed.
 *
 * How the changes to one path within the window are merged: a create followed by modifies
 * is one `create`; a create then a remove is dropped (the path came and went: nothing to
 * report); a remove then a create is a `modify` (the path was replaced); a modify then a
 * remove is a `remove`; a rename keeps its `from` through later modifies. A path renamed
 * away and its new name come as one `rename` of the new path, with `from`. A path moved out
 * of the watched tree is a `remove`, one moved in a `rename` without `from`. A path created
 * and renamed within the window is reported as that `rename`. The events filter applies to
 * the merged result, so with `events: ["modify"]` a new file that is written to reports
 * nothing.
 *
 * At most 10,000 paths wait for their window at once; a change to one more sends them all
 * at once. When the OS drops events (its queue overflowed) a `warn` log says so.
 *
 * The done output carries `data: {events: N}`, the number of change outputs sent, and no
 * error when the run was stopped or `for` passed. When the watched path itself is removed or
 * moved away, the changes still waiting are sent, then its `remove` (when `events` has it),
 * and the run ends with error `not_found`. A watched file that is replaced (renamed over, as
 * editors save) counts as removed: watch its directory to follow such a file. When a
 * directory is removed together with its contents, the OS may report only the directory's
 * own removal, not each entry's.
 *
 * @module
 */
import { posix } from "node:path";
import { z } from "zod";
import type { TimerId } from "../../shared/clock.ts";
import { JwError } from "../../shared/errors.ts";
import { osError } from "./_os.ts";
import { formatDuration, parseDuration } from "../../shared/units.ts";
import { pathWithin } from "../scripts/policy.ts";
import { type Command, defineCommand, type RunContext, type RunResult } from "./commands.ts";
import { MAX_TIMEOUT_MS } from "./exec.ts";
import { checkPath } from "./paths.ts";

/** The kinds of change `fs.watch` reports. */
export const FS_EVENTS = ["create", "modify", "remove", "rename"] as const;
/** One kind of change. */
export type FsEventKind = typeof FS_EVENTS[number];

/** Longest `debounce`: one minute. */
export const MAX_DEBOUNCE_MS = 60_000;

/** Default for {@link FsWatchOptions.maxPending}. */
export const DEFAULT_MAX_PENDING = 10_000;

/** Directories remembered for `isDir` of removed paths, at most. */
const MAX_KNOWN_DIRS = 10_000;

/** A duration between `min` and `max` ms (both inclusive), parsed to ms. */
function duration(min: number, max: number, positive: boolean) {
  return z.union([z.string(), z.number()]).transform((v, ctx) => {
    const ms = parseDuration(v);
    if (ms === undefined || ms < min || (positive && ms <= 0)) {
      ctx.addIssue({
        code: "custom",
        message: `expected a ${positive ? "positive " : ""}duration like "5s" or "250ms", got ${
          JSON.stringify(v)
        }`,
      });
      return z.NEVER;
    }
    if (ms > max) {
      ctx.addIssue({
        code: "custom",
        message: `may be at most ${formatDuration(max)}, got ${JSON.stringify(v)}`,
      });
      return z.NEVER;
    }
    return ms;
  });
}

/** Arguments of `fs.watch`. Unknown keys are rejected. Durations parse to ms. */
export const FsWatchArgs = z.object({
  /** Absolute path of the directory (or file) to watch. */
  path: z.string().min(1).max(4096).startsWith("/", "must be an absolute path"),
  /** Also report changes below subdirectories. Default false. */
  recursive: z.boolean().default(false),
  /** The kinds of change to report. Default all four. */
  events: z.array(z.enum(FS_EVENTS)).min(1).max(16).default([...FS_EVENTS]),
  /** Changes to one path within this long are one output. Default 100 ms, at most 1 min. */
  debounce: duration(0, MAX_DEBOUNCE_MS, false).default(100),
  /** Stop by itself after this long. Default: run until stopped. */
  for: duration(1, MAX_TIMEOUT_MS, true).optional(),
}).strict();
export type FsWatchArgs = z.output<typeof FsWatchArgs>;

/** One change output of `fs.watch`. */
export interface FsWatchEvent {
  event: FsEventKind;
  /** The changed path (for a rename, the new one). */
  path: string;
  /** Whether `path` is a directory (see the module doc for removed paths). */
  isDir: boolean;
  /** A rename's old path, when known. */
  from?: string;
  /** A rename's new path (equal to `path`), when `from` is known. */
  to?: string;
}

/** Raw change events of one watch, as `Deno.watchFs` gives them. */
export interface FsEventSource extends AsyncIterable<Deno.FsEvent> {
  /** Stops watching; the iteration then ends. */
  close(): void;
}

/** Options for {@link createFsWatchCommand}. */
export interface FsWatchOptions {
  /** Starts watching `path` (a real path). Default `Deno.watchFs`. */
  watch?: (path: string, options: { recursive: boolean }) => FsEventSource;
  /**
   * Most paths waiting for their debounce window at once; a change to one more path sends
   * them all now. Default {@link DEFAULT_MAX_PENDING}.
   */
  maxPending?: number;
}

/**
 * Creates `fs.watch` (see the module doc). Errors before watching: `invalid_args` (a relative
 * path, bad args), `forbidden` (outside the allowed read paths), `not_found` (no such path);
 * when the OS cannot watch (e.g. its watch limit is reached), `unavailable`.
 */
export function createFsWatchCommand(options: FsWatchOptions = {}): Command<FsWatchArgs> {
  const watch = options.watch ?? ((path, o) => Deno.watchFs(path, o));
  const maxPending = Math.max(1, options.maxPending ?? DEFAULT_MAX_PENDING);
  return defineCommand({
    key: "fs.watch",
    description: "watches a directory (or file) and reports each change to the paths in it",
    args: FsWatchArgs,
    async run(ctx, args): Promise<RunResult> {
      const root = await checkPath(ctx.paths, "read", args.path);
      let info: Deno.FileInfo;
      try {
        info = await Deno.stat(root);
      } catch (err) {
        throw osError(err, "cannot watch", args.path, "not_found");
      }
      if (ctx.signal.aborted) return { error: null, data: { events: 0 } };
      const known = info.isDirectory ? await subdirectories(root) : new Set<string>();
      if (info.isDirectory) known.add(root);
      let source: FsEventSource;
      try {
        source = watch(root, { recursive: args.recursive });
      } catch (err) {
        throw osError(err, "cannot watch", args.path, "not_found");
      }
      return await new Watch(ctx, args, root, source, known, maxPending).run();
    },
  });
}

/** A change waiting for its debounce window to end. */
interface Pending {
  kind: FsEventKind;
  from?: string;
  /** When it is sent (clock ms). */
  due: number;
}

/** One running watch: reads raw events, merges them per path, sends the outputs. */
class Watch {
  readonly #ctx: RunContext;
  readonly #args: FsWatchArgs;
  readonly #root: string;
  readonly #source: FsEventSource;
  readonly #known: Set<string>;
  readonly #maxPending: number;
  readonly #wanted: ReadonlySet<FsEventKind>;
  /** By path, in the order of their first change (so `due` only grows along the map). */
  readonly #pending = new Map<string, Pending>();
  #timer: TimerId | undefined;
  /** Outputs are sent one batch after another. */
  #sending: Promise<void> = Promise.resolve();
  /** Changes taken out of `#pending` and not sent yet. */
  #queued = 0;
  #sent = 0;
  #closed = false;

  constructor(
    ctx: RunContext,
    args: FsWatchArgs,
    root: string,
    source: FsEventSource,
    known: Set<string>,
    maxPending: number,
  ) {
    this.#ctx = ctx;
    this.#args = args;
    this.#root = root;
    this.#source = source;
    this.#known = known;
    this.#maxPending = maxPending;
    this.#wanted = new Set(args.events);
  }

  async run(): Promise<RunResult> {
    const ctx = this.#ctx;
    const args = this.#args;
    const stop = () => this.#close();
    ctx.signal.addEventListener("abort", stop, { once: true });
    const forTimer = args.for === undefined ? undefined : ctx.clock.setTimeout(stop, args.for);
    let failure: JwError | undefined;
    let rootGone = false;
    ctx.log("debug", `watching ${this.#root}`, { path: this.#root, recursive: args.recursive });
    try {
      const events = this.#source[Symbol.asyncIterator]();
      for (;;) {
        if (ctx.signal.aborted) break;
        // Sending fell behind: let it catch up before reading more (the OS queues meanwhile).
        if (this.#queued >= this.#maxPending) await this.#sending;
        const next = await events.next();
        if (next.done || this.#closed) break;
        if (this.#raw(next.value)) {
          rootGone = true;
          break;
        }
      }
      if (!this.#closed && !rootGone && !ctx.signal.aborted) {
        // The OS ended the watch by itself: the path went away, or something else broke.
        rootGone = !(await exists(this.#root));
        if (!rootGone) {
          failure = new JwError("unavailable", `the OS stopped watching ${args.path}`, {
            detail: { path: args.path },
          });
        }
      }
    } catch (err) {
      if (!this.#closed) failure = osError(err, "watching failed", args.path, "not_found");
    } finally {
      ctx.signal.removeEventListener("abort", stop);
      if (forTimer !== undefined) ctx.clock.clearTimeout(forTimer);
      this.#close();
    }
    this.#flush(Infinity);
    await this.#sending;
    if (rootGone) {
      const isDir = this.#known.has(this.#root);
      if (this.#wanted.has("remove")) this.#emit({ event: "remove", path: this.#root, isDir });
      failure = new JwError(
        "not_found",
        `${args.path} was removed or moved away; stopped watching it`,
        { detail: { path: args.path } },
      );
    }
    return { error: failure?.toJSON() ?? null, data: { events: this.#sent } };
  }

  /** Stops watching and the debounce timer (idempotent). */
  #close(): void {
    if (this.#timer !== undefined) this.#ctx.clock.clearTimeout(this.#timer);
    this.#timer = undefined;
    if (this.#closed) return;
    this.#closed = true;
    try {
      this.#source.close();
    } catch {
      // Already closed by the OS side.
    }
  }

  /** Takes in one raw event. Returns true when it says the watched path itself is gone. */
  #raw(event: Deno.FsEvent): boolean {
    if (event.flag === "rescan") {
      this.#ctx.log("warn", "the OS dropped change events: some changes were not reported", {
        path: this.#root,
      });
    }
    const paths = event.paths;
    switch (event.kind) {
      case "create":
      case "modify":
        for (const path of paths) if (this.#inScope(path)) this.#add(path, event.kind);
        return false;
      case "remove":
        for (const path of paths) {
          if (path === this.#root) return true;
          if (this.#inScope(path)) this.#add(path, "remove");
        }
        return false;
      case "rename": {
        if (paths.length >= 2) {
          this.#renamed(paths[0], paths[1]);
        } else if (paths.length === 1 && this.#inScope(paths[0])) {
          this.#add(paths[0], "rename");
        }
        return false;
      }
      default:
        // "access" (a file closed), "any", "other": not changes worth an output.
        return false;
    }
  }

  /** A rename with both paths known. */
  #renamed(from: string, to: string): void {
    const fromIn = this.#inScope(from) && from !== this.#root;
    const toIn = this.#inScope(to);
    if (fromIn && toIn) {
      // The old path's own event (a remove, or what came before it) is superseded.
      this.#pending.delete(from);
      this.#add(to, "rename", from);
    } else if (toIn) {
      this.#add(to, "rename");
    } else if (fromIn) {
      this.#add(from, "remove");
    }
  }

  /** Whether changes to `path` are reported under `recursive`. */
  #inScope(path: string): boolean {
    if (path === this.#root) return true;
    if (this.#args.recursive) return pathWithin(path, this.#root);
    return posix.dirname(path) === this.#root;
  }

  /** Merges a raw change of `path` into its pending output (see the module doc). */
  #add(path: string, kind: FsEventKind, from?: string): void {
    const prev = this.#pending.get(path);
    if (!prev) {
      if (this.#pending.size >= this.#maxPending) this.#flush(Infinity);
      this.#pending.set(path, { kind, from, due: this.#ctx.clock.now() + this.#args.debounce });
      this.#arm();
      return;
    }
    if (kind === "rename") {
      const lost = prev.kind === "rename" ? prev.from : undefined;
      prev.kind = "rename";
      prev.from = from;
      if (lost !== undefined && lost !== from) this.#movedAway(lost);
      return;
    }
    switch (prev.kind) {
      case "create":
        if (kind === "remove") this.#pending.delete(path);
        return;
      case "modify":
        if (kind === "remove") prev.kind = "remove";
        return;
      case "remove":
        if (kind !== "remove") prev.kind = "modify";
        return;
      case "rename":
        if (kind === "remove") {
          const lost = prev.from;
          prev.kind = "remove";
          prev.from = undefined;
          if (lost !== undefined) this.#movedAway(lost);
        }
        return;
    }
  }

  /**
   * `path` was renamed to a path whose rename is no longer reported: its going away is
   * reported instead, unless something newer is waiting for it.
   */
  #movedAway(path: string): void {
    if (!this.#pending.has(path)) this.#add(path, "remove");
  }

  /** Arms the debounce timer for the oldest pending change, if not armed. */
  #arm(): void {
    if (this.#timer !== undefined || this.#closed) return;
    const first = this.#pending.values().next();
    if (first.done) return;
    const wait = Math.max(0, first.value.due - this.#ctx.clock.now());
    this.#timer = this.#ctx.clock.setTimeout(() => {
      this.#timer = undefined;
      this.#flush(this.#ctx.clock.now());
      this.#arm();
    }, wait);
  }

  /** Sends (after those already on their way) every pending change due by `until`. */
  #flush(until: number): void {
    const batch: [string, Pending][] = [];
    for (const [path, change] of this.#pending) {
      if (change.due > until) break;
      batch.push([path, change]);
    }
    if (batch.length === 0) return;
    for (const [path] of batch) this.#pending.delete(path);
    this.#queued += batch.length;
    if (this.#pending.size === 0 && this.#timer !== undefined) {
      this.#ctx.clock.clearTimeout(this.#timer);
      this.#timer = undefined;
    }
    this.#sending = this.#sending.then(() => this.#send(batch)).catch((err) => {
      this.#ctx.logger.error("cannot send file changes", { error: String(err) });
    });
  }

  async #send(batch: [string, Pending][]): Promise<void> {
    const wantRemoves = this.#wanted.has("remove");
    for (const [path, change] of batch) {
      this.#queued--;
      const wanted = this.#wanted.has(change.kind);
      let isDir = this.#known.has(path) ||
        (change.from !== undefined && this.#known.has(change.from));
      if (change.kind === "remove") {
        this.#known.delete(path);
      } else if (wanted || wantRemoves) {
        isDir = await this.#isDir(path, isDir);
      }
      if (change.from !== undefined) this.#known.delete(change.from);
      if (!wanted) continue;
      const out: FsWatchEvent = { event: change.kind, path, isDir };
      if (change.kind === "rename" && change.from !== undefined) {
        out.from = change.from;
        out.to = path;
      }
      this.#emit(out);
    }
  }

  /** Whether `path` is a directory now (remembered for its removal); `last` if unknown. */
  async #isDir(path: string, last: boolean): Promise<boolean> {
    let isDir: boolean;
    try {
      isDir = (await Deno.lstat(path)).isDirectory;
    } catch {
      return last;
    }
    if (!isDir) {
      this.#known.delete(path);
    } else if (!this.#known.has(path)) {
      if (this.#known.size >= MAX_KNOWN_DIRS) {
        const oldest = this.#known.values().next();
        if (!oldest.done) this.#known.delete(oldest.value);
      }
      this.#known.add(path);
    }
    return isDir;
  }

  #emit(out: FsWatchEvent): void {
    this.#ctx.emitData({ ...out });
    this.#sent++;
  }
}

/** The direct subdirectories of `dir` (at most {@link MAX_KNOWN_DIRS} - 1); empty on error. */
async function subdirectories(dir: string): Promise<Set<string>> {
  const dirs = new Set<string>();
  try {
    for await (const entry of Deno.readDir(dir)) {
      if (dirs.size >= MAX_KNOWN_DIRS - 1) break;
      if (entry.isDirectory) dirs.add(posix.join(dir, entry.name));
    }
  } catch {
    // Unreadable: removed subdirectories will be reported with isDir false.
  }
  return dirs;
}

/** Whether `path` exists (without following a final symlink). */
async function exists(path: string): Promise<boolean> {
  try {
    await Deno.lstat(path);
    return true;
  } catch {
    return false;
  }
}
