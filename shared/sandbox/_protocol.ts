/**
 * The messages between the host (`runSandboxed`), the sandbox child process (`child.ts`) and
 * the worker runtime inside it. Host → child: NDJSON on the child's stdin, the first line a
 * {@link StartMessage}, then {@link ResultMessage}s. Child → host: lines on the child's stdout
 * made of the run's token followed by the JSON of a {@link ChildMessage}; every other stdout
 * line is text the script wrote itself. Host → child also carries {@link EventMessage}s for
 * streaming calls. Worker ↔ child: the same objects over a private MessagePort.
 *
 * Relative imports only (the child loads this file without an import map).
 *
 * @module
 */

/** Levels of `log.*` in scripts, most severe first. */
export const LOG_LEVELS = ["error", "warn", "info", "debug", "trace"] as const;

/** Longest printed line sent to the host; longer lines arrive in pieces of this size. */
export const MAX_PRINT_CHARS = 64 * 1024;

/**
 * Largest JSON text of one `emit`, `log` or builtin call (its arguments or its result): 8 MiB
 * of characters. A bigger one throws a RangeError in the script.
 */
export const MAX_MESSAGE_CHARS = 8 * 1024 * 1024;

/** Longest protocol line the host reads: one message plus its envelope. */
export const MAX_PROTOCOL_LINE_CHARS = MAX_MESSAGE_CHARS + 64 * 1024;

/** Categories that are globals of their own in scripts and never hold builtin commands. */
export const RESERVED_CATEGORIES: readonly string[] = ["args", "meta", "emit", "log"];

/** An error as it travels: the `ErrorInfo` shape. */
export interface WireError {
  code: string;
  message: string;
  detail?: Record<string, unknown>;
}

/** The first stdin line: everything the child needs to start the script. */
export interface StartMessage {
  t: "start";
  /** The per-run prefix of protocol lines on stdout; never shown to the worker. */
  token: string;
  name: string;
  source: string;
  /** Strip TypeScript types from `source` before running it. */
  typescript?: boolean;
  commands: string[];
  globals: { args?: unknown; meta?: unknown; job?: unknown };
  permissions: { read: string[]; write: string[]; net: string[] };
}

/** The answer to a builtin call: `value` when it succeeded, `error` when it failed. */
export interface ResultMessage {
  t: "result";
  id: number;
  value?: unknown;
  error?: WireError;
}

/**
 * One event of a streaming builtin call (`fs.watch(args, handler)`), for the call's handler;
 * the call's own `result` comes when the command ends.
 */
export interface EventMessage {
  t: "event";
  id: number;
  value: unknown;
}

/**
 * The script called builtin `key`; with `stream`, it passed a handler for the command's
 * outputs, which then come as {@link EventMessage}s instead of in the result.
 */
export interface CallMessage {
  t: "call";
  id: number;
  key: string;
  args?: unknown;
  stream?: boolean;
}

/** `emit(data)`. */
export interface EmitMessage {
  t: "emit";
  data: Record<string, unknown>;
}

/** `log.<level>(message, fields)`. */
export interface LogMessage {
  t: "log";
  level: (typeof LOG_LEVELS)[number];
  message: string;
  fields?: Record<string, unknown>;
}

/** Console output of the script: `text` from the worker, one `line` per message to the host. */
export interface PrintMessage {
  t: "print";
  stream: "stdout" | "stderr";
  text?: string;
  line?: string;
}

/** The run ended: `error` is null when the script succeeded. Always the last message. */
export interface DoneMessage {
  t: "done";
  error: WireError | null;
}

/** Everything the child (and the worker) sends. */
export type ChildMessage = CallMessage | EmitMessage | LogMessage | PrintMessage | DoneMessage;
