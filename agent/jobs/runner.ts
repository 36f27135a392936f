/**
 * The job runner: receives command frames and turns each into a job. Flow: validate (the
 * ACL and argument checks of the registry, the schedule) → create the job → if persistent,
 * record it in sqlite (an existing id is replaced) → initiate: run it now, or install it on
 * its trigger. Installed jobs run on their trigger with the overlap policy, keep a run
 * history, and persistent ones are reloaded at start. Audits every command on the agent.
 *
 * @module
 */
import type { Clock } from "../../shared/clock.ts";
import type { AuditEvent } from "../../shared/db/mod.ts";
import { JwError, toJwError } from "../../shared/errors.ts";
import type { Fs } from "../../shared/fs/mod.ts";
import type { Logger } from "../../shared/log.ts";
import type { Command as CommandFrame, Reply } from "../../shared/protocol/mod.ts";
import { type Random, randomId } from "../../shared/random.ts";
import type { CommandExecutor } from "../executor.ts";
import type { PreparedCommand, Registry } from "../payload/commands.ts";
import type { JobControl } from "../payload/job.ts";
import {
  isInstalled,
  type Job,
  jobFromCommand,
  type JobSummary,
  Replies,
  type RunRecord,
} from "./job.ts";
import { executeRun, type RunDeps, type RunOutcome } from "./run.ts";
import { createScheduler, type Scheduler } from "./scheduler.ts";
import { createMemoryRunHistory, type JobStore, type RunHistory } from "./store.ts";
import { type CompiledTrigger, compileTrigger } from "./triggers.ts";

/** Where audit events go (an `AuditLog`, or a recorder in tests). */
export interface AuditSink {
  append(event: AuditEvent): void;
}

/** Default bound on how long onStop runs may take when the agent stops. */
export const DEFAULT_STOP_TIMEOUT_MS = 5000;

/** Options for {@link createJobRunner}. */
export interface JobRunnerOptions {
  /** This agent's id (the audit target). */
  agentId: string;
  /** The commands, already wrapped in the ACL (`withAcl`). */
  registry: Registry;
  /** Passed to commands as is: wrap it in the whitelist before. */
  executor: CommandExecutor;
  /** Passed to commands. */
  fs: Fs;
  /** Persistent jobs and their runs. */
  store: JobStore;
  /** Finished runs kept per job (in memory for jobs that are not persistent). */
  keepRuns: number;
  clock: Clock;
  random: Random;
  logger: Logger;
  audit: AuditSink;
  /** Delivers a reply (to the socket, or the outbox while disconnected). Must not throw. */
  send(frame: Reply): void;
  /** Applies a tag change locally (kept for the next hello). */
  setTags(tags: Record<string, string | null>): void;
  /** How long {@link JobRunner.close} waits for onStop runs before killing them. Default 5 s. */
  stopTimeoutMs?: number;
}

/**
 * Runs and keeps jobs. Runs are concurrent and independent; all methods are called from one
 * event loop. Also the {@link JobControl} behind the `job.*` commands.
 */
export interface JobRunner extends JobControl, AsyncDisposable {
  /**
   * Handles a `command` frame. A job with no schedule (or `now`) that is not persistent runs
   * at once: its replies end with the `done` output, and the promise resolves once that is
   * sent. Any other job is installed: one `done` output with `data: {installed: {id, key,
   * trigger, persistent, next, replaced}}` answers at once, and each later run sends its own
   * replies (same envelope id and meta, a new run id). Refusals (forbidden, unknown key, bad
   * args or schedule, agent stopping) answer with a single `done` output carrying the error,
   * before any job is created or stored. Never rejects.
   * @param serverId the server that sent it (audit actor `server:<serverId>`).
   */
  run(frame: CommandFrame, serverId: string): Promise<void>;
  /**
   * Loads the persistent jobs, arms their triggers, then fires `onStart` jobs. Once; later
   * calls do nothing. Stored jobs that no longer pass the checks (e.g. the ACL changed) stay
   * installed but never run; each is logged and audited as `command.denied`.
   */
  start(): void;
  /** The agent was welcomed: fires `onConnect` jobs (after {@link start}, until close). */
  connected(): void;
  /** The agent lost its connection: fires `onDisconnect` jobs (after start, until close). */
  disconnected(): void;
  /** Runs going now. */
  readonly running: number;
  /**
   * Stops: disarms every trigger, kills running runs (they end with error `closed`), fires
   * `onStop` jobs and waits for them at most `stopTimeoutMs` before killing them too, and
   * resolves once every run has sent its `done`. Later `run` calls answer at once with error
   * `closed`. Idempotent.
   */
  close(): Promise<void>;
}

interface ActiveRun {
  controller: AbortController;
  /** Settles when the run has sent its done output. Never rejects. */
  done: Promise<unknown>;
}

interface Installed {
  job: Job;
  /** Null when a reloaded job no longer passes the checks: it is listed but never runs. */
  prepared: PreparedCommand | null;
  history: RunHistory;
  runs: Set<ActiveRun>;
  skipped: number;
  /** Set once deleted: a run finishing later is not recorded. */
  removed: boolean;
}

/** Creates a job runner. Call {@link JobRunner.start} once the agent is wired. */
export function createJobRunner(options: JobRunnerOptions): JobRunner {
  return new Runner(options);
}

class Runner implements JobRunner {
  readonly #o: JobRunnerOptions;
  readonly #deps: RunDeps;
  readonly #scheduler: Scheduler;
  readonly #memoryRuns: RunHistory;
  readonly #installed = new Map<string, Installed>();
  readonly #runs = new Set<ActiveRun>();
  readonly #receiving = new Set<Promise<void>>();
  #started = false;
  /** Set at the start of close(); no trigger fires after it except onStop. */
  #stopping = false;
  #closing: Promise<void> | undefined;

  constructor(options: JobRunnerOptions) {
    this.#o = options;
    this.#deps = {
      clock: options.clock,
      executor: options.executor,
      fs: options.fs,
      logger: options.logger,
      send: options.send,
      setTags: options.setTags,
    };
    this.#scheduler = createScheduler({ clock: options.clock, due: (id) => this.#due(id) });
    this.#memoryRuns = createMemoryRunHistory(options.keepRuns);
  }

  get running(): number {
    return this.#runs.size;
  }

  run(frame: CommandFrame, serverId: string): Promise<void> {
    const p = this.#receive(frame, serverId).catch((err) => {
      this.#o.logger.error("job runner bug", { error: toJwError(err).message });
    });
    this.#receiving.add(p);
    void p.finally(() => this.#receiving.delete(p));
    return p;
  }

  start(): void {
    if (this.#started || this.#stopping) return;
    this.#started = true;
    const { store, logger, clock } = this.#o;
    let jobs: Job[] = [];
    try {
      jobs = store.load();
    } catch (err) {
      logger.error("cannot load stored jobs", { error: toJwError(err).message });
    }
    for (const job of jobs) {
      let prepared: PreparedCommand | null = null;
      let trigger: CompiledTrigger | null = null;
      try {
        prepared = this.#o.registry.prepare(job.key, job.args);
        trigger = compileTrigger(job.trigger, clock.now());
      } catch (err) {
        const e = toJwError(err);
        prepared = null;
        logger.warn("a stored job cannot run; it stays installed until replaced or deleted", {
          job: job.id,
          key: job.key,
          error: `${e.code}: ${e.message}`,
        });
        this.#audit({
          actor: `agent:${this.#o.agentId}`,
          action: "command.denied",
          key: job.key,
          args: job.args,
          outcome: "denied",
          reason: `${e.code}: stored job ${job.id}: ${e.message}`,
        });
      }
      this.#installed.set(job.id, this.#entry(job, prepared));
      if (trigger) this.#scheduler.arm(job.id, trigger);
    }
    if (jobs.length > 0) logger.info("loaded persistent jobs", { jobs: jobs.length });
    this.#scheduler.fire("onStart");
  }

  connected(): void {
    if (this.#started && !this.#stopping) this.#scheduler.fire("onConnect");
  }

  disconnected(): void {
    if (this.#started && !this.#stopping) this.#scheduler.fire("onDisconnect");
  }

  list(): JobSummary[] {
    return [...this.#installed.values()].map((inst) => this.#summary(inst));
  }

  delete(id: string, by: string): void {
    const inst = this.#installed.get(id);
    if (!inst) throw notFound(id);
    this.#scheduler.disarm(id);
    this.#installed.delete(id);
    inst.removed = true;
    const reason = new JwError("closed", "killed because the job was deleted");
    for (const run of inst.runs) run.controller.abort(reason);
    if (inst.job.persistent) this.#o.store.delete(id);
    else this.#memoryRuns.clear(id);
    this.#audit({
      actor: `server:${by}`,
      action: "job.deleted",
      key: inst.job.key,
      args: inst.job.args,
      outcome: "ok",
      reason: `job ${id}`,
    });
    this.#o.logger.info("deleted a job", { job: id, key: inst.job.key });
  }

  runs(id: string, limit: number): RunRecord[] {
    const inst = this.#installed.get(id);
    if (!inst) throw notFound(id);
    return inst.history.list(id, limit);
  }

  close(): Promise<void> {
    this.#closing ??= this.#close();
    return this.#closing;
  }

  [Symbol.asyncDispose](): Promise<void> {
    return this.close();
  }

  async #close(): Promise<void> {
    this.#stopping = true;
    const { clock, logger } = this.#o;
    const onStop = this.#started ? this.#scheduler.armedOn("onStop") : [];
    this.#scheduler.close();
    const stopping = new JwError("closed", "killed because the agent is stopping");
    for (const run of this.#runs) run.controller.abort(stopping);
    const stopRuns = onStop.map((id) => this.#due(id, true)).filter((r) => r !== undefined);
    if (stopRuns.length > 0) {
      const limit = this.#o.stopTimeoutMs ?? DEFAULT_STOP_TIMEOUT_MS;
      let timer: number | undefined;
      const timedOut = new Promise<boolean>((resolve) => {
        timer = clock.setTimeout(() => resolve(true), limit);
      });
      const finished = Promise.all(stopRuns.map((r) => r.done)).then(() => false);
      if (await Promise.race([finished, timedOut])) {
        logger.warn("onStop jobs did not finish in time; killing them", { limitMs: limit });
        const late = new JwError("closed", `killed: onStop jobs may take at most ${limit}ms`);
        for (const run of stopRuns) run.controller.abort(late);
      }
      clock.clearTimeout(timer!);
    }
    while (this.#runs.size > 0 || this.#receiving.size > 0) {
      await Promise.all([...[...this.#runs].map((r) => r.done), ...this.#receiving]);
    }
  }

  async #receive(frame: CommandFrame, serverId: string): Promise<void> {
    const { clock } = this.#o;
    const job = jobFromCommand(frame, serverId, clock.now(), this.#o.random);
    const actor = `server:${serverId}`;
    this.#audit({ actor, action: "command.received", key: job.key, args: job.args, outcome: "ok" });
    let prepared: PreparedCommand;
    let trigger: CompiledTrigger;
    try {
      if (this.#stopping) throw new JwError("closed", "agent is stopping");
      prepared = this.#o.registry.prepare(job.key, job.args);
      trigger = compileTrigger(job.trigger, clock.now());
      if (trigger.kind === "event" && trigger.event === "onStart" && !job.persistent) {
        throw new JwError(
          "invalid_args",
          "an onStart job runs only when the agent starts: install it with persistent: true",
        );
      }
    } catch (err) {
      return this.#deny(job, toJwError(err), actor);
    }
    if (!isInstalled(job)) return await this.#runNow(job, prepared, actor);
    this.#install(job, prepared, trigger, actor);
  }

  /** Answers a refused command with one done output and audits `command.denied`. */
  #deny(job: Job, err: JwError, actor: string): void {
    const now = this.#o.clock.now();
    const error = err.toJSON();
    this.#o.send(new Replies(job, this.#o.clock).done({ start: now, finish: now, error }));
    this.#audit({
      actor,
      action: "command.denied",
      key: job.key,
      args: job.args,
      outcome: "denied",
      reason: `${error.code}: ${error.message}`,
    });
  }

  async #runNow(job: Job, prepared: PreparedCommand, actor: string): Promise<void> {
    const { record, denied } = await this.#startRun(job, prepared).result;
    const error = record.error;
    this.#audit({
      actor,
      action: denied ? "command.denied" : "command.executed",
      key: job.key,
      args: job.args,
      outcome: denied ? "denied" : error ? "error" : "ok",
      reason: error ? `${error.code}: ${error.message}` : undefined,
    });
    this.#o.logger.debug("job finished", {
      job: job.id,
      key: job.key,
      error: error?.code,
      ms: record.durationMs,
    });
  }

  #install(job: Job, prepared: PreparedCommand, trigger: CompiledTrigger, actor: string): void {
    const { clock, store, logger } = this.#o;
    const old = this.#installed.get(job.id);
    try {
      if (job.persistent) store.upsert(job);
      else if (old?.job.persistent) store.delete(job.id);
    } catch (err) {
      const e = toJwError(err);
      logger.error("cannot store a job", { job: job.id, error: e.message });
      return this.#deny(job, new JwError("internal", `cannot store job: ${e.message}`), actor);
    }
    if (old) this.#scheduler.disarm(job.id);
    const inst = this.#entry(job, prepared);
    this.#installed.set(job.id, inst);
    this.#scheduler.arm(job.id, trigger);
    this.#audit({
      actor,
      action: old ? "job.replaced" : "job.installed",
      key: job.key,
      args: job.args,
      outcome: "ok",
      reason: `job ${job.id}, trigger ${describeTrigger(job)}${
        job.persistent ? ", persistent" : ""
      }`,
    });
    logger.info(old ? "replaced a job" : "installed a job", {
      job: job.id,
      key: job.key,
      trigger: describeTrigger(job),
      persistent: job.persistent,
    });
    const now = clock.now();
    this.#o.send(
      new Replies(job, clock).done({
        start: now,
        finish: now,
        error: null,
        data: {
          installed: {
            id: job.id,
            key: job.key,
            trigger: job.trigger,
            persistent: job.persistent,
            next: this.#scheduler.next(job.id),
            replaced: old !== undefined,
          },
        },
      }),
    );
    // A persistent job without a schedule runs once now; it is kept (listed, with its run)
    // but not run again at the next start.
    if (trigger.kind === "now") this.#due(job.id);
  }

  /**
   * Job `id` is due: starts a run unless the agent is stopping (except for onStop runs) or
   * overlap `skip` finds a run still going. Returns the started run.
   */
  #due(id: string, onStop = false): ActiveRun | undefined {
    const inst = this.#installed.get(id);
    if (!inst || !inst.prepared || (this.#stopping && !onStop)) return undefined;
    if (inst.job.overlap === "skip" && inst.runs.size > 0) {
      inst.skipped++;
      this.#o.logger.debug("skipped a due run: the previous run is still going", {
        job: id,
        skipped: inst.skipped,
      });
      return undefined;
    }
    return this.#startRun(inst.job, inst.prepared, inst);
  }

  #startRun(
    job: Job,
    prepared: PreparedCommand,
    inst?: Installed,
  ): ActiveRun & { result: Promise<RunOutcome> } {
    const runId = `r-${randomId(this.#o.random)}`;
    const controller = new AbortController();
    const result = executeRun(this.#deps, job, runId, prepared, controller.signal);
    const run = { controller, done: result.then(() => {}, () => {}), result };
    this.#runs.add(run);
    inst?.runs.add(run);
    void run.done.then(() => {
      this.#runs.delete(run);
      inst?.runs.delete(run);
    });
    if (inst) {
      void result.then((outcome) => {
        if (inst.removed) return;
        try {
          inst.history.record(job.id, outcome.record);
        } catch (err) {
          this.#o.logger.error("cannot record a run", {
            job: job.id,
            error: toJwError(err).message,
          });
        }
      });
    }
    return run;
  }

  #entry(job: Job, prepared: PreparedCommand | null): Installed {
    return {
      job,
      prepared,
      history: job.persistent ? this.#o.store : this.#memoryRuns,
      runs: new Set(),
      skipped: 0,
      removed: false,
    };
  }

  #summary(inst: Installed): JobSummary {
    const { job } = inst;
    return {
      id: job.id,
      key: job.key,
      trigger: job.trigger,
      persistent: job.persistent,
      overlap: job.overlap,
      createdAt: job.createdAt,
      next: this.#scheduler.next(job.id),
      running: inst.runs.size > 0,
      skipped: inst.skipped,
      last: inst.history.list(job.id, 1)[0] ?? null,
    };
  }

  #audit(event: Omit<AuditEvent, "target">): void {
    this.#o.audit.append({ ...event, target: this.#o.agentId });
  }
}

function notFound(id: string): JwError {
  return new JwError("not_found", `no job "${id}" on this agent`, { detail: { id } });
}

/** "interval 30s", "cron 0 * * * * (Europe/Berlin)", "onStart", … */
function describeTrigger(job: Job): string {
  const t = job.trigger;
  switch (t.trigger) {
    case "interval":
      return `interval ${t.every}`;
    case "cron":
      return `cron ${t.cron}${t.tz ? ` (${t.tz})` : ""}`;
    default:
      return t.trigger;
  }
}
