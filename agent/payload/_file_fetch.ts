/**
 * `file.fetch`'s download (see file.ts for the command): redirects followed by hand so the
 * agent's token never leaves its server's origin, the body streamed to a temporary file
 * beside the destination while it is counted and hashed, then synced and renamed into place.
 *
 * @module
 */
import { createHash } from "node:crypto";
import { posix } from "node:path";
import { isJwError, JwError } from "../../shared/errors.ts";
import { osError, statOrNull } from "./_os.ts";
import { formatDuration } from "../../shared/units.ts";
import type { RunContext, RunResult } from "./commands.ts";
import type { FileFetchArgs } from "./file.ts";
import { checkPath } from "./paths.ts";

/** Most redirects followed. */
export const MAX_REDIRECTS = 5;

/** Bodies larger than this report progress. */
export const PROGRESS_ABOVE_BYTES = 1024 * 1024;

/** Least time between two progress outputs, ms. */
export const PROGRESS_EVERY_MS = 1000;

const REDIRECTS = new Set([301, 302, 303, 307, 308]);

/** Where to download from. */
interface Source {
  url: URL;
  /** The URL as reported: without credentials. */
  shown: string;
  /** The Authorization header for the source's origin, if any. */
  authorization?: string;
}

/** Runs `file.fetch`. */
export async function fetchFile(ctx: RunContext, args: FileFetchArgs): Promise<RunResult> {
  if (ctx.signal.aborted) throw stopReason(ctx.signal);
  const dest = await checkPath(ctx.paths, "write", args.dest);
  const dir = posix.dirname(dest);
  const dirInfo = await statOrNull(dir);
  if (!dirInfo?.isDirectory) {
    throw new JwError("not_found", `cannot write ${args.dest}: directory ${dir} does not exist`, {
      detail: { dest: args.dest, dir },
    });
  }
  const existing = await statOrNull(dest);
  if (existing?.isDirectory) {
    throw new JwError("invalid_args", `cannot write ${args.dest}: it is a directory`, {
      detail: { dest: args.dest },
    });
  }
  const source = await sourceOf(ctx, args);

  if (args.sha256 !== undefined && existing?.isFile) {
    const have = await hashFile(dest, ctx.signal);
    if (have.sha256 === args.sha256) {
      if (args.mode !== undefined && ((existing.mode ?? 0) & 0o777) !== args.mode) {
        await Deno.chmod(dest, args.mode).catch((err) => {
          throw osError(err, "cannot chmod", dest);
        });
      }
      return {
        error: null,
        data: { dest, bytes: have.bytes, sha256: have.sha256, url: source.shown, unchanged: true },
      };
    }
  }
  // Without a mode, a replaced file keeps its own (a new one gets the temp file's 0600).
  const mode = args.mode ?? (existing?.isFile ? (existing.mode ?? 0o600) & 0o777 : undefined);
  return await download(ctx, { ...args, mode }, source, dest);
}

/** The URL to fetch and the header to send with it. */
async function sourceOf(ctx: RunContext, args: FileFetchArgs): Promise<Source> {
  if (args.url !== undefined) {
    const url = new URL(args.url);
    let authorization: string | undefined;
    if (url.username !== "" || url.password !== "") {
      // Credentials in the URL are the operator's, for that origin only (basic auth).
      const user = decodeURIComponent(url.username);
      const password = decodeURIComponent(url.password);
      authorization = `Basic ${btoa(String.fromCharCode(...encode(`${user}:${password}`)))}`;
      url.username = "";
      url.password = "";
    }
    return { url, shown: url.href, authorization };
  }
  const base = ctx.server.url();
  if (base === null) {
    throw new JwError("unavailable", `cannot fetch ${args.path} from the server: not connected`, {
      detail: { path: args.path },
    });
  }
  const encoded = args.path!.split("/").map(encodeURIComponent).join("/");
  const url = new URL(`${base.replace(/\/+$/, "")}/files/${encoded}`);
  url.username = "";
  url.password = "";
  return { url, shown: url.href, authorization: await ctx.server.authorization() };
}

/** Downloads `source` to a temporary file beside `dest`, checks it, and renames it there. */
async function download(
  ctx: RunContext,
  args: FileFetchArgs,
  source: Source,
  dest: string,
): Promise<RunResult> {
  const { clock, signal } = ctx;
  const controller = new AbortController();
  let why: JwError | undefined;
  const stop = (err: JwError) => {
    why ??= err;
    controller.abort(err);
  };
  const timer = clock.setTimeout(
    () =>
      stop(
        new JwError(
          "timeout",
          `download of ${source.shown} took longer than ${formatDuration(args.timeout)}`,
          { detail: { url: source.shown } },
        ),
      ),
    args.timeout,
  );
  const onAbort = () => stop(stopReason(signal));
  signal.addEventListener("abort", onAbort, { once: true });

  const dir = posix.dirname(dest);
  const temp = posix.join(dir, `.${posix.basename(dest)}.jw-${randomHex(6)}.part`);
  let file: Deno.FsFile | undefined;
  let placed = false;
  try {
    const response = await request(source, controller.signal, () => why);
    const total = contentLength(response);
    if (total !== undefined && total > args.maxBytes) {
      throw tooLarge(source.shown, args.maxBytes, `its Content-Length is ${total}`);
    }
    try {
      file = await Deno.open(temp, { write: true, createNew: true, mode: 0o600 });
    } catch (err) {
      throw osError(err, "cannot create", temp);
    }
    const hash = createHash("sha256");
    // A compressed body's length says nothing of the bytes it becomes.
    const progress = new Progress(
      ctx,
      response.headers.has("content-encoding") ? undefined : total,
    );
    let bytes = 0;
    if (response.body) {
      try {
        for await (const chunk of response.body) {
          bytes += chunk.length;
          if (bytes > args.maxBytes) {
            stop(tooLarge(source.shown, args.maxBytes, "its body is larger"));
            break;
          }
          hash.update(chunk);
          await writeAll(file, chunk, temp);
          progress.update(bytes);
        }
      } catch (err) {
        if (why) throw why;
        if (isJwError(err)) throw err;
        throw new JwError("unavailable", `download of ${source.shown} failed: ${message(err)}`, {
          cause: err,
          detail: { url: source.shown },
        });
      }
    }
    if (why) throw why;
    const sha256 = hash.digest("hex");
    if (args.sha256 !== undefined && sha256 !== args.sha256) {
      throw new JwError(
        "checksum_mismatch",
        `${source.shown} has sha256 ${sha256}, expected ${args.sha256}: not written to ${dest}`,
        { detail: { url: source.shown, expected: args.sha256, actual: sha256 } },
      );
    }
    try {
      await file.sync();
      file.close();
      file = undefined;
      if (args.mode !== undefined) await Deno.chmod(temp, args.mode);
      await Deno.rename(temp, dest);
      placed = true;
    } catch (err) {
      throw osError(err, "cannot write", dest);
    }
    await syncDir(dir);
    return { error: null, data: { dest, bytes, sha256, url: source.shown } };
  } catch (err) {
    throw why ?? err;
  } finally {
    clock.clearTimeout(timer);
    signal.removeEventListener("abort", onAbort);
    controller.abort(); // lets go of a body not read to its end
    try {
      file?.close();
    } catch {
      // already closed
    }
    if (!placed) await Deno.remove(temp).catch(() => {});
  }
}

/**
 * Fetches `source`, following redirects by hand: the Authorization header goes only to the
 * source's own origin and is dropped for good once a redirect leaves it.
 * @param aborted the reason the download was stopped, if it was.
 */
async function request(
  source: Source,
  signal: AbortSignal,
  aborted: () => JwError | undefined,
): Promise<Response> {
  let url = source.url;
  let authorization = source.authorization;
  for (let hops = 0;; hops++) {
    const headers = new Headers();
    if (authorization !== undefined) headers.set("authorization", authorization);
    let response: Response;
    try {
      response = await fetch(url, { redirect: "manual", headers, signal });
    } catch (err) {
      throw aborted() ?? new JwError(
        "unavailable",
        `cannot fetch ${shown(url)}: ${message(err)}`,
        { cause: err, detail: { url: shown(url) } },
      );
    }
    if (REDIRECTS.has(response.status)) {
      await response.body?.cancel();
      const location = response.headers.get("location");
      if (location === null) {
        throw new JwError(
          "unavailable",
          `${shown(url)} answered ${response.status} without a ` +
            "Location",
          { detail: { url: shown(url), status: response.status } },
        );
      }
      if (hops >= MAX_REDIRECTS) {
        throw new JwError(
          "unavailable",
          `fetching ${source.shown}: more than ${MAX_REDIRECTS} redirects (the last to ${location})`,
          { detail: { url: source.shown } },
        );
      }
      let next: URL;
      try {
        next = new URL(location, url);
      } catch {
        throw new JwError("unavailable", `${shown(url)} redirected to a bad URL: ${location}`);
      }
      if (next.protocol !== "http:" && next.protocol !== "https:") {
        throw new JwError("unavailable", `${shown(url)} redirected to ${shown(next)}: not http`, {
          detail: { url: shown(url), location: shown(next) },
        });
      }
      next.username = "";
      next.password = "";
      if (next.origin !== source.url.origin) authorization = undefined;
      url = next;
      continue;
    }
    if (response.status < 200 || response.status > 299) {
      await response.body?.cancel();
      const status = `${response.status}${response.statusText ? ` ${response.statusText}` : ""}`;
      throw new JwError(
        response.status === 404 || response.status === 410 ? "not_found" : "unavailable",
        `GET ${shown(url)} answered ${status}`,
        { detail: { url: shown(url), status: response.status } },
      );
    }
    return response;
  }
}

/** Progress outputs for a large body: at most once a second, about 100 at most. */
class Progress {
  readonly #ctx: RunContext;
  readonly #total: number | undefined;
  readonly #start: number;
  #last: number;
  #lastPercent = -1;

  constructor(ctx: RunContext, total: number | undefined) {
    this.#ctx = ctx;
    this.#total = total;
    this.#start = this.#last = ctx.clock.now();
  }

  update(bytes: number): void {
    const total = this.#total;
    if ((total ?? bytes) <= PROGRESS_ABOVE_BYTES) return;
    const now = this.#ctx.clock.now();
    if (now - this.#last < PROGRESS_EVERY_MS) return;
    if (total !== undefined && total > 0) {
      // Whole percents only: at most 100 of them.
      const percent = Math.min(100, Math.floor(bytes * 100 / total));
      if (percent <= this.#lastPercent) return;
      this.#lastPercent = percent;
      this.#ctx.emitData({ progress: { bytes, total, percent } });
    } else {
      // Unknown size: the gap grows with the time taken (a tenth of it), so a day-long
      // download still reports about 100 times.
      if (now - this.#last < (now - this.#start) / 10) return;
      this.#ctx.emitData({ progress: { bytes } });
    }
    this.#last = now;
  }
}

/** The sha256 and size of the file at `path`. */
async function hashFile(
  path: string,
  signal: AbortSignal,
): Promise<{ sha256: string; bytes: number }> {
  const hash = createHash("sha256");
  let bytes = 0;
  let file: Deno.FsFile;
  try {
    file = await Deno.open(path, { read: true });
  } catch (err) {
    throw osError(err, "cannot read", path);
  }
  try {
    const buf = new Uint8Array(256 * 1024);
    for (;;) {
      if (signal.aborted) throw stopReason(signal);
      const n = await file.read(buf);
      if (n === null) break;
      bytes += n;
      hash.update(buf.subarray(0, n));
    }
  } finally {
    file.close();
  }
  return { sha256: hash.digest("hex"), bytes };
}

async function writeAll(file: Deno.FsFile, data: Uint8Array, path: string): Promise<void> {
  let done = 0;
  while (done < data.length) {
    try {
      done += await file.write(data.subarray(done));
    } catch (err) {
      throw osError(err, "cannot write", path);
    }
  }
}

/** Makes the rename durable; best effort (some file systems cannot sync a directory). */
async function syncDir(dir: string): Promise<void> {
  try {
    using handle = await Deno.open(dir, { read: true });
    await handle.sync();
  } catch {
    // the file is in place; only its survival of a power cut is less certain
  }
}

function contentLength(response: Response): number | undefined {
  const value = response.headers.get("content-length");
  if (value === null || !/^\d+$/.test(value.trim())) return undefined;
  return Number(value);
}

function tooLarge(url: string, max: number, why: string): JwError {
  return new JwError("resource_limit", `${url} is larger than maxBytes (${max} bytes): ${why}`, {
    detail: { url, maxBytes: max },
  });
}

/** A URL without credentials. */
function shown(url: URL): string {
  if (url.username === "" && url.password === "") return url.href;
  const copy = new URL(url.href);
  copy.username = "";
  copy.password = "";
  return copy.href;
}

/** The JwError a run was aborted with (the runner aborts with one), else a generic `closed`. */
function stopReason(signal: AbortSignal): JwError {
  return isJwError(signal.reason)
    ? signal.reason
    : new JwError("closed", "download stopped because the agent is stopping");
}

function message(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

function encode(text: string): Uint8Array {
  return new TextEncoder().encode(text);
}

function randomHex(bytes: number): string {
  return Array.from(crypto.getRandomValues(new Uint8Array(bytes)))
    .map((b) => b.toString(16).padStart(2, "0")).join("");
}
