/**
 * Test helper: a job runner wired like the agent's (the built-in commands behind the ACL,
 * the whitelist, MemFs, the job store and audit log in a database) that records every
 * reply frame. The database is in memory unless one is given (to test restarts).
 *
 * @module
 */
import { type Clock, realClock } from "../shared/clock.ts";
import { AuditLog, type DatabaseSync } from "../shared/db/mod.ts";
import { type Fs, MemFs } from "../shared/fs/mod.ts";
import { silentLogger } from "../shared/log.ts";
import type { Command as CommandFrame, Output, Reply } from "../shared/protocol/mod.ts";
import { cryptoRandom, type Random } from "../shared/random.ts";
import { createCommandAcl, withAcl } from "./acl.ts";
import { openAgentDatabase } from "./db.ts";
import { type CommandExecutor, createWhitelistExecutor } from "./executor.ts";
import { createJobRunner, createJobStore, type JobRunner } from "./jobs/mod.ts";
import {
  type Command,
  createRegistry,
  type PathPolicy,
  registerBuiltins,
  type Registry,
  type ScriptCommandOptions,
  type ServerLink,
} from "./payload/mod.ts";
import { createScriptStore } from "./scripts/mod.ts";

/** Options for {@link jobHarness}. */
export interface JobHarnessOptions {
  executor: CommandExecutor;
  allowRun?: string[];
  /** The ACL. Default ["*"]. */
  allowCommands?: string[];
  clock?: Clock;
  random?: Random;
  /** exec.run default timeout. Default 10 s. */
  execTimeoutMs?: number;
  /** exec.run's allowEnv. Default []. */
  allowEnv?: string[];
  /** Runs kept per job. Default 20. */
  keepRuns?: number;
  /** A database to use (and leave open); default a fresh in-memory one, closed on dispose. */
  db?: DatabaseSync;
  /** Default a new MemFs. */
  fs?: Fs;
  /** Extra commands to register (tests); one with a built-in's key replaces the built-in. */
  commands?: Command[];
  /** Where commands may read and write. Default nowhere. */
  paths?: PathPolicy;
  /** The agent's server link (file downloads). Default none. */
  server?: ServerLink;
  /** onStop bound. Default 5000 ms. */
  stopTimeoutMs?: number;
  /**
   * Register the `script.*` commands with these settings (the store, registry and audit log
   * are the harness's own).
   */
  scripts?: Pick<ScriptCommandOptions, "trusted" | "policy" | "sandbox"> & { memoryMb?: number };
  /** Call `runner.start()` right away. Default true. */
  start?: boolean;
  /** The runner's `maxJobs` (`jobs.max`). Default the runner's. */
  maxJobs?: number;
  /** The runner's `maxRunning` (`jobs.maxRunning`). Default the runner's. */
  maxRunning?: number;
}

/** A runner plus everything it produced. */
export interface JobHarness extends AsyncDisposable {
  runner: JobRunner;
  /** Every reply, in send order. */
  frames: Reply[];
  /** Tag changes applied locally. */
  tagChanges: Record<string, string | null>[];
  audit: AuditLog;
  db: DatabaseSync;
  fs: Fs;
  /**
   * Sends a command frame (from server "s1") and returns the replies with its envelope id
   * once the runner has answered (a run's done output, or an install's answer).
   */
  run(frame: Omit<CommandFrame, "v" | "type"> & Partial<CommandFrame>): Promise<Reply[]>;
  /**
   * Runs a command now and returns the `data` of its first output that has some (a data
   * output or the done output); throws when the run ends with an error.
   */
  call(key: string, args?: Record<string, unknown>): Promise<Record<string, unknown>>;
  /** Done outputs of runs (frames with a run id) of job `id`, in order. */
  doneRuns(id: string): Output[];
}

let calls = 0;

/** Builds a {@link JobHarness}. Dispose it to close the runner (and its own database). */
export function jobHarness(options: JobHarnessOptions): JobHarness {
  const clock = options.clock ?? realClock;
  const db = options.db ?? openAgentDatabase(":memory:");
  const fs = options.fs ?? new MemFs();
  const audit = new AuditLog(db, clock);
  const registry = createRegistry();
  const frames: Reply[] = [];
  const tagChanges: Record<string, string | null>[] = [];
  const keepRuns = options.keepRuns ?? 20;
  const commands = withAcl(registry, createCommandAcl(options.allowCommands ?? ["*"]));
  const runner = createJobRunner({
    agentId: "a1",
    registry: commands,
    executor: createWhitelistExecutor(options.executor, options.allowRun ?? []),
    fs,
    paths: options.paths,
    server: options.server,
    store: createJobStore(db, keepRuns, silentLogger),
    keepRuns,
    clock,
    random: options.random ?? cryptoRandom,
    logger: silentLogger,
    audit,
    stopTimeoutMs: options.stopTimeoutMs,
    maxJobs: options.maxJobs,
    maxRunning: options.maxRunning,
    send: (frame) => frames.push(frame),
    setTags: (tags) => tagChanges.push(tags),
  });
  // A test command with a built-in's key (e.g. one given a fake event source) replaces it.
  const replaced = new Set((options.commands ?? []).map((c) => c.key));
  const builtins: Registry = {
    ...registry,
    register: (c) => replaced.has(c.key) || registry.register(c),
  };
  registerBuiltins(builtins, {
    exec: { defaultTimeoutMs: options.execTimeoutMs ?? 10_000, allowEnv: options.allowEnv },
    jobs: runner,
    scripts: options.scripts && {
      agentId: "a1",
      store: createScriptStore(db),
      registry: commands,
      audit,
      memoryMb: 64,
      ...options.scripts,
    },
  });
  for (const command of options.commands ?? []) registry.register(command);
  if (options.start ?? true) runner.start();
  const run: JobHarness["run"] = async (frame) => {
    await runner.run({ v: 1, type: "command", ...frame } as CommandFrame, "s1");
    return frames.filter((f) => f.id === frame.id);
  };
  return {
    runner,
    frames,
    tagChanges,
    audit,
    db,
    fs,
    run,
    async call(key, args = {}) {
      const id = `call-${++calls}`;
      const replies = await run({ id, job: { key, args } });
      const done = replies.at(-1) as Output;
      if (done.error) throw new Error(`${key} failed: ${done.error.code}: ${done.error.message}`);
      const withData = replies.find((f): f is Output => f.type === "output" && !!f.data);
      return withData?.data ?? {};
    },
    doneRuns: (id) =>
      frames.filter((f): f is Output =>
        f.type === "output" && f.done === true && f.job.id === id && f.run !== undefined
      ),
    async [Symbol.asyncDispose]() {
      await runner.close();
      if (!options.db) db.close();
    },
  };
}
