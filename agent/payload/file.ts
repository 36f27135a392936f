/**
 * The `file` commands: following a log file and downloading a file.
 *
 * ## `file.tail {path, from?, lines?, poll?, for?}`
 *
 * Follows a text file like `tail -F` and sends each new line as a `stdout` text output.
 * - `path`: absolute, readable under the agent's `--allow-read` paths. It may not exist yet:
 *   the command says so once (an info log) and waits for it, then reads it from its start.
 * - `from`: `"end"` (default: only what is written from now on) or `"start"`.
 * - `lines`: with `from: "end"`, also send the last N existing lines first (0–10000,
 *   default 0), like `tail -n`.
 * - `poll`: how often it looks at the file (default "250ms", 10ms–10s); a file system event
 *   wakes it sooner. An idle file costs one `stat` per poll.
 * - `for`: ends by itself after this long (e.g. "10m"); otherwise it runs until the job is
 *   stopped.
 *
 * Lines are sent without their newline (and a "\r" before it); a line over 64 KiB is sent in
 * pieces; a last line without a newline is held until its newline arrives, or until the file
 * is rotated away. Rotation: when another file takes the path's place (rename and create, as
 * logrotate does), it reads the rest of the old file through its open handle, then the new
 * file from its start; when the file shrinks below what was read (copy-truncate) it reads it
 * again from its start (both logged at info).
 *
 * Its position (the file's path, device and inode, the offset read, the held partial line)
 * is the job's state, saved after each chunk of lines it sends. So a persistent job resumes
 * after an agent restart without losing or repeating lines, also when the file was rotated
 * while the agent was stopped: the old file is found beside the path by its inode (e.g.
 * `app.log.1`), finished, then the new file is read from its start. A saved position wins
 * over `from`. If the agent dies between sending a chunk and saving its position, that chunk
 * is sent again after the restart (at least once).
 *
 * The done output has `data: {lines}`: the number of text outputs sent.
 *
 * ## `file.fetch {url | path, dest, sha256?, mode?, maxBytes?, timeout?}`
 *
 * Downloads a file to the agent's disk.
 * - `url`: an http or https URL (credentials in it go to its own origin only), or
 * - `path`: a file on the agent's server, `<server>/files/<path>`, sent with the agent's
 *   token. Exactly one of the two.
 * - `dest`: absolute, under the agent's `--allow-write` paths; its directory must exist.
 * - `sha256`: the content's expected hash; a different one fails with `checksum_mismatch`
 *   and leaves `dest` as it was. When `dest` already has it, nothing is downloaded.
 * - `mode`: e.g. "0644" (at most 0777). Default: the replaced file's mode, 0600 for a new
 *   file.
 * - `maxBytes`: largest download (default "1GiB"); beyond it, error `resource_limit`.
 * - `timeout`: longest download (default "10m"); beyond it, error `timeout`.
 *
 * The body goes to a temporary file beside `dest` (`.<name>.jw-<random>.part`, mode 0600),
 * hashed as it arrives; once complete and checked it is synced, given its mode and renamed
 * onto `dest`, so `dest` is never half-written and a failed or stopped download leaves
 * nothing behind. Redirects are followed (at most 5); the agent's token never goes to
 * another origin than its server's. HTTP 404 fails with `not_found`, other statuses with
 * `unavailable` naming the status. A body over 1 MiB reports `{progress: {bytes, total?,
 * percent?}}` data outputs, at most once a second and about 100 in all.
 *
 * The done output has `data: {dest, bytes, sha256, url}` (`url` without credentials;
 * `unchanged: true` when nothing was downloaded).
 *
 * @module
 */
import { z } from "zod";
import { parseDuration, parseSize } from "../../shared/units.ts";
import { type Command, defineCommand } from "./commands.ts";
import { MAX_TIMEOUT_MS } from "./exec.ts";
import { tailFile } from "./_file_tail.ts";
import { fetchFile } from "./_file_fetch.ts";

/** Longest `lines` of `file.tail`. */
export const MAX_TAIL_LINES = 10_000;

/** A duration ("250ms", "5s" or a number of ms) between `min` and `max` ms; parses to ms. */
function duration(min: number, max: number, range: string) {
  return z.union([z.string(), z.number()]).transform((v, ctx) => {
    const ms = parseDuration(v);
    if (ms === undefined || ms < min || ms > max) {
      ctx.addIssue({
        code: "custom",
        message: `expected a duration like "5s" or "250ms" ${range}, got ${JSON.stringify(v)}`,
      });
      return z.NEVER;
    }
    return ms;
  });
}

/** A positive duration of at most about 24 days (what a timer can hold). */
const Positive = duration(1, MAX_TIMEOUT_MS, "(above 0, at most 24d)");

/** Arguments of `file.tail`. Unknown keys are rejected. */
export const FileTailArgs = z.object({
  /** The file to follow, absolute, under the agent's `--allow-read` paths. */
  path: z.string().min(1).max(4096).startsWith("/", "must be an absolute path"),
  /** Where to begin when there is no saved position: "end" (default) or "start". */
  from: z.enum(["end", "start"]).default("end"),
  /** With from "end": send the last N existing lines first (like `tail -n`). Default 0. */
  lines: z.number().int().min(0).max(MAX_TAIL_LINES).default(0),
  /** How often to look at the file. Default "250ms"; 10ms to 10s. */
  poll: z.union([z.string(), z.number()]).default("250ms").pipe(
    duration(10, 10_000, "from 10ms to 10s"),
  ),
  /** End by itself after this long. Default: run until stopped. */
  for: Positive.optional(),
}).strict();
export type FileTailArgs = z.output<typeof FileTailArgs>;

/** A path on the server's `/files/`: relative segments, no `.` or `..`. */
const FilesPath = z.string().min(1).max(4096).transform((v, ctx) => {
  const trimmed = v.replace(/^\/+/, "");
  const segments = trimmed.split("/");
  if (
    trimmed === "" || v.includes("\0") ||
    segments.some((s) => s === "" || s === "." || s === "..")
  ) {
    ctx.addIssue({
      code: "custom",
      message: `expected a file path like "tools/app.tar.gz" (no empty, . or .. segments), ` +
        `got ${JSON.stringify(v)}`,
    });
    return z.NEVER;
  }
  return trimmed;
});

/** An http or https URL. */
const HttpUrl = z.string().max(8192).refine((v) => {
  try {
    const u = new URL(v);
    return u.protocol === "http:" || u.protocol === "https:";
  } catch {
    return false;
  }
}, "expected an http:// or https:// URL");

/** A file mode: an octal string ("0644", "644", "0o644") or its number; at most 0777. */
const Mode = z.union([z.string(), z.number()]).transform((v, ctx) => {
  const mode = typeof v === "number"
    ? v
    : /^(0o?)?[0-7]{1,4}$/.test(v)
    ? parseInt(v.replace(/^0o/, ""), 8)
    : undefined;
  if (mode === undefined || !Number.isInteger(mode) || mode < 0) {
    ctx.addIssue({
      code: "custom",
      message: `expected an octal mode like "0644", got ${JSON.stringify(v)}`,
    });
    return z.NEVER;
  }
  if (mode > 0o777) {
    ctx.addIssue({
      code: "custom",
      message: `setuid, setgid and sticky bits are not allowed (at most 0777), got ${
        JSON.stringify(v)
      }`,
    });
    return z.NEVER;
  }
  return mode;
});

/** A size ("100MiB", "64kb" or a number of bytes) above 0; parses to bytes. */
const Size = z.union([z.string(), z.number()]).transform((v, ctx) => {
  const bytes = parseSize(v);
  if (bytes === undefined || bytes <= 0 || !Number.isSafeInteger(bytes)) {
    ctx.addIssue({
      code: "custom",
      message: `expected a size like "100MiB" or a number of bytes above 0, got ${
        JSON.stringify(v)
      }`,
    });
    return z.NEVER;
  }
  return bytes;
});

/** Arguments of `file.fetch`. Exactly one of `url` and `path`. Unknown keys are rejected. */
export const FileFetchArgs = z.object({
  /** Where to download from: an http or https URL (no agent token is sent with it). */
  url: HttpUrl.optional(),
  /** Or a file on the agent's server: `<server>/files/<path>`, with the agent's token. */
  path: FilesPath.optional(),
  /** Where to put it: an absolute path under `--allow-write`; its directory must exist. */
  dest: z.string().min(1).max(4096).startsWith("/", "must be an absolute path"),
  /** The content's expected sha256 (64 hex digits). */
  sha256: z.string().regex(/^[0-9a-fA-F]{64}$/, "expected 64 hex digits").transform((v) =>
    v.toLowerCase()
  ).optional(),
  /** The file's mode, e.g. "0644". Default: a replaced file's own mode, 0600 for a new file. */
  mode: Mode.optional(),
  /** Largest download. Default "1GiB". */
  maxBytes: z.union([z.string(), z.number()]).default("1GiB").pipe(Size),
  /** Longest download, redirects included. Default "10m". */
  timeout: z.union([z.string(), z.number()]).default("10m").pipe(Positive),
}).strict().superRefine((args, ctx) => {
  if ((args.url === undefined) === (args.path === undefined)) {
    ctx.addIssue({ code: "custom", message: "give exactly one of url and path" });
  }
});
export type FileFetchArgs = z.output<typeof FileFetchArgs>;

/** Creates `file.tail` and `file.fetch`. */
export function createFileCommands(): Command[] {
  return [
    defineCommand({
      key: "file.tail",
      description: "follows a text file like tail -F (rotation, truncation, restarts) and " +
        "streams its new lines",
      args: FileTailArgs,
      run: tailFile,
    }) as Command,
    defineCommand({
      key: "file.fetch",
      description: "downloads a URL or a file from the server to a path, sha256-checked, " +
        "replacing it atomically",
      args: FileFetchArgs,
      run: fetchFile,
    }) as Command,
  ];
}
