/**
 * The one error type of Jabberwocky. Every failure that crosses a module boundary is a
 * {@link JwError} with a string `code`; the edges (WebSocket frames, HTTP responses, CLI
 * exit codes) turn it into their own representation and nothing else does.
 *
 * @module
 */

/** Every error code the product uses. Codes are stable: tests and clients match on them. */
export type ErrorCode =
  /** Bad command-line usage: unknown flag, missing argument. CLI exit code 2. */
  | "usage"
  /** A configuration file, environment variable or flag has a bad value. Exit code 2. */
  | "config"
  /** A frame or body is not valid JSON. */
  | "bad_json"
  /** A frame exceeds the configured size limit. */
  | "frame_too_large"
  /** A well-formed frame has a `type` this side does not know. */
  | "unknown_type"
  /** A frame of a known type fails its schema. */
  | "invalid_message"
  /** A frame arrived that is valid but not allowed in the current state. */
  | "unexpected_message"
  /** No command is registered under the requested key. */
  | "unknown_command"
  /** The command's arguments fail its schema. */
  | "invalid_args"
  /** `exec.run` asked for a program that is not an absolute path on the whitelist. */
  | "not_whitelisted"
  /** A process or request ran past its deadline. */
  | "timeout"
  /** A process could not be started. */
  | "spawn_failed"
  /** The handshake failed for a reason not covered by a narrower code. */
  | "handshake_failed"
  /** A JWS signature does not verify. */
  | "bad_signature"
  /** An agent presented a key other than the one pinned for its id. */
  | "key_mismatch"
  /** A challenge nonce was used twice or does not belong to this connection. */
  | "replayed"
  /** A challenge response arrived after the challenge expired. */
  | "expired"
  /** Operator credentials are missing or wrong. */
  | "unauthorized"
  /** The operator is known but not allowed to do this. */
  | "forbidden"
  /** The thing asked for does not exist. */
  | "not_found"
  /** The targeted agent has no live connection. */
  | "not_connected"
  /** A feature or option that this version does not support. */
  | "unsupported"
  /** The connection or object was closed while the operation was in flight. */
  | "closed"
  /** A script file is malformed: no header, bad YAML, a header field that fails its schema. */
  | "invalid_script"
  /** A script is unsigned, or signed by a key this agent does not trust. */
  | "untrusted"
  /** The thing exists already with different content (a script name and version). */
  | "conflict"
  /** A sandboxed script went past its memory limit, or a download past its size limit. */
  | "resource_limit"
  /** Downloaded content does not have the sha256 it was asked to have. */
  | "checksum_mismatch"
  /** A sandboxed script threw an uncaught exception (or does not parse, or exited non-zero). */
  | "script_failed"
  /**
   * An output destination (broker, HTTP receiver, file) cannot take messages now; they
   * stay queued and are retried.
   */
  | "unavailable"
  /** An output destination refused messages for good (e.g. HTTP 4xx): they are dead-lettered. */
  | "rejected"
  /** A bug: something that should not happen did. */
  | "internal";

/** Options for {@link JwError}. */
export interface JwErrorOptions {
  /** The underlying error, kept for logs; never sent over the wire. */
  cause?: unknown;
  /** Extra machine-readable detail (a key path, a limit); sent over the wire. */
  detail?: Record<string, unknown>;
}

/** A failure with a stable string code and a one-line human message. */
export class JwError extends Error {
  /** The stable code. */
  readonly code: ErrorCode;
  /** Extra machine-readable detail. */
  readonly detail?: Record<string, unknown>;

  constructor(code: ErrorCode, message: string, options: JwErrorOptions = {}) {
    super(message, { cause: options.cause });
    this.name = "JwError";
    this.code = code;
    if (options.detail) this.detail = options.detail;
  }

  /** The wire form: `{code, message}` (plus `detail` when present). */
  toJSON(): ErrorInfo {
    return this.detail
      ? { code: this.code, message: this.message, detail: this.detail }
      : { code: this.code, message: this.message };
  }
}

/** The serialised form of an error, as carried in frames and HTTP bodies. */
export interface ErrorInfo {
  code: string;
  message: string;
  detail?: Record<string, unknown>;
}

/** True when `err` is a {@link JwError}, optionally with the given code. */
export function isJwError(err: unknown, code?: ErrorCode): err is JwError {
  return err instanceof JwError && (code === undefined || err.code === code);
}

/**
 * Turns anything thrown into a {@link JwError}. Unknown errors become `internal` with
 * their message kept, so a bug is reported rather than swallowed.
 */
export function toJwError(err: unknown): JwError {
  if (err instanceof JwError) return err;
  const message = err instanceof Error ? err.message : String(err);
  return new JwError("internal", message, { cause: err });
}
