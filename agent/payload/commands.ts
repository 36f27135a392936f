/**
 * The command registry: every command the agent can run, keyed `category.name`, with a zod
 * schema for its arguments, a one-line description and an implementation.
 *
 * Where a new command goes:
 * - one file per category beside this one: `agent/payload/<category>.ts` holds every
 *   `<category>.<name>` command (exec.ts has `exec.run`, tags.ts `tags.set`, job.ts `job.*`);
 * - write it with {@link defineCommand} (key, description, a strict zod `args` schema, `run`);
 * - register it in the one list of built-ins, `registerBuiltins()` in
 *   `agent/payload/builtins.ts` (one `registry.register(...)` line), and export its factory
 *   from `agent/payload/mod.ts`;
 * - test it beside its file (`<category>_test.ts`) through `agent/_job_harness.ts`.
 * The ACL (`allowCommands`), argument checking and reply frames come for free.
 *
 * @module
 */
import type { z } from "zod";
import type { Clock } from "../../shared/clock.ts";
import { type ErrorInfo, JwError } from "../../shared/errors.ts";
import type { Fs } from "../../shared/fs/mod.ts";
import type { Logger } from "../../shared/log.ts";
import { CommandKey, describeIssues, type LogLevel } from "../../shared/protocol/mod.ts";
import type { CommandExecutor } from "../executor.ts";

/** What a command's run hands to the job runner for the final `done` output. */
export interface RunResult {
  /** Process exit code (`null` when killed by a signal); omit for commands without a process. */
  exitCode?: number | null;
  /** Why the run failed; `null` or absent when it did not. */
  error?: ErrorInfo | null;
  /** A structured result carried on the `done` output itself (an object, never an array). */
  data?: Record<string, unknown>;
}

/** The job and run a command is running for. */
export interface JobInfo {
  /** The job id (given by the operator or made up by the agent). */
  readonly id: string;
  /** The command key, `category.name`. */
  readonly key: string;
  /** The job's `meta` as the operator sent it (copied onto every reply); absent if none. */
  readonly meta?: Readonly<Record<string, unknown>>;
  /** This run's id (`r-` + random); a scheduled job has a new one per run. */
  readonly run: string;
  /** The id of the server the job came from. */
  readonly createdBy: string;
}

/** What a running command may do. Every emit becomes one reply frame, in call order. */
export interface RunContext {
  /** The job and run. */
  job: JobInfo;
  /** One line of text output on `stream`. */
  emitText(stream: "stdout" | "stderr", text: string): void;
  /**
   * One structured output object (arrays are fine inside it).
   * @throws JwError `invalid_args` when `data` is not a plain object (e.g. a top-level array).
   */
  emitData(data: Record<string, unknown>): void;
  /** A log frame for this job, at error, warn, info, debug or trace. */
  log(level: LogLevel, message: string, fields?: Record<string, unknown>): void;
  /** Sets (string) or deletes (null) the agent's tags and tells the server (`setTag`). */
  setTags(tags: Record<string, string | null>): void;
  /** Aborts when the agent stops; commands must end promptly (kill their processes). */
  signal: AbortSignal;
  /** Time and timers. */
  clock: Clock;
  /** Starts programs; already restricted to the agent's whitelist. */
  executor: CommandExecutor;
  /** Files (the real disk in the agent, `MemFs` in tests). */
  fs: Fs;
  /** The agent's logger, named after the command key. */
  logger: Logger;
  /**
   * Where commands may read and write on this agent's disk (`--allow-read`, `--allow-write`,
   * shared with scripts); check a path with `checkPath` (paths.ts) before touching it.
   */
  paths: PathPolicy;
  /**
   * The job's own small state (e.g. a tail's position), kept across its runs, and across agent
   * restarts for a persistent job. Forgotten when the job is deleted or replaced by one with
   * other arguments.
   */
  state: JobState;
  /** The server the agent is connected to (for the files it serves). */
  server: ServerLink;
}

/** Paths commands may touch: a directory covers everything below it. */
export interface PathPolicy {
  readonly read: readonly string[];
  readonly write: readonly string[];
}

/** A job's state: one JSON object. */
export interface JobState {
  /** The last object `set`, or undefined. */
  get(): Record<string, unknown> | undefined;
  /** Replaces the state (written to disk at once for a persistent job). */
  set(value: Record<string, unknown>): void;
}

/** The agent's link to its server, for requests besides the WebSocket. */
export interface ServerLink {
  /** The HTTP base URL of the server the agent is connected to (or last was), or null. */
  url(): string | null;
  /**
   * An `Authorization` header value proving this agent to the server (a short-lived token
   * signed with the agent's key; see shared/crypto/agent_token.ts).
   */
  authorization(): Promise<string>;
}

/** The message for {@link checkStructured} failures. */
export const STRUCTURED_OUTPUT_MESSAGE =
  "structured output must be an object (arrays are fine inside it)";

/**
 * Checks that `data` may be sent as structured output: a plain object, never a top-level
 * array, `null` or a primitive.
 * @throws JwError `invalid_args` otherwise.
 */
export function checkStructured(data: unknown): asserts data is Record<string, unknown> {
  if (typeof data !== "object" || data === null || Array.isArray(data)) {
    throw new JwError("invalid_args", STRUCTURED_OUTPUT_MESSAGE);
  }
}

/**
 * One command. `run` receives arguments already checked (and defaulted) by `args`. It may
 * throw a JwError; the runner turns it into the `done` output's `error`.
 */
export interface Command<A = unknown> {
  /** `category.name`. */
  readonly key: string;
  /** What it does, one line (shown to operators). */
  readonly description: string;
  /** Schema of the arguments object. */
  readonly args: z.ZodType<A>;
  /** Runs once per job. */
  run(ctx: RunContext, args: A): Promise<RunResult>;
}

/** Declares a command with its argument type inferred from the schema. */
export function defineCommand<S extends z.ZodType>(command: {
  key: string;
  description: string;
  args: S;
  run(ctx: RunContext, args: z.output<S>): Promise<RunResult>;
}): Command<z.output<S>> {
  return command as Command<z.output<S>>;
}

/** A command with arguments that passed its schema, ready to run. */
export interface PreparedCommand {
  command: Command;
  args: unknown;
}

/** Commands by key. Registration happens at start-up; lookups may happen concurrently. */
export interface Registry {
  /**
   * Adds a command.
   * @throws JwError `internal` when the key is malformed or already taken.
   */
  register(command: Command): void;
  /**
   * The command under `key`.
   * @throws JwError `unknown_command`.
   */
  get(key: string): Command;
  /**
   * Looks up `key` and checks `args` against its schema.
   * @throws JwError `unknown_command`, or `invalid_args` whose message names each failing
   *   path (unknown keys included).
   */
  prepare(key: string, args: unknown): PreparedCommand;
  /** Registered keys, sorted. */
  keys(): string[];
}

/** Creates an empty registry. */
export function createRegistry(): Registry {
  const commands = new Map<string, Command>();
  const get = (key: string): Command => {
    const command = commands.get(key);
    if (!command) {
      throw new JwError("unknown_command", `no command "${key}" on this agent`, {
        detail: { key },
      });
    }
    return command;
  };
  return {
    register(command) {
      if (!CommandKey.safeParse(command.key).success) {
        throw new JwError(
          "internal",
          `command key "${command.key}" must look like "category.name"`,
        );
      }
      if (command.description.trim() === "") {
        throw new JwError("internal", `command "${command.key}" has no description`);
      }
      if (commands.has(command.key)) {
        throw new JwError("internal", `command "${command.key}" is registered twice`);
      }
      commands.set(command.key, command);
    },
    get,
    prepare(key, args) {
      const command = get(key);
      const result = command.args.safeParse(args);
      if (!result.success) {
        throw new JwError("invalid_args", `bad args for ${key}: ${describeIssues(result.error)}`, {
          detail: { key },
        });
      }
      return { command, args: result.data };
    },
    keys: () => [...commands.keys()].sort(),
  };
}
