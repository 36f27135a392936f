/**
 * Serving one regular file over HTTP: validators, conditional requests, a single byte range,
 * and a body streamed from the open file (never read into memory).
 *
 * - `ETag` is strong: `"<size>-<mtime ms>-<inode>"` in hex for files under the root, or the
 *   one the caller gives (`"sha256-<hex>"` for files from the upstream cache).
 * - `If-None-Match` (weak comparison, `*` allowed) answers 304 when it matches; without it,
 *   `If-Modified-Since` answers 304 when the file is not newer (to the second).
 * - `Range: bytes=a-b`, `bytes=a-` and `bytes=-n` (one range) answer 206 with `Content-Range`;
 *   a range starting at or past the end answers 416 with a `Content-Range` naming only the
 *   file's size. A multi-range, malformed or non-`bytes` range is ignored: 200 with the whole file. An
 *   `If-Range` that does not match the strong `ETag` (or `Last-Modified`, exactly) also gets
 *   the whole file.
 *
 * @module
 */
import { contentTypeFor } from "./_mime.ts";

/** Bytes read from the file per body chunk. */
export const CHUNK_BYTES = 64 * 1024;

/**
 * Headers on every file response: browsers must not sniff types, and a served page runs in a
 * sandbox (an opaque origin), so a file cannot act on the server's own origin, where the
 * operator API lives.
 */
export const FILE_SECURITY_HEADERS: Readonly<Record<string, string>> = {
  "x-content-type-options": "nosniff",
  "content-security-policy": "sandbox",
};

/** A byte range asked for, as it applies to a file of a given size. */
export type RangeAsked =
  /** No usable range: serve the whole file. */
  | { kind: "whole" }
  /** Bytes `start`..`end`, both inclusive, within the file. */
  | { kind: "range"; start: number; end: number }
  /** A well-formed range that selects nothing of this file: 416. */
  | { kind: "unsatisfiable" };

/**
 * Interprets a `Range` header for a file of `size` bytes: one `bytes=a-b`, `bytes=a-` or
 * `bytes=-n` range. An end past the file is clamped; a suffix longer than the file is the
 * whole file (as a 206). Several ranges, another unit or bad syntax give `whole`.
 */
export function parseRange(header: string | null, size: number): RangeAsked {
  if (header === null) return { kind: "whole" };
  const m = /^\s*bytes\s*=\s*(\d*)\s*-\s*(\d*)\s*$/i.exec(header);
  if (!m || (m[1] === "" && m[2] === "")) return { kind: "whole" };
  if (m[1] === "") {
    const suffix = Number(m[2]);
    if (!Number.isSafeInteger(suffix)) return { kind: "whole" };
    if (suffix === 0 || size === 0) return { kind: "unsatisfiable" };
    return { kind: "range", start: Math.max(0, size - suffix), end: size - 1 };
  }
  const start = Number(m[1]);
  const end = m[2] === "" ? Infinity : Number(m[2]);
  if (!Number.isSafeInteger(start) || end < start || (m[2] !== "" && !Number.isSafeInteger(end))) {
    return { kind: "whole" };
  }
  if (start >= size) return { kind: "unsatisfiable" };
  return { kind: "range", start, end: Math.min(end, size - 1) };
}

/** The default strong validator of a file: size, mtime and inode, in hex. */
export function fileEtag(info: Deno.FileInfo): string {
  const hex = (n: number | null) => (n ?? 0).toString(16);
  return `"${hex(info.size)}-${hex(info.mtime?.getTime() ?? null)}-${hex(info.ino)}"`;
}

/** Strips the weak marker, for the weak comparison `If-None-Match` uses. */
function opaque(tag: string): string {
  return tag.startsWith("W/") ? tag.slice(2) : tag;
}

/** True when an `If-None-Match` list names `etag` (or is `*`). */
export function noneMatchHits(header: string, etag: string): boolean {
  const want = opaque(etag);
  return header.split(",").some((t) => {
    const tag = t.trim();
    return tag === "*" || opaque(tag) === want;
  });
}

/** A file's modification time in whole seconds, as HTTP dates carry it. */
function mtimeSeconds(info: Deno.FileInfo): number | undefined {
  const ms = info.mtime?.getTime();
  return ms === undefined ? undefined : Math.floor(ms / 1000);
}

/** True when the request's validators say the client's copy is current (answer 304). */
function notModified(req: Request, etag: string, info: Deno.FileInfo): boolean {
  const inm = req.headers.get("if-none-match");
  if (inm !== null) return noneMatchHits(inm, etag);
  const ims = req.headers.get("if-modified-since");
  const mtime = mtimeSeconds(info);
  if (ims === null || mtime === undefined) return false;
  const since = Date.parse(ims);
  return Number.isFinite(since) && mtime <= Math.floor(since / 1000);
}

/** True when an `If-Range` precondition lets the range apply. */
function ifRangeHolds(req: Request, etag: string, info: Deno.FileInfo): boolean {
  const value = req.headers.get("if-range")?.trim();
  if (value === undefined) return true;
  if (value.startsWith('"') || value.startsWith("W/")) return value === etag;
  const date = Date.parse(value);
  return Number.isFinite(date) && mtimeSeconds(info) === Math.floor(date / 1000);
}

/**
 * A stream of `length` bytes of `file` from its current position. The file is closed when
 * the stream ends, fails or is cancelled (the client went away).
 */
function fileBody(file: Deno.FsFile, length: number): ReadableStream<Uint8Array> {
  let remaining = length;
  let open = true;
  const close = () => {
    if (open) {
      open = false;
      file.close();
    }
  };
  return new ReadableStream<Uint8Array>({
    async pull(controller) {
      try {
        if (remaining <= 0) {
          close();
          controller.close();
          return;
        }
        const buf = new Uint8Array(Math.min(CHUNK_BYTES, remaining));
        const n = await file.read(buf);
        if (n === null) {
          // The file shrank since it was measured: end early.
          close();
          controller.close();
          return;
        }
        remaining -= n;
        controller.enqueue(buf.subarray(0, n));
        if (remaining <= 0) {
          close();
          controller.close();
        }
      } catch (err) {
        close();
        controller.error(err);
      }
    },
    cancel() {
      close();
    },
  });
}

/** What {@link serveFile} serves. */
export interface FileToServe {
  /** The real path to open; a regular file. */
  path: string;
  /** The name the content type is chosen by (the request path). */
  name: string;
  /** A strong `ETag` to use instead of {@link fileEtag}. */
  etag?: string;
  /** Further headers on every answer (200, 206, 304, 416). */
  headers?: Record<string, string>;
}

/**
 * Answers a GET or HEAD for one regular file: 200, 206, 304 or 416 as the module doc says.
 * The file is opened once and measured through the open handle; a GET body streams from it
 * and closes it at the end (or when the client goes away); every other answer closes it
 * before returning.
 * @throws Deno errors from opening or measuring the file (the caller maps them).
 */
export async function serveFile(req: Request, target: FileToServe): Promise<Response> {
  const file = await Deno.open(target.path, { read: true });
  let handedOff = false;
  try {
    const info = await file.stat();
    const etag = target.etag ?? fileEtag(info);
    const headers = new Headers({ ...FILE_SECURITY_HEADERS, ...target.headers });
    headers.set("etag", etag);
    if (info.mtime) headers.set("last-modified", info.mtime.toUTCString());
    headers.set("accept-ranges", "bytes");
    if (notModified(req, etag, info)) return new Response(null, { status: 304, headers });

    const size = info.size;
    const range = ifRangeHolds(req, etag, info)
      ? parseRange(req.headers.get("range"), size)
      : { kind: "whole" as const };
    if (range.kind === "unsatisfiable") {
      headers.set("content-range", `bytes */${size}`);
      headers.set("content-type", "text/plain; charset=utf-8");
      const text = `range not satisfiable: the file has ${size} bytes\n`;
      return new Response(req.method === "HEAD" ? null : text, { status: 416, headers });
    }
    headers.set("content-type", contentTypeFor(target.name));
    let status = 200;
    let start = 0;
    let length = size;
    if (range.kind === "range") {
      status = 206;
      start = range.start;
      length = range.end - range.start + 1;
      headers.set("content-range", `bytes ${range.start}-${range.end}/${size}`);
    }
    headers.set("content-length", String(length));
    if (req.method === "HEAD") return new Response(null, { status, headers });
    if (start > 0) await file.seek(start, Deno.SeekMode.Start);
    handedOff = true;
    return new Response(fileBody(file, length), { status, headers });
  } finally {
    if (!handedOff) file.close();
  }
}
