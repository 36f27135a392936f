/**
 * `file.tail`'s follower (see file.ts for the command): polls the path, reads what was
 * appended through an open handle, splits it into lines, and keeps its position in the job's
 * state.
 *
 * How a change at the path is told apart (every `poll`, or sooner on a file system event):
 * - same device and inode, size at the offset: nothing to do (one `stat`);
 * - same inode, larger: read the new bytes;
 * - same inode, smaller than the offset: truncated (copy-truncate); read it from its start;
 * - another inode at the path: rotated; read the rest of the old file through the handle,
 *   send its held partial line, then read the new file from its start;
 * - nothing at the path: keep reading the old handle (the writer may still write to it)
 *   until a file appears there.
 *
 * Limits: a file truncated and written past the old offset between two polls looks like an
 * append (its first bytes are skipped), as with `tail -F`; after an agent restart, a new file
 * that reuses the inode number of a deleted one is taken for it.
 *
 * @module
 */
import { posix } from "node:path";
import { Buffer } from "node:buffer";
import { JwError, toJwError } from "../../shared/errors.ts";
import { osError, statOrNull } from "./_os.ts";
import type { TimerId } from "../../shared/clock.ts";
import type { RunContext, RunResult } from "./commands.ts";
import type { FileTailArgs } from "./file.ts";
import { checkPath } from "./paths.ts";

/** Longest text output: a longer line is sent in pieces of at most this many bytes. */
export const MAX_LINE_BYTES = 64 * 1024;

/** Bytes read at once. */
const CHUNK_BYTES = 64 * 1024;

/** Most directory entries looked at to find a file rotated while the agent was stopped. */
const MAX_DIR_ENTRIES = 10_000;

const NEWLINE = 0x0a;
const CR = 0x0d;

/**
 * The saved position: the file being read (its real path when last seen, device and inode),
 * the bytes of it read, and the bytes of an unfinished last line held back (base64).
 * `{path, waiting: true}`: no file was open; the next file at the path is read from its start.
 */
interface Position {
  path: string;
  ino: number;
  dev: number;
  offset: number;
  partial?: string;
}

/** The file being read. */
interface Open {
  file: Deno.FsFile;
  /** Its real path when opened (it may have been renamed since). */
  path: string;
  ino: number;
  dev: number;
}

/** Runs `file.tail` until `ctx.signal` aborts or `args.for` passes. */
export async function tailFile(ctx: RunContext, args: FileTailArgs): Promise<RunResult> {
  const real = await checkPath(ctx.paths, "read", args.path);
  const tail = new Tail(ctx, args, real);
  try {
    await tail.run();
  } finally {
    await tail.close();
  }
  return { error: null, data: { lines: tail.lines } };
}

class Tail {
  readonly #ctx: RunContext;
  readonly #args: FileTailArgs;
  /** The path as given, normalised: what is stat'ed each poll (symlinks followed). */
  readonly #target: string;
  /** Its real path at start. */
  readonly #real: string;
  readonly #decoder = new TextDecoder();
  #cur: Open | null = null;
  #offset = 0;
  #pending: Uint8Array = new Uint8Array(0);
  #stopped = false;
  #woken = false;
  #wakeUp: (() => void) | undefined;
  #forTimer: TimerId | undefined;
  #watcher: Deno.FsWatcher | undefined;
  #watching: Promise<void> | undefined;
  #saidWaiting = false;
  #lastProblem: string | undefined;
  readonly #onAbort = () => this.#stop();
  /** Lines (and pieces of long lines) sent. */
  lines = 0;

  constructor(ctx: RunContext, args: FileTailArgs, real: string) {
    this.#ctx = ctx;
    this.#args = args;
    this.#target = posix.normalize(args.path);
    this.#real = real;
  }

  async run(): Promise<void> {
    const { signal, clock } = this.#ctx;
    if (signal.aborted) return;
    signal.addEventListener("abort", this.#onAbort, { once: true });
    if (this.#args.for !== undefined) {
      this.#forTimer = clock.setTimeout(() => this.#stop(), this.#args.for);
    }
    this.#watch(posix.dirname(this.#real));
    await this.#begin();
    while (!this.#stopped) {
      try {
        await this.#poll();
      } catch (err) {
        this.#problem(err);
      }
      if (this.#stopped) break;
      await this.#sleep(this.#args.poll);
    }
  }

  /** Stops watching and closes the file. The position was saved as it moved. */
  async close(): Promise<void> {
    this.#stopped = true;
    this.#ctx.signal.removeEventListener("abort", this.#onAbort);
    if (this.#forTimer !== undefined) this.#ctx.clock.clearTimeout(this.#forTimer);
    this.#wakeUp?.();
    try {
      this.#watcher?.close();
    } catch {
      // already closed
    }
    await this.#watching;
    this.#closeCurrent();
  }

  #stop(): void {
    this.#stopped = true;
    this.#wakeUp?.();
  }

  /** Picks the first file and offset: the saved position, else `from` and `lines`. */
  async #begin(): Promise<void> {
    const saved = this.#ctx.state.get();
    if (saved?.waiting === true) {
      await this.#openFresh("start");
      return;
    }
    const position = parsePosition(saved);
    if (position && await this.#resume(position)) return;
    await this.#openFresh(position ? "start" : this.#args.from);
  }

  /** Opens the file at the path (if there is one) at the start or the end. */
  async #openFresh(from: "start" | "end"): Promise<void> {
    if (!await this.#openTarget(true)) {
      this.#ctx.state.set({ path: this.#real, waiting: true });
      return;
    }
    const cur = this.#cur!;
    this.#offset = from === "start"
      ? 0
      : await startOfLastLines(cur.file, (await cur.file.stat()).size, this.#args.lines);
    this.#save();
    this.#ctx.log("debug", `following ${cur.path} from byte ${this.#offset}`, {
      path: cur.path,
      offset: this.#offset,
    });
  }

  /**
   * Goes on from a saved position: in the file at the path if it is still the same one,
   * else in the old file found beside it by its inode (rotated while the agent was stopped).
   * Returns false when neither is there (its held partial line is sent).
   */
  async #resume(saved: Position): Promise<boolean> {
    if (saved.partial) this.#pending = new Uint8Array(Buffer.from(saved.partial, "base64"));
    const here = await statOrNull(this.#target);
    let found: string | null = null;
    if (here && sameFile(here, saved)) {
      if (await this.#openTarget(true) && sameFile(this.#cur!, saved)) found = this.#cur!.path;
      else this.#closeCurrent();
    }
    if (found === null) {
      const old = await this.#findByInode(posix.dirname(saved.path), saved);
      if (old !== null) {
        try {
          const file = await Deno.open(old, { read: true });
          this.#cur = { file, path: old, ino: saved.ino, dev: saved.dev };
          found = old;
          this.#ctx.log(
            "info",
            `${this.#target} was rotated while the agent was stopped: ` +
              `finishing ${old} first`,
            { path: this.#target, old },
          );
        } catch (err) {
          this.#problem(osError(err, "cannot read", old));
        }
      }
    }
    if (found === null) {
      this.#ctx.log(
        "warn",
        `the file followed before the agent stopped (${saved.path}, inode ${saved.ino}) is gone: ` +
          `whatever was written to it after byte ${saved.offset} was not read`,
        { path: saved.path, ino: saved.ino, offset: saved.offset },
      );
      this.#flushPending();
      return false;
    }
    const size = (await this.#cur!.file.stat()).size;
    if (size < saved.offset) {
      this.#ctx.log(
        "info",
        `${found} was truncated while the agent was stopped: reading it ` +
          `from its start`,
        { path: found, size, offset: saved.offset },
      );
      this.#flushPending();
      this.#offset = 0;
    } else {
      this.#offset = saved.offset;
    }
    this.#save();
    this.#ctx.log("debug", `following ${found} from byte ${this.#offset} (resumed)`, {
      path: found,
      offset: this.#offset,
    });
    return true;
  }

  /** One look at the path and the open file. */
  async #poll(): Promise<void> {
    if (this.#cur === null) {
      if (!await this.#openTarget(false)) return;
      this.#offset = 0;
      this.#save();
      this.#ctx.log("info", `${this.#target} appeared: following it from its start`, {
        path: this.#target,
      });
    }
    const cur = this.#cur!;
    const here = await statOrNull(this.#target);
    if (here && sameFile(here, cur)) {
      if (here.size === this.#offset) return;
      if (here.size < this.#offset) {
        this.#ctx.log("info", `${this.#target} was truncated: reading it from its start`, {
          path: this.#target,
          size: here.size,
          offset: this.#offset,
        });
        this.#flushPending();
        this.#offset = 0;
        this.#save();
      }
      await this.#readToEnd();
      return;
    }
    // Another file, or none, at the path: what the old file still has comes first.
    await this.#readToEnd();
    if (here === null || this.#stopped) return;
    const old = this.#cur!;
    if (!await this.#openTarget(false)) return;
    old.file.close();
    this.#flushPending();
    this.#offset = 0;
    this.#save();
    this.#ctx.log("info", `${this.#target} was replaced (rotated): following the new file`, {
      path: this.#target,
      old: old.path,
    });
    await this.#readToEnd();
  }

  /** Reads the open file from the offset to its end, sending lines and saving the position. */
  async #readToEnd(): Promise<void> {
    const { file } = this.#cur!;
    await file.seek(this.#offset, Deno.SeekMode.Start);
    const buf = new Uint8Array(CHUNK_BYTES);
    while (!this.#stopped) {
      const n = await file.read(buf);
      if (n === null || n === 0) return;
      this.#offset += n;
      this.#feed(buf.subarray(0, n));
      this.#save();
    }
  }

  /**
   * Opens the file at the path (checked again: a symlink there may point elsewhere now) as
   * the current one; the previous handle is kept by the caller. Returns false when there is
   * none (said once) or, after the start, when it cannot be opened (logged).
   * @param first at start: a refusal or an unreadable file is an error.
   */
  async #openTarget(first: boolean): Promise<boolean> {
    let real: string;
    let file: Deno.FsFile;
    try {
      real = first ? this.#real : await checkPath(this.#ctx.paths, "read", this.#target);
      file = await Deno.open(real, { read: true });
    } catch (err) {
      if (err instanceof Deno.errors.NotFound) {
        if (!this.#saidWaiting) {
          this.#saidWaiting = true;
          this.#ctx.log("info", `${this.#target} does not exist yet: waiting for it`, {
            path: this.#target,
          });
        }
        return false;
      }
      const e = osError(err, "cannot read", this.#target);
      if (first) throw e;
      this.#problem(e);
      return false;
    }
    let info: Deno.FileInfo;
    try {
      info = await file.stat();
    } catch (err) {
      file.close();
      throw osError(err, "cannot read", real);
    }
    if (!info.isFile) {
      file.close();
      const e = new JwError("invalid_args", `${this.#target} is not a regular file`, {
        detail: { path: this.#target },
      });
      if (first) throw e;
      this.#problem(e);
      return false;
    }
    this.#saidWaiting = false;
    this.#lastProblem = undefined;
    // The previous handle, if any, is closed by the caller once it has read it to its end.
    this.#cur = { file, path: real, ino: info.ino ?? 0, dev: info.dev };
    return true;
  }

  /** The file in `dir` with the saved device and inode, if it may be read. */
  async #findByInode(dir: string, saved: Position): Promise<string | null> {
    let seen = 0;
    try {
      for await (const entry of Deno.readDir(dir)) {
        if (++seen > MAX_DIR_ENTRIES) break;
        if (!entry.isFile) continue;
        const path = posix.join(dir, entry.name);
        const info = await statOrNull(path);
        if (!info || !sameFile(info, saved)) continue;
        try {
          return await checkPath(this.#ctx.paths, "read", path);
        } catch (err) {
          this.#ctx.log(
            "warn",
            `${path} is the file followed before, but may not be read: ` +
              toJwError(err).message,
            { path },
          );
          return null;
        }
      }
    } catch (err) {
      if (!(err instanceof Deno.errors.NotFound)) this.#problem(osError(err, "cannot read", dir));
    }
    return null;
  }

  /** Splits `bytes` (after the held partial line) into lines and sends them. */
  #feed(bytes: Uint8Array): void {
    const data = this.#pending.length === 0 ? bytes : concat(this.#pending, bytes);
    let start = 0;
    for (;;) {
      const nl = data.indexOf(NEWLINE, start);
      const end = nl === -1 ? data.length : nl;
      if (end - start > MAX_LINE_BYTES) {
        const cut = utf8Boundary(data, start, start + MAX_LINE_BYTES);
        this.#emit(data.subarray(start, cut));
        start = cut;
        continue;
      }
      if (nl === -1) break;
      this.#emit(withoutCr(data.subarray(start, nl)));
      start = nl + 1;
    }
    this.#pending = data.slice(start);
  }

  /** Sends the held partial line, if any (its file was rotated away or truncated). */
  #flushPending(): void {
    if (this.#pending.length === 0) return;
    this.#emit(withoutCr(this.#pending));
    this.#pending = new Uint8Array(0);
  }

  #emit(line: Uint8Array): void {
    this.#ctx.emitText("stdout", this.#decoder.decode(line));
    this.lines++;
  }

  /** Saves the position in the job's state. */
  #save(): void {
    const cur = this.#cur;
    if (cur === null) return;
    const position: Position = {
      path: cur.path,
      ino: cur.ino,
      dev: cur.dev,
      offset: this.#offset,
    };
    if (this.#pending.length > 0) {
      position.partial = Buffer.from(this.#pending).toString("base64");
    }
    this.#ctx.state.set({ ...position });
  }

  /** Logs a problem met while following (once until it changes or goes away). */
  #problem(err: unknown): void {
    const e = toJwError(err);
    if (e.message === this.#lastProblem) return;
    this.#lastProblem = e.message;
    this.#ctx.log("warn", `${e.message} (still trying)`, { path: this.#target, code: e.code });
  }

  #closeCurrent(): void {
    try {
      this.#cur?.file.close();
    } catch {
      // already closed
    }
    this.#cur = null;
  }

  /** Watches `dir` so that a change to the file ends the poll wait early; polling only if not. */
  #watch(dir: string): void {
    let watcher: Deno.FsWatcher;
    try {
      watcher = Deno.watchFs(dir, { recursive: false });
    } catch {
      return; // the directory is not there (yet), or no watches are left: polling it is
    }
    this.#watcher = watcher;
    const names = new Set([this.#real, this.#target]);
    this.#watching = (async () => {
      try {
        for await (const event of watcher) {
          if (event.paths.some((p) => names.has(p))) this.#wake();
        }
      } catch {
        // closed, or the directory went away: polling goes on
      }
    })();
  }

  #wake(): void {
    this.#woken = true;
    this.#wakeUp?.();
  }

  /** Waits `ms`, or less when woken or stopped. */
  #sleep(ms: number): Promise<void> {
    if (this.#woken || this.#stopped) {
      this.#woken = false;
      return Promise.resolve();
    }
    const { clock } = this.#ctx;
    return new Promise((resolve) => {
      const done = () => {
        clock.clearTimeout(timer);
        this.#wakeUp = undefined;
        this.#woken = false;
        resolve();
      };
      const timer = clock.setTimeout(done, ms);
      this.#wakeUp = done;
    });
  }
}

/** The saved position in `state`, or null when there is none (or it is malformed). */
function parsePosition(state: Record<string, unknown> | undefined): Position | null {
  if (!state) return null;
  const { path, ino, dev, offset, partial } = state;
  if (
    typeof path !== "string" || typeof ino !== "number" || typeof dev !== "number" ||
    typeof offset !== "number" || !Number.isSafeInteger(offset) || offset < 0 ||
    (partial !== undefined && typeof partial !== "string")
  ) return null;
  return { path, ino, dev, offset, ...(partial === undefined ? {} : { partial }) };
}

function sameFile(info: { ino: number | null; dev: number }, pos: { ino: number; dev: number }) {
  return (info.ino ?? 0) === pos.ino && info.dev === pos.dev;
}

/**
 * Where the last `n` lines of a file of `size` bytes begin (with any unfinished line after
 * them): after the (n+1)-th newline from the end, or 0 when there are fewer.
 */
async function startOfLastLines(file: Deno.FsFile, size: number, n: number): Promise<number> {
  let wanted = n + 1;
  let pos = size;
  const buf = new Uint8Array(CHUNK_BYTES);
  while (pos > 0) {
    const len = Math.min(CHUNK_BYTES, pos);
    pos -= len;
    const chunk = buf.subarray(0, len);
    await readExactly(file, pos, chunk);
    for (let i = len - 1; i >= 0; i--) {
      if (chunk[i] === NEWLINE && --wanted === 0) return pos + i + 1;
    }
  }
  return 0;
}

/** Fills `into` from byte `at` of `file` (shorter only if the file ends first). */
async function readExactly(file: Deno.FsFile, at: number, into: Uint8Array): Promise<void> {
  await file.seek(at, Deno.SeekMode.Start);
  let got = 0;
  while (got < into.length) {
    const n = await file.read(into.subarray(got));
    if (n === null || n === 0) {
      into.fill(0, got);
      return;
    }
    got += n;
  }
}

/** The largest index ≤ `at` (and > `start`) that does not split a UTF-8 sequence. */
function utf8Boundary(data: Uint8Array, start: number, at: number): number {
  let i = at;
  while (i > start && (data[i] & 0xc0) === 0x80) i--;
  return i > start ? i : at;
}

function withoutCr(line: Uint8Array): Uint8Array {
  return line.length > 0 && line[line.length - 1] === CR ? line.subarray(0, -1) : line;
}

function concat(a: Uint8Array, b: Uint8Array): Uint8Array {
  const out = new Uint8Array(a.length + b.length);
  out.set(a);
  out.set(b, a.length);
  return out;
}
