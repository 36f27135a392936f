/**
 * `journal.watch`: follows the systemd journal. It runs `journalctl -o json` (never through
 * a shell; `journalctl` must be on the agent's allowRun list) and sends every journal entry
 * as one structured output.
 *
 * Args (unknown keys are refused):
 * - `unit` — only this systemd unit's entries (`journalctl -u`); letters, digits and
 *   `:-_.@\` only.
 * - `identifier` — only entries with this `SYSLOG_IDENTIFIER` (`journalctl -t`).
 * - `since` — start at this time (`journalctl --since`, e.g. "2026-01-01 10:00:00",
 *   "-1h", "yesterday", "@1767261600"); letters, digits, spaces and `:.+-@` only.
 * - `priority` — the highest priority (the least severe level) to show, like
 *   `journalctl -p`: `emerg`, `alert`, `crit`, `err`, `warning`, `notice`, `info`, `debug`,
 *   or 0–7.
 * - `file` — read this journal file instead of the system journal (`journalctl --file`);
 *   `directory` — read the journal files in this directory (`journalctl -D`). At most one of
 *   the two; each must be an allowed read path (`--allow-read`) and may not hold glob
 *   characters (`*?[]`); symlinks in the directory and its subdirectories must stay inside
 *   the allowed paths too (checked at start).
 * - `journalctl` — the program's absolute path. Default "/usr/bin/journalctl".
 * - `follow` — keep following new entries (`journalctl -f`). Default true. Without `since`
 *   or a saved position, following starts with journalctl's own default: the last 10
 *   entries. With `follow: false` the command reads what is there and ends.
 * - `for` — end after this long ("10m", "30s", or ms). Default: until the job is deleted or
 *   replaced, or the agent stops.
 *
 * Outputs: one data output per entry, `{message, priority, level, ts, unit?, identifier?,
 * pid?, hostname?, cursor, fields, omitted?}`:
 * - `message` — `MESSAGE` as text (journald's byte arrays are decoded as UTF-8, invalid
 *   bytes replaced; a field given more than once is joined with newlines);
 * - `priority` — `PRIORITY` as a number (6, `info`, when absent, as journalctl shows it) and
 *   `level` its name;
 * - `ts` — `__REALTIME_TIMESTAMP` as ISO 8601 (null if absent);
 * - `unit` from `_SYSTEMD_UNIT` (else `UNIT`), `identifier` from `SYSLOG_IDENTIFIER`, `pid`
 *   from `_PID`, `hostname` from `_HOSTNAME`, `cursor` from `__CURSOR`;
 * - `fields` — every other field whose name does not start with `_` (not `MESSAGE`,
 *   `PRIORITY` or `SYSLOG_IDENTIFIER`), decoded like `message`; a field given more than once
 *   is an array of texts;
 * - `omitted` — names of fields journalctl left out because they are larger than 4096 bytes
 *   (their value is null; `message` is then ""), present only when there are some.
 *
 * Each entry's cursor is saved in the job's state once it has been sent, and a later run of
 * the job (after an agent restart too, for a persistent job) goes on after it
 * (`--after-cursor`), in place of `since`. Lines that are not journal entries are skipped
 * with a warn log, and journalctl's stderr lines are warn logs too (both at most 10 a
 * minute, then counted). If journalctl exits while following, it is started again after 1 s,
 * doubling up to 30 s (back to 1 s once it has run for a minute), going on after the last
 * entry sent. With `follow: false`, journalctl exiting ends the command: exit 0 is success,
 * else error `unavailable` naming the exit code and journalctl's last stderr lines. When the
 * run ends (job deleted, agent stopping, `for` elapsed) journalctl is killed and the `done`
 * output carries `{entries: N}`, the number of entries sent.
 *
 * Reading the system journal needs a user journalctl lets read it (root, or a member of the
 * `systemd-journal` or `adm` group); otherwise journalctl shows only that user's own entries.
 *
 * @module
 */
import { posix } from "node:path";
import { z } from "zod";
import type { Clock, TimerId } from "../../shared/clock.ts";
import { JwError } from "../../shared/errors.ts";
import { parseDuration } from "../../shared/units.ts";
import type { ExitStatus, Process } from "../executor.ts";
import { type Command, defineCommand, type RunContext, type RunResult } from "./commands.ts";
import { checkPath } from "./paths.ts";

/** Journal priority names, indexed by their number (0 = emerg … 7 = debug). */
export const JOURNAL_LEVELS = [
  "emerg",
  "alert",
  "crit",
  "err",
  "warning",
  "notice",
  "info",
  "debug",
] as const;

/** A journal priority name. */
export type JournalLevel = typeof JOURNAL_LEVELS[number];

/** The priority of an entry without a valid `PRIORITY` field (info, as journalctl shows it). */
export const DEFAULT_PRIORITY = 6;

/** First wait before starting journalctl again after it exited while following. */
export const RESTART_INITIAL_MS = 1000;
/** Longest wait between restarts. */
export const RESTART_MAX_MS = 30_000;
/** A journalctl that ran at least this long restarts after {@link RESTART_INITIAL_MS} again. */
export const RESTART_RESET_MS = 60_000;
/** How long journalctl gets to exit after SIGTERM before it gets SIGKILL. */
export const KILL_GRACE_MS = 2000;

/** Warn logs of one kind (skipped lines, stderr lines) let through per window. */
const LOG_BURST = 10;
/** The rate-limit window for those logs. */
const LOG_WINDOW_MS = 60_000;
/** Longest piece of a line quoted in a log or error message. */
const QUOTE_CHARS = 500;
/** Stderr lines kept for the error of a failed finite read. */
const STDERR_TAIL_LINES = 5;
/** Longest timer. */
const MAX_FOR_MS = 2_147_483_647;

/** A positive duration: "10m", "250ms", or a number of milliseconds. Parses to ms. */
const Duration = z.union([z.string(), z.number()]).transform((v, ctx) => {
  const ms = parseDuration(v);
  if (ms === undefined || ms <= 0) {
    ctx.addIssue({
      code: "custom",
      message: `expected a positive duration like "10m" or "250ms", got ${JSON.stringify(v)}`,
    });
    return z.NEVER;
  }
  if (ms > MAX_FOR_MS) {
    ctx.addIssue({ code: "custom", message: `may be at most 24d, got ${JSON.stringify(v)}` });
    return z.NEVER;
  }
  return ms;
});

/** A priority name or number 0–7 ("3" too). Parses to the number. */
const Priority = z.union([z.string(), z.number()]).transform((v, ctx) => {
  if (typeof v === "number" && Number.isInteger(v) && v >= 0 && v <= 7) return v;
  if (typeof v === "string" && /^[0-7]$/.test(v)) return Number(v);
  const i = JOURNAL_LEVELS.indexOf(v as JournalLevel);
  if (i >= 0) return i;
  ctx.addIssue({
    code: "custom",
    message: `expected one of ${JOURNAL_LEVELS.join(", ")} or 0-7, got ${JSON.stringify(v)}`,
  });
  return z.NEVER;
});

/** An absolute path without glob characters (journalctl would expand them). */
const JournalPath = z.string().min(1).max(4096)
  .startsWith("/", "must be an absolute path")
  .regex(/^[^*?[\]]*$/, "may not contain glob characters (*?[])");

/** Arguments of `journal.watch`. Unknown keys are rejected. */
export const JournalArgs = z.object({
  /** A systemd unit name (`-u`): letters, digits and `:-_.@\` only. */
  unit: z.string().min(1).max(256)
    .regex(/^[A-Za-z0-9:_.@\\-]+$/, "a unit name has only letters, digits and :-_.@\\")
    .optional(),
  /** A `SYSLOG_IDENTIFIER` (`-t`); printable, no control characters. */
  identifier: z.string().min(1).max(256)
    // deno-lint-ignore no-control-regex
    .regex(/^[^\u0000-\u001f\u007f]+$/, "may not contain control characters")
    .optional(),
  /** `--since`: a time journalctl understands. */
  since: z.string().min(1).max(64)
    .regex(/^[A-Za-z0-9 :.+@-]+$/, "a time has only letters, digits, spaces and :.+-@")
    .optional(),
  /** The highest priority shown (`-p`), as a number 0–7. */
  priority: Priority.optional(),
  /** A journal file to read (`--file`); an allowed read path. */
  file: JournalPath.optional(),
  /** A journal directory to read (`-D`); an allowed read path. */
  directory: JournalPath.optional(),
  /** journalctl's absolute path. Default "/usr/bin/journalctl". */
  journalctl: z.string().min(1).max(4096).startsWith("/", "must be an absolute path")
    .default("/usr/bin/journalctl"),
  /** Keep following (`-f`). Default true. */
  follow: z.boolean().default(true),
  /** End after this long, in ms. Default never. */
  for: Duration.optional(),
}).strict().refine((a) => a.file === undefined || a.directory === undefined, {
  message: "give at most one of file and directory",
  path: ["directory"],
});
export type JournalArgs = z.output<typeof JournalArgs>;

/** One journal entry as `journal.watch` sends it. */
export interface JournalEntry {
  /** `MESSAGE` as text. */
  message: string;
  /** `PRIORITY`, 0–7. */
  priority: number;
  /** The priority's name. */
  level: JournalLevel;
  /** `__REALTIME_TIMESTAMP` as ISO 8601, or null. */
  ts: string | null;
  /** `_SYSTEMD_UNIT`, else `UNIT`. */
  unit?: string;
  /** `SYSLOG_IDENTIFIER`. */
  identifier?: string;
  /** `_PID`. */
  pid?: number;
  /** `_HOSTNAME`. */
  hostname?: string;
  /** `__CURSOR`: where this entry is in the journal. */
  cursor: string;
  /** The other fields not starting with `_`. */
  fields: Record<string, string | null | (string | null)[]>;
  /** Fields journalctl left out as too large (null values); absent when none. */
  omitted?: string[];
}

/** Fields that become top-level outputs and are not repeated in `fields`. */
const PROMOTED = new Set(["MESSAGE", "PRIORITY", "SYSLOG_IDENTIFIER"]);

const UTF8 = new TextDecoder("utf-8");

function isByteArray(v: unknown): v is number[] {
  return Array.isArray(v) &&
    v.every((n) => typeof n === "number" && Number.isInteger(n) && n >= 0 && n <= 255);
}

/** One value: a string, or bytes decoded as UTF-8 (lossy); null for anything else. */
function decodeOne(v: unknown): string | null {
  if (typeof v === "string") return v;
  if (isByteArray(v)) return UTF8.decode(Uint8Array.from(v));
  return null;
}

/** A field's value: one text, or an array of texts for a field given more than once. */
function decodeField(v: unknown): string | null | (string | null)[] {
  if (Array.isArray(v) && v.length > 0 && !isByteArray(v)) return v.map(decodeOne);
  return decodeOne(v);
}

/** A field as one text: the first of several values (null if none). */
function firstText(v: unknown): string | null {
  const d = decodeField(v);
  return Array.isArray(d) ? d.find((x) => x !== null) ?? null : d;
}

/**
 * Decodes one parsed line of `journalctl -o json`. Returns undefined when it is not a
 * journal entry (not an object, or no `__CURSOR` string).
 */
export function decodeJournalEntry(raw: unknown): JournalEntry | undefined {
  if (typeof raw !== "object" || raw === null || Array.isArray(raw)) return undefined;
  const rec = raw as Record<string, unknown>;
  const cursor = rec.__CURSOR;
  if (typeof cursor !== "string" || cursor === "") return undefined;

  const omitted = Object.keys(rec).filter((k) => rec[k] === null).sort();
  const messageValue = decodeField(rec.MESSAGE);
  const message = Array.isArray(messageValue)
    ? messageValue.filter((x) => x !== null).join("\n")
    : messageValue ?? "";
  const prio = firstText(rec.PRIORITY);
  const priority = prio !== null && /^[0-7]$/.test(prio) ? Number(prio) : DEFAULT_PRIORITY;
  const usec = firstText(rec.__REALTIME_TIMESTAMP);
  let ts: string | null = null;
  if (usec !== null && /^\d{1,20}$/.test(usec)) {
    const date = new Date(Number(BigInt(usec) / 1000n));
    if (!Number.isNaN(date.getTime())) ts = date.toISOString();
  }

  const entry: JournalEntry = {
    message,
    priority,
    level: JOURNAL_LEVELS[priority],
    ts,
    cursor,
    fields: {},
  };
  const unit = firstText(rec._SYSTEMD_UNIT) ?? firstText(rec.UNIT);
  if (unit !== null) entry.unit = unit;
  const identifier = firstText(rec.SYSLOG_IDENTIFIER);
  if (identifier !== null) entry.identifier = identifier;
  const pid = firstText(rec._PID);
  if (pid !== null && /^\d{1,10}$/.test(pid)) entry.pid = Number(pid);
  const hostname = firstText(rec._HOSTNAME);
  if (hostname !== null) entry.hostname = hostname;
  for (const [name, value] of Object.entries(rec)) {
    if (name.startsWith("_") || PROMOTED.has(name)) continue;
    entry.fields[name] = decodeField(value);
  }
  if (omitted.length > 0) entry.omitted = omitted;
  return entry;
}

/** Where journalctl reads: the system journal, a file or a directory (real paths). */
export type JournalSource =
  | { kind: "system" }
  | { kind: "file"; path: string }
  | { kind: "directory"; path: string };

/**
 * journalctl's argument vector for `args`, reading `source`, going on after `cursor` when
 * given (else from `args.since`, if any).
 */
export function journalctlArgs(
  args: JournalArgs,
  source: JournalSource,
  cursor: string | undefined,
): string[] {
  const argv = ["-o", "json", "--no-pager"];
  if (args.follow) argv.push("-f");
  if (source.kind === "file") argv.push(`--file=${source.path}`);
  if (source.kind === "directory") argv.push("-D", source.path);
  if (args.unit !== undefined) argv.push("-u", args.unit);
  if (args.identifier !== undefined) argv.push("-t", args.identifier);
  if (args.priority !== undefined) argv.push("-p", String(args.priority));
  if (cursor !== undefined) argv.push(`--after-cursor=${cursor}`);
  else if (args.since !== undefined) argv.push(`--since=${args.since}`);
  return argv;
}

/** A journal cursor as journalctl writes them (`s=…;i=…;b=…;m=…;t=…;x=…`). */
const CURSOR_RE = /^[A-Za-z0-9=;_-]{1,1024}$/;

/** Lets a burst of logs through per window, then counts the rest. */
class LogLimiter {
  readonly #clock: Clock;
  #windowStart = Number.NEGATIVE_INFINITY;
  #inWindow = 0;
  #suppressed = 0;

  constructor(clock: Clock) {
    this.#clock = clock;
  }

  /**
   * Whether to log now; when a new window opens, `suppressed` is how many were held back
   * in the windows before.
   */
  take(): { ok: boolean; suppressed: number } {
    const now = this.#clock.now();
    if (now - this.#windowStart >= LOG_WINDOW_MS) {
      this.#windowStart = now;
      this.#inWindow = 0;
    }
    if (this.#inWindow >= LOG_BURST) {
      this.#suppressed++;
      return { ok: false, suppressed: 0 };
    }
    this.#inWindow++;
    const suppressed = this.#suppressed;
    this.#suppressed = 0;
    return { ok: true, suppressed };
  }

  /** How many were held back and not yet reported; resets the count. */
  drain(): number {
    const n = this.#suppressed;
    this.#suppressed = 0;
    return n;
  }
}

/** A line cut to {@link QUOTE_CHARS} for a log or error message. */
function quote(line: string): string {
  return line.length > QUOTE_CHARS ? `${line.slice(0, QUOTE_CHARS)}…` : line;
}

/** The real path of `args.file` / `args.directory`, checked, or the system journal. */
async function resolveSource(ctx: RunContext, args: JournalArgs): Promise<JournalSource> {
  const [kind, given] = args.file !== undefined
    ? ["file", args.file] as const
    : args.directory !== undefined
    ? ["directory", args.directory] as const
    : [];
  if (kind === undefined) return { kind: "system" };
  const real = await checkPath(ctx.paths, "read", given);
  if (/[*?[\]]/.test(real)) {
    throw new JwError(
      "invalid_args",
      `journal ${kind} ${given} is really ${real}, whose glob characters journalctl would expand`,
      { detail: { path: given, real } },
    );
  }
  let info: Deno.FileInfo;
  try {
    info = await Deno.stat(real);
  } catch (err) {
    if (err instanceof Deno.errors.NotFound) {
      throw new JwError("not_found", `journal ${kind} ${given} does not exist`, {
        detail: { path: given },
      });
    }
    throw new JwError("unavailable", `cannot read journal ${kind} ${given}: ${String(err)}`, {
      cause: err,
      detail: { path: given },
    });
  }
  if (kind === "file" && !info.isFile) {
    throw new JwError("invalid_args", `journal file ${given} is not a regular file`, {
      detail: { path: given },
    });
  }
  if (kind === "directory" && !info.isDirectory) {
    throw new JwError("invalid_args", `journal directory ${given} is not a directory`, {
      detail: { path: given },
    });
  }
  if (kind === "directory") await checkLinksInside(ctx, real);
  return { kind, path: real };
}

/**
 * journalctl -D reads the journal files in a directory and in its subdirectories (one per
 * machine id): a symlink among them must not lead out of the allowed paths. Checked at
 * start, two levels deep.
 * @throws JwError `forbidden` naming the link.
 */
async function checkLinksInside(ctx: RunContext, dir: string, depth = 0): Promise<void> {
  let entries: Deno.DirEntry[];
  try {
    entries = await Array.fromAsync(Deno.readDir(dir));
  } catch {
    return; // unreadable here: journalctl will say so
  }
  for (const entry of entries) {
    const path = posix.join(dir, entry.name);
    if (entry.isSymlink) {
      try {
        await checkPath(ctx.paths, "read", path);
      } catch (err) {
        if (err instanceof JwError && err.code === "forbidden") {
          throw new JwError(
            "forbidden",
            `journal directory ${dir} holds ${entry.name}, a link out of the allowed paths: ${err.message}`,
            { detail: { path } },
          );
        }
        // A dangling link: nothing for journalctl to read there.
      }
    } else if (entry.isDirectory && depth < 1) {
      await checkLinksInside(ctx, path, depth + 1);
    }
  }
}

/** Creates `journal.watch`. */
export function createJournalCommand(): Command<JournalArgs> {
  return defineCommand({
    key: "journal.watch",
    description: "follows the systemd journal (journalctl -o json) and sends each entry",
    args: JournalArgs,
    run: (ctx, args) => watchJournal(ctx, args),
  });
}

/** The body of `journal.watch`. */
async function watchJournal(ctx: RunContext, args: JournalArgs): Promise<RunResult> {
  const { clock } = ctx;
  let entries = 0;
  const finished = (): RunResult => ({ error: null, data: { entries } });
  if (ctx.signal.aborted) return finished();
  const source = await resolveSource(ctx, args);

  let cursor = savedCursor(ctx);
  const skippedLog = new LogLimiter(clock);
  const stderrLog = new LogLimiter(clock);

  // Stopping: the signal, or `for` elapsing. Kills journalctl and wakes a backoff wait.
  let stopping = false;
  let current: Process | undefined;
  let killTimer: TimerId | undefined;
  let wake: (() => void) | undefined;
  const kill = (proc: Process) => {
    proc.kill("SIGTERM");
    killTimer = clock.setTimeout(() => proc.kill("SIGKILL"), KILL_GRACE_MS);
  };
  const stop = () => {
    if (stopping) return;
    stopping = true;
    if (current) kill(current);
    wake?.();
  };
  ctx.signal.addEventListener("abort", stop, { once: true });
  const forTimer = args.for === undefined ? undefined : clock.setTimeout(stop, args.for);

  const onLine = (line: string) => {
    let entry: JournalEntry | undefined;
    try {
      entry = decodeJournalEntry(JSON.parse(line));
    } catch {
      entry = undefined;
    }
    if (!entry) {
      const { ok, suppressed } = skippedLog.take();
      if (ok) {
        ctx.log("warn", "skipped a journalctl line that is not a journal entry", {
          line: quote(line),
          ...(suppressed ? { suppressed } : {}),
        });
      }
      return;
    }
    ctx.emitData({ ...entry });
    entries++;
    cursor = entry.cursor;
    ctx.state.set({ cursor });
  };

  try {
    let delay = RESTART_INITIAL_MS;
    let first = true;
    while (!stopping) {
      const startedAt = clock.now();
      let proc: Process | undefined;
      try {
        proc = ctx.executor.spawn({
          cmd: args.journalctl,
          args: journalctlArgs(args, source, cursor),
        });
      } catch (err) {
        // A refusal (not_whitelisted) or a journalctl that cannot start at all ends the
        // command; later (while following) a failed restart is retried like an exit.
        if (first || !args.follow) throw err;
        ctx.log("warn", `cannot start ${args.journalctl} again: ${(err as Error).message}`);
      }
      first = false;
      if (proc) {
        current = proc;
        const status = await runOnce(ctx, proc, onLine, stderrLog);
        current = undefined;
        if (killTimer !== undefined) clock.clearTimeout(killTimer);
        if (stopping) break;
        if (!args.follow) {
          if (status.code === 0) return finished();
          throw new JwError(
            "unavailable",
            `${args.journalctl} exited with ${describeExit(status)}${
              status.stderr.length ? `: ${status.stderr.join(" | ")}` : ""
            }`,
            { detail: { exitCode: status.code, signal: status.signal } },
          );
        }
        if (clock.now() - startedAt >= RESTART_RESET_MS) delay = RESTART_INITIAL_MS;
        ctx.log(
          "warn",
          `${args.journalctl} exited with ${describeExit(status)}; starting it again in ${
            delay / 1000
          }s`,
          { exitCode: status.code, signal: status.signal, stderr: status.stderr },
        );
      }
      await new Promise<void>((resolve) => {
        const timer = clock.setTimeout(resolve, delay);
        wake = () => {
          clock.clearTimeout(timer);
          resolve();
        };
        if (stopping) wake();
      });
      wake = undefined;
      delay = Math.min(delay * 2, RESTART_MAX_MS);
    }
    return finished();
  } finally {
    ctx.signal.removeEventListener("abort", stop);
    if (forTimer !== undefined) clock.clearTimeout(forTimer);
    if (killTimer !== undefined) clock.clearTimeout(killTimer);
    const held = { "skipped lines": skippedLog.drain(), "stderr lines": stderrLog.drain() };
    for (const [what, n] of Object.entries(held)) {
      if (n > 0) ctx.log("warn", `${n} more journalctl ${what} were not logged`, { count: n });
    }
  }
}

/** How a journalctl run ended, with its last stderr lines. */
interface RunStatus extends ExitStatus {
  stderr: string[];
}

/**
 * Reads one journalctl process to its end: stdout lines to `onLine`, stderr lines to warn
 * logs (rate-limited).
 */
async function runOnce(
  ctx: RunContext,
  proc: Process,
  onLine: (line: string) => void,
  stderrLog: LogLimiter,
): Promise<RunStatus> {
  const tail: string[] = [];
  const pumpOut = async () => {
    for await (const line of proc.stdout) {
      if (line !== "") onLine(line);
    }
  };
  const pumpErr = async () => {
    for await (const line of proc.stderr) {
      if (line.trim() === "") continue;
      tail.push(quote(line));
      if (tail.length > STDERR_TAIL_LINES) tail.shift();
      const { ok, suppressed } = stderrLog.take();
      if (ok) {
        ctx.log("warn", `journalctl: ${quote(line)}`, suppressed ? { suppressed } : undefined);
      }
    }
  };
  try {
    const [status] = await Promise.all([proc.status, pumpOut(), pumpErr()]);
    return { ...status, stderr: tail };
  } catch (err) {
    proc.kill("SIGKILL"); // never leave journalctl behind
    throw err;
  }
}

/** "code 1" or "signal SIGKILL". */
function describeExit(status: ExitStatus): string {
  return status.signal ? `signal ${status.signal}` : `code ${status.code}`;
}

/** The cursor saved by an earlier run, if it looks like one. */
function savedCursor(ctx: RunContext): string | undefined {
  const saved = ctx.state.get()?.cursor;
  if (saved === undefined) return undefined;
  if (typeof saved === "string" && CURSOR_RE.test(saved)) return saved;
  ctx.log("warn", "ignored a saved journal cursor that does not look like one", {
    cursor: quote(String(saved)),
  });
  return undefined;
}
