/**
 * Test helper: a job runner wired like the agent's (registry with the built-in commands,
 * whitelist, audit log in an in-memory database) that records every reply frame.
 *
 * @module
 */
import { type Clock, realClock } from "../shared/clock.ts";
import { AuditLog, type DatabaseSync } from "../shared/db/mod.ts";
import { silentLogger } from "../shared/log.ts";
import type { Command as CommandFrame, Reply } from "../shared/protocol/mod.ts";
import { cryptoRandom, type Random } from "../shared/random.ts";
import { openAgentDatabase } from "./db.ts";
import { type CommandExecutor, createWhitelistExecutor } from "./executor.ts";
import { createJobRunner, type JobRunner } from "./jobs/mod.ts";
import { createExecCommand, createRegistry, createTagsCommand } from "./payload/mod.ts";

/** Options for {@link jobHarness}. */
export interface JobHarnessOptions {
  executor: CommandExecutor;
  allowRun?: string[];
  clock?: Clock;
  random?: Random;
  /** exec.run default timeout. Default 10 s. */
  execTimeoutMs?: number;
  /** exec.run's allowEnv. Default []. */
  allowEnv?: string[];
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
  /** Runs a command frame (from server "s1") and returns the replies with its envelope id. */
  run(frame: Omit<CommandFrame, "v" | "type"> & Partial<CommandFrame>): Promise<Reply[]>;
}

/** Builds a {@link JobHarness}. Dispose it to close the runner and database. */
export function jobHarness(options: JobHarnessOptions): JobHarness {
  const clock = options.clock ?? realClock;
  const db = openAgentDatabase(":memory:");
  const audit = new AuditLog(db, clock);
  const registry = createRegistry();
  registry.register(createExecCommand({
    defaultTimeoutMs: options.execTimeoutMs ?? 10_000,
    allowEnv: options.allowEnv,
  }));
  registry.register(createTagsCommand());
  const frames: Reply[] = [];
  const tagChanges: Record<string, string | null>[] = [];
  const runner = createJobRunner({
    agentId: "a1",
    registry,
    executor: createWhitelistExecutor(options.executor, options.allowRun ?? []),
    clock,
    random: options.random ?? cryptoRandom,
    logger: silentLogger,
    audit,
    send: (frame) => frames.push(frame),
    setTags: (tags) => tagChanges.push(tags),
  });
  return {
    runner,
    frames,
    tagChanges,
    audit,
    db,
    async run(frame) {
      await runner.run({ v: 1, type: "command", ...frame } as CommandFrame, "s1");
      return frames.filter((f) => f.id === frame.id);
    },
    async [Symbol.asyncDispose]() {
      await runner.close();
      db.close();
    },
  };
}
