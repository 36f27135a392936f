/**
 * The host side of the sandbox: {@link runSandboxed} starts one child process per run and
 * speaks the protocol of `_protocol.ts` with it. See `mod.ts` for the whole picture.
 *
 * @module
 */
import { type Clock, realClock, type TimerId } from "../clock.ts";
import { type ErrorInfo, JwError, toJwError } from "../errors.ts";
import { cryptoRandom, type Random } from "../random.ts";
import { formatDuration } from "../units.ts";
import { chunk, readLines } from "./_lines.ts";
import {
  LOG_LEVELS,
  MAX_MESSAGE_CHARS,
  MAX_PRINT_CHARS,
  MAX_PROTOCOL_LINE_CHARS,
  type ResultMessage,
  type StartMessage,
  type WireError,
} from "./_protocol.ts";

/** Levels of `log.*` in scripts. */
export type SandboxLogLevel = "error" | "warn" | "info" | "debug" | "trace";

/** Deno permissions of a script: absolute paths, and `host` or `host:port` entries. */
export interface SandboxPermissions {
  /** Files and directories the script may read. */
  read: string[];
  /** Files and directories the script may write. */
  write: string[];
  /** Hosts (`host`, `host:port`, `[v6]:port`) the script may reach with fetch or sockets. */
  net: string[];
}

/**
 * The host's side of a run. Its methods are called one at a time, in the order the script
 * acted, and never after {@link runSandboxed} has resolved (except calls already running). They
 * must not throw: a throw stops the run with that error.
 */
export interface SandboxHost {
  /**
   * A builtin call from the script, `category.name(args)`. The script's call resolves with the
   * (JSON-cloneable) value; when this rejects with a JwError, the script's call throws an Error
   * whose `.code` and `.message` are the JwError's (anything else thrown becomes `internal`).
   * Calls may overlap. `signal` (always passed by the sandbox) aborts when the run ends
   * (timeout, abort, failure): a call still running then is no longer awaited, and should stop
   * what it started. When the script passed a handler (`fs.watch(args, handler)`), `onEvent`
   * is given: each value passed to it reaches the handler, in order, while the call runs (at
   * most {@link MAX_EVENTS_QUEUED} waiting for the script; beyond that they are dropped and
   * the drop is logged).
   */
  call(
    key: string,
    args: unknown,
    signal?: AbortSignal,
    onEvent?: (value: unknown) => void,
  ): Promise<unknown>;
  /** `emit(obj)` in the script (already checked to be a plain object, not an array). */
  emit(data: Record<string, unknown>): void;
  /** `log.info("msg", {fields})` etc. in the script. */
  log(level: SandboxLogLevel, message: string, fields?: Record<string, unknown>): void;
  /** Text the script printed (console.log/console.error, or writes to stdout/stderr), by line. */
  print(stream: "stdout" | "stderr", line: string): void;
}

/** One script to run. */
export interface SandboxRun {
  /** The module source: the whole script file. */
  source: string;
  /** Script name, for messages (and the module's URL/stack traces). */
  name: string;
  /**
   * Deno permissions of the script. Nothing else is ever granted: no env, sys, ffi, run,
   * hrtime, remote imports.
   */
  permissions: SandboxPermissions;
  /** Stop the script after this long: result error {code:"timeout", message:"script stopped after 30s"}. */
  timeoutMs: number;
  /**
   * Heap limit of the script in MiB (default 64, 16 to 65536). Going past it ends the run with
   * {code:"resource_limit", message: "... memory limit of 64 MiB"}; the host process is unharmed.
   */
  memoryMb?: number;
  /**
   * Builtin function keys the script sees: "exec.run" becomes global `exec` with method `run`.
   * When a category is also a global value (`job`), its methods are added to that object
   * (`job.id` and `await job.list()`); categories `args`, `meta`, `emit`, `log` are reserved and
   * never exposed.
   */
  commands: string[];
  /** Globals the script sees as read-only values: `args`, `meta`, `job` (JSON-cloneable). */
  globals: { args: unknown; meta: unknown; job: unknown };
  /** Where the script's calls, output and logs go. */
  host: SandboxHost;
  /** Abort = stop the script now: result error {code:"closed", message: reason or "script stopped"}. */
  signal?: AbortSignal;
  /** The source is TypeScript: strip its types before running. Default false (JavaScript). */
  typescript?: boolean;
  /** Time for the timeout and `durationMs`. Default `realClock`. */
  clock?: Clock;
  /** Randomness for the run's protocol token. Default `cryptoRandom`. */
  random?: Random;
}

/** How a run ended. */
export interface SandboxResult {
  /**
   * null when the module evaluated (top-level await included) without throwing. An uncaught
   * exception is {code:"script_failed", message:"<Error name>: <message>"} (with Deno's text of
   * a denied permission, e.g. 'NotCapable: Requires read access to "/etc/shadow"...'), with
   * `detail.stack` when the error had one.
   */
  error: ErrorInfo | null;
  /** Wall time of the run, ms. */
  durationMs: number;
}

/** Heap limit when {@link SandboxRun.memoryMb} is not given. */
export const DEFAULT_SANDBOX_MEMORY_MB = 64;

/** Builtin calls one run may have in flight; more are refused with `resource_limit`. */
export const MAX_CALLS_IN_FLIGHT = 256;

/** Events of streaming builtin calls waiting to be written to the script, at most. */
export const MAX_EVENTS_QUEUED = 10_000;

/** After `done`, how long the child may take to exit before it is killed. */
const EXIT_GRACE_MS = 2000;

const CHILD_URL = new URL("./child.ts", import.meta.url).href;
const COMMAND_KEY = /^[a-z][a-zA-Z0-9_]*(\.[a-z][a-zA-Z0-9_]*)+$/;
const NET_ENTRY = /^(\[[0-9a-fA-F:]+\]|[A-Za-z0-9.-]+)(:\d{1,5})?$/;
const OOM_REPORT =
  /^<--- Last few GCs --->|Fatal JavaScript out of memory|JavaScript heap out of memory|Reached heap limit/;
const encoder = new TextEncoder();

function invalid(message: string): never {
  throw new JwError("invalid_args", `sandbox: ${message}`);
}

function checkRun(run: SandboxRun): void {
  const controls = (text: string) => [...text].some((c) => c < " " || c === "\x7f");
  if (typeof run.name !== "string" || !run.name || run.name.length > 256 || controls(run.name)) {
    invalid("name must be 1-256 characters without control characters");
  }
  if (typeof run.source !== "string") invalid("source must be a string");
  if (!(run.timeoutMs > 0 && run.timeoutMs <= 2 ** 31 - 1)) {
    invalid(`timeoutMs must be a positive number of milliseconds, got ${run.timeoutMs}`);
  }
  const mb = run.memoryMb;
  if (mb !== undefined && !(Number.isInteger(mb) && mb >= 16 && mb <= 65536)) {
    invalid(`memoryMb must be a whole number from 16 to 65536, got ${mb}`);
  }
  for (const key of run.commands) {
    if (!COMMAND_KEY.test(key)) invalid(`command key "${key}" must look like "category.name"`);
  }
  for (const kind of ["read", "write"] as const) {
    for (const path of run.permissions[kind]) {
      if (!path.startsWith("/") || path.includes(",") || controls(path)) {
        invalid(`${kind} permission "${path}" must be an absolute path without commas`);
      }
    }
  }
  for (const entry of run.permissions.net) {
    if (!NET_ENTRY.test(entry)) {
      invalid(`net permission "${entry}" must be a host or host:port, like "example.com:443"`);
    }
  }
}

function permissionFlags(permissions: SandboxPermissions): string[] {
  const flags: string[] = [];
  for (const kind of ["read", "write", "net"] as const) {
    const list = permissions[kind];
    if (list.length > 0) flags.push(`--allow-${kind}=${list.join(",")}`);
  }
  return flags;
}

/** The child's whole environment: what Deno needs to find its cache, nothing of the host's. */
function childEnv(): Record<string, string> {
  const env: Record<string, string> = { NO_COLOR: "1" };
  const get = (name: string): string | undefined => {
    try {
      return Deno.env.get(name);
    } catch {
      return undefined;
    }
  };
  const denoDir = get("DENO_DIR");
  if (denoDir) {
    env.DENO_DIR = denoDir;
  } else {
    for (const name of ["HOME", "XDG_CACHE_HOME"]) {
      const value = get(name);
      if (value) env[name] = value;
    }
  }
  return env;
}

function abortMessage(signal: AbortSignal): string {
  const reason = signal.reason;
  if (typeof reason === "string" && reason !== "") return reason;
  if (reason instanceof Error && reason.name !== "AbortError" && reason.message !== "") {
    return reason.message;
  }
  return "script stopped";
}

function isObject(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

function toWireError(err: unknown): WireError {
  return toJwError(err).toJSON();
}

/**
 * Runs one script in a fresh sandbox process and resolves when it has ended and its output has
 * been delivered to `run.host`. The result's `error` says how it ended: null (success),
 * `script_failed`, `timeout`, `resource_limit`, `closed`, `spawn_failed` (no sandbox process),
 * or `internal`. Runs are independent and may overlap; each has its own process.
 *
 * Needs `--allow-run` for `Deno.execPath()`, `--allow-env` to pass DENO_DIR/HOME on (without it
 * the child uses a cold cache) and `--unstable-worker-options` support in the Deno binary.
 * @throws JwError `invalid_args` when the run is malformed (a bad command key, a relative or
 *   comma-holding path, a bad net entry, a bad timeout or memory limit); nothing is started.
 */
export async function runSandboxed(run: SandboxRun): Promise<SandboxResult> {
  checkRun(run);
  const clock = run.clock ?? realClock;
  const startedAt = clock.now();
  const elapsed = () => Math.max(0, clock.now() - startedAt);
  const memoryMb = run.memoryMb ?? DEFAULT_SANDBOX_MEMORY_MB;
  if (run.signal?.aborted) {
    return { error: { code: "closed", message: abortMessage(run.signal) }, durationMs: 0 };
  }

  const token = Array.from(
    (run.random ?? cryptoRandom).bytes(16),
    (b) => b.toString(16).padStart(2, "0"),
  ).join("");
  let child: Deno.ChildProcess;
  try {
    child = new Deno.Command(Deno.execPath(), {
      args: [
        "run",
        "--no-config",
        "--no-lock",
        "--no-prompt",
        "--no-remote",
        "--no-npm",
        "--cached-only",
        "--quiet",
        "--unstable-worker-options",
        `--v8-flags=--max-old-space-size=${memoryMb}`,
        ...permissionFlags(run.permissions),
        CHILD_URL,
      ],
      cwd: "/",
      clearEnv: true,
      env: childEnv(),
      stdin: "piped",
      stdout: "piped",
      stderr: "piped",
    }).spawn();
  } catch (err) {
    return {
      error: {
        code: "spawn_failed",
        message: `cannot start the sandbox process: ${(err as Error).message}`,
      },
      durationMs: elapsed(),
    };
  }

  const commands = new Set(run.commands);
  const calls = new AbortController();
  let outcome: ErrorInfo | null = null;
  let decided = false;
  let inFlight = 0;
  let oom = false;
  const stderrTail: string[] = [];
  const timers: TimerId[] = [];

  const kill = () => {
    try {
      child.kill("SIGKILL");
    } catch {
      // already gone
    }
  };
  const decide = (error: ErrorInfo | null): void => {
    if (decided) return;
    decided = true;
    outcome = error;
    calls.abort();
  };
  const stop = (error: ErrorInfo): void => {
    decide(error);
    kill();
  };
  /** Calls a host method; a throw stops the run. */
  const deliver = (fn: () => void): void => {
    try {
      fn();
    } catch (err) {
      stop(toWireError(err));
    }
  };

  const writer = child.stdin.getWriter();
  let writing = Promise.resolve();
  const write = (text: string): void => {
    writing = writing.then(() => writer.write(encoder.encode(text + "\n"))).catch(() => {});
  };
  const reply = (msg: ResultMessage, key: string): void => {
    if (decided) return;
    let text: string;
    try {
      text = JSON.stringify(msg);
    } catch (err) {
      text = JSON.stringify({
        t: "result",
        id: msg.id,
        error: { code: "internal", message: `${key} returned a value that is not JSON: ${err}` },
      });
    }
    if (text.length > MAX_MESSAGE_CHARS + 1024) {
      text = JSON.stringify({
        t: "result",
        id: msg.id,
        error: {
          code: "resource_limit",
          message: `${key} returned ${text.length} characters of JSON, more than the limit of ` +
            `${MAX_MESSAGE_CHARS}`,
        },
      });
    }
    write(text);
  };

  /** Events written or waiting to be written to the child, and those dropped, per call. */
  let queuedEvents = 0;
  const eventSink = (id: number, key: string) => {
    let dropped = 0;
    return (value: unknown): void => {
      if (decided) return;
      if (queuedEvents >= MAX_EVENTS_QUEUED) {
        if (dropped++ % 1000 === 0) {
          deliver(() =>
            run.host.log("warn", `events of ${key} dropped: the script handles them too slowly`, {
              dropped,
            })
          );
        }
        return;
      }
      let text: string;
      try {
        text = JSON.stringify({ t: "event", id, value });
      } catch {
        return;
      }
      if (text.length > MAX_MESSAGE_CHARS + 1024) return;
      queuedEvents++;
      writing = writing.then(() => writer.write(encoder.encode(text + "\n"))).catch(() => {})
        .finally(() => queuedEvents--);
    };
  };

  const onCall = (id: unknown, key: unknown, args: unknown, stream?: unknown): void => {
    if (typeof id !== "number" || typeof key !== "string") return protocolError();
    if (decided) return;
    if (!commands.has(key)) {
      const error = new JwError("unknown_command", `no builtin ${key} in this script`).toJSON();
      return reply({ t: "result", id, error }, key);
    }
    if (inFlight >= MAX_CALLS_IN_FLIGHT) {
      const error = new JwError(
        "resource_limit",
        `more than ${MAX_CALLS_IN_FLIGHT} builtin calls at once`,
      ).toJSON();
      return reply({ t: "result", id, error }, key);
    }
    inFlight++;
    void (async () => {
      let msg: ResultMessage;
      try {
        const sink = stream === true ? eventSink(id, key) : undefined;
        msg = { t: "result", id, value: await run.host.call(key, args, calls.signal, sink) };
      } catch (err) {
        msg = { t: "result", id, error: toWireError(err) };
      }
      inFlight--;
      reply(msg, key);
    })();
  };
  const protocolError = (): void => stop({ code: "internal", message: "sandbox protocol error" });

  const onMessage = (json: string): void => {
    let msg: Record<string, unknown>;
    try {
      msg = JSON.parse(json);
    } catch {
      return protocolError();
    }
    switch (msg?.t) {
      case "call":
        return onCall(msg.id, msg.key, msg.args, msg.stream);
      case "emit":
        if (!isObject(msg.data)) return protocolError();
        return deliver(() => run.host.emit(msg.data as Record<string, unknown>));
      case "log": {
        const level = msg.level as SandboxLogLevel;
        if (!LOG_LEVELS.includes(level) || typeof msg.message !== "string") return protocolError();
        const message = msg.message;
        if (isObject(msg.fields)) {
          const fields = msg.fields;
          return deliver(() => run.host.log(level, message, fields));
        }
        return deliver(() => run.host.log(level, message));
      }
      case "print": {
        const stream = msg.stream;
        const line = msg.line;
        if ((stream !== "stdout" && stream !== "stderr") || typeof line !== "string") {
          return protocolError();
        }
        return deliver(() => run.host.print(stream, line));
      }
      case "done": {
        const error = msg.error;
        if (error === null) {
          decide(null);
        } else if (isObject(error) && typeof error.code === "string") {
          decide(error as unknown as ErrorInfo);
        } else {
          return protocolError();
        }
        timers.push(clock.setTimeout(kill, EXIT_GRACE_MS));
        return;
      }
      default:
        return protocolError();
    }
  };

  const stdoutDone = (async () => {
    for await (const line of readLines(child.stdout, MAX_PROTOCOL_LINE_CHARS)) {
      const at = line.indexOf(token);
      if (at === -1) {
        for (const piece of chunk(line, MAX_PRINT_CHARS)) {
          deliver(() => run.host.print("stdout", piece));
        }
        continue;
      }
      if (at > 0) deliver(() => run.host.print("stdout", line.slice(0, at)));
      onMessage(line.slice(at + token.length));
    }
  })().catch(() => {});
  const stderrDone = (async () => {
    let blanks = 0;
    for await (const line of readLines(child.stderr, MAX_PRINT_CHARS)) {
      if (oom) continue;
      // V8's report of a heap overflow: the result says it, the text is noise.
      if (OOM_REPORT.test(line)) {
        oom = true;
        continue;
      }
      if (line.trim() === "") {
        blanks++;
        continue;
      }
      for (; blanks > 0; blanks--) deliver(() => run.host.print("stderr", ""));
      deliver(() => run.host.print("stderr", line));
      stderrTail.push(line);
      if (stderrTail.length > 3) stderrTail.shift();
    }
    if (!oom) { for (; blanks > 0; blanks--) deliver(() => run.host.print("stderr", "")); }
  })().catch(() => {});

  timers.push(clock.setTimeout(() => {
    stop({ code: "timeout", message: `script stopped after ${formatDuration(run.timeoutMs)}` });
  }, run.timeoutMs));
  const onAbort = () => stop({ code: "closed", message: abortMessage(run.signal!) });
  run.signal?.addEventListener("abort", onAbort, { once: true });

  const start: StartMessage = {
    t: "start",
    token,
    name: run.name,
    source: run.source,
    typescript: run.typescript === true,
    commands: run.commands,
    globals: { args: run.globals.args, meta: run.globals.meta, job: run.globals.job },
    permissions: run.permissions,
  };
  try {
    write(JSON.stringify(start));
  } catch (err) {
    stop({ code: "invalid_args", message: `sandbox: globals must be JSON: ${err}` });
  }

  const status = await child.status;
  await Promise.all([stdoutDone, stderrDone]);
  for (const timer of timers) clock.clearTimeout(timer);
  run.signal?.removeEventListener("abort", onAbort);
  await writing;
  await writer.close().catch(() => {});

  if (!decided) {
    const how = status.signal ? `signal ${status.signal}` : `exit code ${status.code}`;
    decide(
      oom
        ? {
          code: "resource_limit",
          message: `script went past its memory limit of ${memoryMb} MiB`,
        }
        : {
          code: "internal",
          message: `sandbox process ended without a result (${how})` +
            (stderrTail.length ? `: ${stderrTail.join(" / ")}` : ""),
        },
    );
  }
  return { error: outcome, durationMs: elapsed() };
}
