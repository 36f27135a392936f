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
import type {
  JobState,
  PathPolicy,
  PreparedCommand,
  Registry,
  ServerLink,
} from "../payload/commands.ts";
import type { JobControl } from "../payload/job.ts";
import {
  isInstalled,
  type Job,
  type JobBlock,
  jobFromCommand,
  type JobSummary,
  Replies,
  type RunRecord,
  type UnreadableJobSummary,
} from "./job.ts";
import { executeRun, type RunDeps, type RunOutcome } from "./run.ts";
import { createScheduler, type Scheduler } from "./scheduler.ts";
import {
  createMemoryRunHistory,
  type JobStore,
  type RunHistory,
  type StoredJobs,
} from "./store.ts";
import { type CompiledTrigger, compileTrigger } from "./triggers.ts";

/** Where audit events go (an `AuditLog`, or a recorder in tests). */
export interface AuditSink {
  append(event: AuditEvent): void;
}

/** The server link of a runner given none: no URL, no token. */
const NO_SERVER: ServerLink = {
  url: () => null,
  authorization: () =>
    Promise.reject(new JwError("unavailable", "this agent has no server connection")),
};

/** Default bound on how long onStop runs may take when the agent stops. */
export const DEFAULT_STOP_TIMEOUT_MS = 5000;

/** Default for {@link JobRunnerOptions.maxJobs} (config `jobs.max`). */
export const DEFAULT_MAX_JOBS = 1000;

/** Default for {@link JobRunnerOptions.maxRunning} (config `jobs.maxRunning`). */
export const DEFAULT_MAX_RUNNING = 64;

/**
 * The job id the agent's own replies use (`{id: "agent", key: "agent.outbox"}` for outbox
 * warnings). No job may take it: installing or running one is refused with `invalid_args`.
 */
export const RESERVED_JOB_ID = "agent";

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
  /** Where commands may read and write. Default nowhere. */
  paths?: PathPolicy;
  /** The agent's server, for files. Default none (`url()` is null). */
  server?: ServerLink;
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
  /**
   * Most installed jobs, blocked ones included (config `jobs.max`). Installing a new id
   * beyond it is refused with `forbidden`; stored jobs beyond it at start stay listed,
   * blocked. Default {@link DEFAULT_MAX_JOBS}.
   */
  maxJobs?: number;
  /**
   * Most runs going at once across all jobs, not counting runs already being killed (config
   * `jobs.maxRunning`). A due run beyond it is skipped and counted in the job's `skipped`; a
   * command to run now beyond it is refused with `forbidden`, except the `job.*` commands,
   * so an operator can always list and delete jobs. Default {@link DEFAULT_MAX_RUNNING}.
   */
  maxRunning?: number;
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
   * replies (same envelope id and meta, a new run id). Installing an id that is installed
   * replaces that job: its trigger is cancelled and its runs still going are killed (their
   * done output has error `closed`, "killed because the job was replaced"; they are not kept
   * in the run history), and with overlap `skip` the new job starts no run until they have
   * ended. Refusals (forbidden, unknown key, bad args or schedule, the reserved id
   * {@link RESERVED_JOB_ID}, `jobs.max` or `jobs.maxRunning` reached, agent stopping) answer
   * with a single `done` output carrying the error, before any job is created or stored,
   * and are audited as `command.denied`. Never rejects.
   * @param serverId the server that sent it (audit actor `server:<serverId>`).
   */
  run(frame: CommandFrame, serverId: string): Promise<void>;
  /**
   * Loads the persistent jobs, arms their triggers, then fires `onStart` jobs. Once; later
   * calls do nothing. Stored jobs that no longer pass the checks (e.g. the ACL changed, or
   * beyond `maxJobs`) and stored rows that no longer parse stay installed but never run: each
   * is logged, audited as `command.denied` (actor `agent:<id>`), and listed with `blocked`
   * until it is replaced or deleted.
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
  kind: "job";
  job: Job;
  /** Null when a reloaded job no longer passes the checks: it is listed but never runs. */
  prepared: PreparedCommand | null;
  /** Why `prepared` is null. */
  blocked: JobBlock | null;
  history: RunHistory;
  /**
   * Runs going now. A replacing entry takes over the replaced one's set, so the runs being
   * killed still count for overlap `skip`.
   */
  runs: Set<ActiveRun>;
  skipped: number;
  /** Set once deleted or replaced: a run finishing later is not recorded. */
  removed: boolean;
  /** The job's state (`RunContext.state`) once read or set; undefined before. */
  state?: { value: Record<string, unknown> | undefined; loaded: boolean };
}

/** A stored row that no longer parses: listed (blocked) and deletable, never run. */
interface Unreadable {
  kind: "unreadable";
  id: string;
  key?: string;
  blocked: JobBlock;
}

type Entry = Installed | Unreadable;

/** Creates a job runner. Call {@link JobRunner.start} once the agent is wired. */
export function createJobRunner(options: JobRunnerOptions): JobRunner {
  return new Runner(options);
}

class Runner implements JobRunner {
  readonly #o: JobRunnerOptions;
  readonly #deps: RunDeps;
  readonly #scheduler: Scheduler;
  readonly #memoryRuns: RunHistory;
  readonly #maxJobs: number;
  readonly #maxRunning: number;
  readonly #installed = new Map<string, Entry>();
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
      paths: options.paths ?? { read: [], write: [] },
      server: options.server ?? NO_SERVER,
      logger: options.logger,
      send: options.send,
      setTags: options.setTags,
    };
    this.#scheduler = createScheduler({ clock: options.clock, due: (id) => this.#due(id) });
    this.#memoryRuns = createMemoryRunHistory(options.keepRuns);
    this.#maxJobs = options.maxJobs ?? DEFAULT_MAX_JOBS;
    this.#maxRunning = options.maxRunning ?? DEFAULT_MAX_RUNNING;
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
    let stored: StoredJobs = { jobs: [], unreadable: [] };
    try {
      stored = store.load();
    } catch (err) {
      logger.error("cannot load stored jobs", { error: toJwError(err).message });
    }
    for (const job of stored.jobs) {
      let prepared: PreparedCommand | null = null;
      let trigger: CompiledTrigger | null = null;
      let blocked: JobBlock | null = null;
      try {
        checkJobId(job.id);
        if (this.#installed.size >= this.#maxJobs) throw tooManyJobs(this.#maxJobs);
        prepared = this.#o.registry.prepare(job.key, job.args);
        trigger = compileTrigger(job.trigger, clock.now());
      } catch (err) {
        const e = toJwError(err);
        prepared = null;
        trigger = null;
        blocked = { code: e.code, message: e.message };
        this.#blockedAtLoad(job.id, job.key, job.args, blocked);
      }
      this.#installed.set(job.id, this.#entry(job, prepared, blocked));
      if (trigger) this.#scheduler.arm(job.id, trigger);
    }
    for (const row of stored.unreadable) {
      const blocked = { code: "invalid_message", message: row.error };
      this.#blockedAtLoad(row.id, row.key, undefined, blocked);
      this.#installed.set(row.id, { kind: "unreadable", id: row.id, key: row.key, blocked });
    }
    const loaded = stored.jobs.length + stored.unreadable.length;
    if (loaded > 0) logger.info("loaded persistent jobs", { jobs: loaded });
    this.#scheduler.fire("onStart");
  }

  connected(): void {
    if (this.#started && !this.#stopping) this.#scheduler.fire("onConnect");
  }

  disconnected(): void {
    if (this.#started && !this.#stopping) this.#scheduler.fire("onDisconnect");
  }

  list(): (JobSummary | UnreadableJobSummary)[] {
    return [...this.#installed.values()].map((entry) =>
      entry.kind === "job" ? this.#summary(entry) : {
        id: entry.id,
        ...(entry.key === undefined ? {} : { key: entry.key }),
        blocked: { ...entry.blocked },
      }
    );
  }

  delete(id: string, by: string): void {
    const inst = this.#installed.get(id);
    if (!inst) throw notFound(id);
    this.#scheduler.disarm(id);
    this.#installed.delete(id);
    if (inst.kind === "unreadable") {
      this.#o.store.delete(id);
      this.#audit({
        actor: `server:${by}`,
        action: "job.deleted",
        key: inst.key,
        outcome: "ok",
        reason: `job ${id} (stored row did not parse)`,
      });
      this.#o.logger.info("deleted a stored job that did not parse", { job: id });
      return;
    }
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
    if (inst.kind === "unreadable") return this.#o.store.list(id, limit);
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
      checkJobId(job.id);
      prepared = this.#o.registry.prepare(job.key, job.args);
      trigger = compileTrigger(job.trigger, clock.now());
      if (trigger.kind === "event" && trigger.event === "onStart" && !job.persistent) {
        throw new JwError(
          "invalid_args",
          "an onStart job runs only when the agent starts: install it with persistent: true",
        );
      }
      if (isInstalled(job)) {
        if (!this.#installed.has(job.id) && this.#installed.size >= this.#maxJobs) {
          throw tooManyJobs(this.#maxJobs);
        }
      } else if (!isControlKey(job.key) && this.#activeRuns() >= this.#maxRunning) {
        throw tooManyRuns(this.#maxRunning);
      }
    } catch (err) {
      return this.#deny(job, toJwError(err), actor);
    }
    if (!isInstalled(job)) return await this.#runNow(job, prepared, actor);
    await this.#install(job, prepared, trigger, actor, frame.job.runNow === true);
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

  async #install(
    job: Job,
    prepared: PreparedCommand,
    trigger: CompiledTrigger,
    actor: string,
    runNow = false,
  ): Promise<void> {
    const { clock, store, logger } = this.#o;
    const old = this.#installed.get(job.id);
    const wasStored = old !== undefined && (old.kind === "unreadable" || old.job.persistent);
    try {
      if (job.persistent) store.upsert(job);
      else if (wasStored) store.delete(job.id);
    } catch (err) {
      const e = toJwError(err);
      logger.error("cannot store a job", { job: job.id, error: e.message });
      return this.#deny(job, new JwError("internal", `cannot store job: ${e.message}`), actor);
    }
    let inherited = new Set<ActiveRun>();
    if (old) {
      this.#scheduler.disarm(job.id);
      if (old.kind === "job") {
        // The old runs are killed and not recorded; the new entry keeps counting them as
        // going until they end, so overlap `skip` never lets two runs of the id overlap.
        old.removed = true;
        const replaced = new JwError("closed", "killed because the job was replaced");
        for (const run of old.runs) run.controller.abort(replaced);
        inherited = old.runs;
        // Runs kept in memory for the old job would resurface if the id went back to memory.
        if (!old.job.persistent && job.persistent) this.#memoryRuns.clear(job.id);
      }
    }
    const inst = this.#entry(job, prepared, null, inherited);
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
    // but not run again at the next start. So does any job installed with `runNow`, besides
    // its schedule. With overlap skip it waits for replaced runs.
    if (trigger.kind !== "now" && !runNow) return;
    if (job.overlap === "skip" && inst.runs.size > 0) {
      await Promise.all([...inst.runs].map((run) => run.done));
    }
    if (this.#installed.get(job.id) === inst) this.#due(job.id);
  }

  /**
   * Job `id` is due: starts a run unless the agent is stopping (except for onStop runs) or
   * overlap `skip` finds a run still going. Returns the started run.
   */
  #due(id: string, onStop = false): ActiveRun | undefined {
    const inst = this.#installed.get(id);
    if (inst?.kind !== "job" || !inst.prepared || (this.#stopping && !onStop)) return undefined;
    if (inst.job.overlap === "skip" && inst.runs.size > 0) {
      inst.skipped++;
      this.#o.logger.debug("skipped a due run: the previous run is still going", {
        job: id,
        skipped: inst.skipped,
      });
      return undefined;
    }
    if (this.#activeRuns() >= this.#maxRunning) {
      inst.skipped++;
      this.#o.logger.warn("skipped a due run: jobs.maxRunning runs are going", {
        job: id,
        maxRunning: this.#maxRunning,
        skipped: inst.skipped,
      });
      return undefined;
    }
    return this.#startRun(inst.job, inst.prepared, inst);
  }

  /**
   * The state a run of `job` sees: kept with the installed job (a run now keeps its own),
   * and in agent.db for a persistent job, so it outlives agent restarts.
   */
  #stateFor(job: Job, inst?: Installed): JobState {
    const { store, clock, logger } = this.#o;
    const held = inst ? (inst.state ??= { value: undefined, loaded: false }) : {
      value: undefined,
      loaded: true,
    };
    return {
      get() {
        if (!held.loaded) {
          held.loaded = true;
          try {
            held.value = job.persistent ? store.getState(job) : undefined;
          } catch (err) {
            logger.warn("cannot read a job's saved state", {
              job: job.id,
              error: toJwError(err).message,
            });
          }
        }
        return held.value;
      },
      set(value) {
        held.loaded = true;
        held.value = value;
        if (!job.persistent) return;
        try {
          store.setState(job, value, clock.now());
        } catch (err) {
          // Kept in memory; after a restart the job goes on from the last state saved.
          logger.warn("cannot save a job's state", { job: job.id, error: toJwError(err).message });
        }
      },
    };
  }

  /** Runs going now that are not being killed (what `maxRunning` bounds). */
  #activeRuns(): number {
    let n = 0;
    for (const run of this.#runs) if (!run.controller.signal.aborted) n++;
    return n;
  }

  #startRun(
    job: Job,
    prepared: PreparedCommand,
    inst?: Installed,
  ): ActiveRun & { result: Promise<RunOutcome> } {
    const runId = `r-${randomId(this.#o.random)}`;
    const controller = new AbortController();
    const result = executeRun(
      this.#deps,
      job,
      runId,
      prepared,
      controller.signal,
      this.#stateFor(job, inst),
    );
    const run = { controller, done: result.then(() => {}, () => {}), result };
    this.#runs.add(run);
    inst?.runs.add(run);
    void run.done.then(() => {
      this.#runs.delete(run);
      inst?.runs.delete(run);
    });
    if (inst) {
      void result.then((outcome) => {
        if (outcome.denied) this.#deniedRun(job, outcome.record);
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

  /**
   * A run of an installed job was refused when it ran (e.g. `not_whitelisted` after an
   * allowRun change): audited as `command.denied` by the agent. Runs that are not refused
   * are not audited; they are in the run history.
   */
  #deniedRun(job: Job, record: RunRecord): void {
    const error = record.error!;
    this.#o.logger.warn("a scheduled run was refused", {
      job: job.id,
      key: job.key,
      run: record.run,
      error: `${error.code}: ${error.message}`,
    });
    this.#audit({
      actor: `agent:${this.#o.agentId}`,
      action: "command.denied",
      key: job.key,
      args: job.args,
      outcome: "denied",
      reason: `${error.code}: job ${job.id} run ${record.run}: ${error.message}`,
    });
  }

  /** A stored job cannot run: logged and audited as `command.denied` by the agent. */
  #blockedAtLoad(id: string, key: string | undefined, args: unknown, blocked: JobBlock): void {
    this.#o.logger.warn("a stored job cannot run; it stays installed until replaced or deleted", {
      job: id,
      key,
      error: `${blocked.code}: ${blocked.message}`,
    });
    this.#audit({
      actor: `agent:${this.#o.agentId}`,
      action: "command.denied",
      key,
      args,
      outcome: "denied",
      reason: `${blocked.code}: stored job ${id}: ${blocked.message}`,
    });
  }

  #entry(
    job: Job,
    prepared: PreparedCommand | null,
    blocked: JobBlock | null,
    runs = new Set<ActiveRun>(),
  ): Installed {
    return {
      kind: "job",
      job,
      prepared,
      blocked,
      history: job.persistent ? this.#o.store : this.#memoryRuns,
      runs,
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
      ...(inst.blocked ? { blocked: { ...inst.blocked } } : {}),
    };
  }

  #audit(event: Omit<AuditEvent, "target">): void {
    this.#o.audit.append({ ...event, target: this.#o.agentId });
  }
}

/** Refuses the reserved job id. */
function checkJobId(id: string): void {
  if (id !== RESERVED_JOB_ID) return;
  throw new JwError(
    "invalid_args",
    `job id "${RESERVED_JOB_ID}" is reserved for the agent's own replies: choose another id`,
    { detail: { id } },
  );
}

/** The `job.*` commands: never refused by `maxRunning`, so jobs can always be managed. */
function isControlKey(key: string): boolean {
  return key.startsWith("job.");
}

function tooManyJobs(max: number): JwError {
  return new JwError(
    "forbidden",
    `this agent already has ${max} jobs installed (jobs.max): delete one or raise jobs.max`,
    { detail: { max } },
  );
}

function tooManyRuns(max: number): JwError {
  return new JwError(
    "forbidden",
    `this agent already has ${max} runs going (jobs.maxRunning): try again later or raise ` +
      "jobs.maxRunning",
    { detail: { maxRunning: max } },
  );
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
