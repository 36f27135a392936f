/**
 * A small levelled logger writing one line per event to a sink (stderr by default):
 * `2026-11-27T05:00:00.000Z INFO  server: agent connected agent=a1`.
 *
 * @module
 */

/** Levels, most severe first. */
export type Level = "error" | "warn" | "info" | "debug";
const RANK: Record<Level, number> = { error: 0, warn: 1, info: 2, debug: 3 };

/** Structured key/values appended to a line. */
export type Fields = Record<string, unknown>;

/** A named logger. */
export interface Logger {
  error(msg: string, fields?: Fields): void;
  warn(msg: string, fields?: Fields): void;
  info(msg: string, fields?: Fields): void;
  debug(msg: string, fields?: Fields): void;
  /** A logger with a longer name, same level and sink. */
  child(name: string): Logger;
}

/** Options for {@link createLogger}. */
export interface LoggerOptions {
  /** Lowest level written. Default "info". */
  level?: Level;
  /** Where lines go. Default `console.error`. */
  sink?: (line: string) => void;
  /** Time source for the line prefix. Default `Date.now`. */
  now?: () => number;
}

function formatValue(v: unknown): string {
  if (typeof v === "string") return /[\s"=]/.test(v) ? JSON.stringify(v) : v;
  return JSON.stringify(v);
}

/** Creates a logger named `name`. */
export function createLogger(name: string, options: LoggerOptions = {}): Logger {
  const level = options.level ?? "info";
  const sink = options.sink ?? ((line: string) => console.error(line));
  const now = options.now ?? Date.now;
  const write = (lvl: Level, msg: string, fields?: Fields) => {
    if (RANK[lvl] > RANK[level]) return;
    let line = `${new Date(now()).toISOString()} ${lvl.toUpperCase().padEnd(5)} ${name}: ${msg}`;
    for (const [k, v] of Object.entries(fields ?? {})) {
      if (v !== undefined) line += ` ${k}=${formatValue(v)}`;
    }
    sink(line);
  };
  return {
    error: (m, f) => write("error", m, f),
    warn: (m, f) => write("warn", m, f),
    info: (m, f) => write("info", m, f),
    debug: (m, f) => write("debug", m, f),
    child: (sub) => createLogger(`${name}.${sub}`, options),
  };
}

/** A logger that drops everything (tests). */
export const silentLogger: Logger = createLogger("silent", { sink: () => {} });
