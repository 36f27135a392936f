/**
 * Where jobs and their run history live: persistent jobs in the `jobs` and `runs` tables of
 * agent.db, the run history of in-memory jobs in a ring. Both keep the newest `keepRuns`
 * runs per job and prune older ones as they add.
 *
 * @module
 */
import type { DatabaseSync, Migration } from "../../shared/db/mod.ts";
import { z } from "zod";
import { JwError, toJwError } from "../../shared/errors.ts";
import type { Logger } from "../../shared/log.ts";
import {
  CommandKey,
  describeIssues,
  Id,
  JsonObject,
  Meta,
  Millis,
  Overlap,
  Schedule,
} from "../../shared/protocol/mod.ts";
import type { Job, RunRecord } from "./job.ts";

/** The migration creating `jobs` and `runs`; part of the agent's migration list. */
export const jobsMigration: Migration = {
  name: "jobs and runs",
  up: `
    CREATE TABLE jobs (
      id TEXT PRIMARY KEY,
      key TEXT NOT NULL,
      args TEXT NOT NULL,
      meta TEXT,
      trigger TEXT NOT NULL,
      overlap TEXT NOT NULL,
      created_at INTEGER NOT NULL,
      created_by TEXT NOT NULL,
      envelope_id TEXT NOT NULL
    );
    CREATE TABLE runs (
      seq INTEGER PRIMARY KEY AUTOINCREMENT,
      job_id TEXT NOT NULL,
      run_id TEXT NOT NULL,
      start INTEGER NOT NULL,
      finish INTEGER NOT NULL,
      duration_ms INTEGER NOT NULL,
      exit_code INTEGER,
      error TEXT
    );
    CREATE INDEX runs_by_job ON runs(job_id, seq);
  `,
};

/**
 * The migration creating `job_state`: each persistent job's own state (a JSON object, see
 * `RunContext.state`), with the arguments it was made under.
 */
export const jobStateMigration: Migration = {
  name: "job state",
  up: `
    CREATE TABLE job_state (
      job_id TEXT PRIMARY KEY,
      args TEXT NOT NULL,
      state TEXT NOT NULL,
      updated_at INTEGER NOT NULL
    );
  `,
};

/** Run history of one job, newest first. */
export interface RunHistory {
  /** Adds a finished run and prunes the job's history to the newest `keepRuns`. */
  record(jobId: string, run: RunRecord): void;
  /** The newest `limit` runs, newest first. */
  list(jobId: string, limit: number): RunRecord[];
  /** Forgets a job's runs. */
  clear(jobId: string): void;
}

/** Persistent jobs and their runs in sqlite. Synchronous; one agent owns the database. */
export interface JobStore extends RunHistory {
  /** Inserts the job, or replaces the row with the same id. */
  upsert(job: Job): void;
  /** Deletes the job and its runs in one transaction; false when there was no such job. */
  delete(id: string): boolean;
  /**
   * Every stored job, oldest first. Rows that no longer parse are returned apart, with a
   * warning each; they stay in the table until deleted or replaced.
   */
  load(): StoredJobs;
  /**
   * The job's saved state, if it was saved under the same arguments (a job replaced by one
   * with other arguments starts afresh).
   */
  getState(job: Pick<Job, "id" | "args">): Record<string, unknown> | undefined;
  /** Saves the job's state. */
  setState(job: Pick<Job, "id" | "args">, state: Record<string, unknown>, now: number): void;
}

/** What {@link JobStore.load} finds. */
export interface StoredJobs {
  /** The rows that parse, oldest first. */
  jobs: Job[];
  /** The rows that do not, oldest first. */
  unreadable: UnreadableJob[];
}

/** A stored job row that does not parse. */
export interface UnreadableJob {
  id: string;
  /** The row's command key, when it is a valid key. */
  key?: string;
  /** What did not parse, on one line: `stored job column trigger: …`. */
  error: string;
}

interface JobRow {
  id: string;
  key: string;
  args: string;
  meta: string | null;
  trigger: string;
  overlap: string;
  created_at: number;
  created_by: string;
  envelope_id: string;
}

interface RunRow {
  run_id: string;
  start: number;
  finish: number;
  duration_ms: number;
  exit_code: number | null;
  error: string | null;
}

/** Opens the store on `db` (which must have {@link jobsMigration} applied). */
export function createJobStore(db: DatabaseSync, keepRuns: number, logger: Logger): JobStore {
  const upsert = db.prepare(
    `INSERT OR REPLACE INTO jobs (id, key, args, meta, trigger, overlap, created_at, created_by,
      envelope_id) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)`,
  );
  const deleteJob = db.prepare("DELETE FROM jobs WHERE id = ?");
  const deleteRuns = db.prepare("DELETE FROM runs WHERE job_id = ?");
  const deleteState = db.prepare("DELETE FROM job_state WHERE job_id = ?");
  const readState = db.prepare("SELECT args, state FROM job_state WHERE job_id = ?");
  const writeState = db.prepare(
    `INSERT OR REPLACE INTO job_state (job_id, args, state, updated_at) VALUES (?, ?, ?, ?)`,
  );
  const insertRun = db.prepare(
    `INSERT INTO runs (job_id, run_id, start, finish, duration_ms, exit_code, error)
      VALUES (?, ?, ?, ?, ?, ?, ?)`,
  );
  const prune = db.prepare(
    `DELETE FROM runs WHERE job_id = ? AND seq NOT IN
      (SELECT seq FROM runs WHERE job_id = ? ORDER BY seq DESC LIMIT ?)`,
  );
  const listRuns = db.prepare(
    `SELECT run_id, start, finish, duration_ms, exit_code, error FROM runs WHERE job_id = ?
      ORDER BY seq DESC LIMIT ?`,
  );
  const all = db.prepare("SELECT * FROM jobs ORDER BY created_at, id");

  const transaction = (fn: () => void): void => {
    db.exec("BEGIN IMMEDIATE");
    try {
      fn();
      db.exec("COMMIT");
    } catch (err) {
      db.exec("ROLLBACK");
      throw err;
    }
  };

  return {
    upsert(job) {
      upsert.run(
        job.id,
        job.key,
        JSON.stringify(job.args),
        job.meta === undefined ? null : JSON.stringify(job.meta),
        JSON.stringify(job.trigger),
        job.overlap,
        job.createdAt,
        job.createdBy,
        job.envelopeId,
      );
    },
    delete(id) {
      let changes = 0;
      transaction(() => {
        changes = Number(deleteJob.run(id).changes);
        deleteRuns.run(id);
        deleteState.run(id);
      });
      return changes > 0;
    },
    getState(job) {
      const row = readState.get(job.id) as { args: string; state: string } | undefined;
      if (!row || row.args !== JSON.stringify(job.args)) return undefined;
      try {
        const state = JSON.parse(row.state);
        return typeof state === "object" && state !== null && !Array.isArray(state)
          ? state
          : undefined;
      } catch {
        logger.warn("a job's saved state does not parse; starting afresh", { job: job.id });
        return undefined;
      }
    },
    setState(job, state, now) {
      writeState.run(job.id, JSON.stringify(job.args), JSON.stringify(state), now);
    },
    load() {
      const found: StoredJobs = { jobs: [], unreadable: [] };
      for (const row of all.all() as unknown as JobRow[]) {
        try {
          found.jobs.push(jobFromRow(row));
        } catch (err) {
          const error = toJwError(err).message;
          logger.warn("a stored job does not parse; it never runs until replaced or deleted", {
            job: row.id,
            error,
          });
          const key = CommandKey.safeParse(row.key);
          found.unreadable.push({
            id: String(row.id),
            ...(key.success ? { key: key.data } : {}),
            error,
          });
        }
      }
      return found;
    },
    record(jobId, run) {
      transaction(() => {
        insertRun.run(
          jobId,
          run.run,
          run.start,
          run.finish,
          run.durationMs,
          run.exitCode,
          run.error === null ? null : JSON.stringify(run.error),
        );
        prune.run(jobId, jobId, keepRuns);
      });
    },
    list(jobId, limit) {
      return (listRuns.all(jobId, limit) as unknown as RunRow[]).map((r) => ({
        run: r.run_id,
        start: r.start,
        finish: r.finish,
        durationMs: r.duration_ms,
        exitCode: r.exit_code,
        error: r.error === null ? null : JSON.parse(r.error),
      }));
    },
    clear(jobId) {
      deleteRuns.run(jobId);
    },
  };
}

function jobFromRow(row: JobRow): Job {
  const job: Job = {
    id: column("id", () => Id.parse(row.id)),
    key: column("key", () => CommandKey.parse(row.key)),
    args: column("args", () => JsonObject.parse(JSON.parse(row.args))),
    trigger: column("trigger", () => Schedule.parse(JSON.parse(row.trigger))),
    persistent: true,
    overlap: column("overlap", () => Overlap.parse(row.overlap)),
    createdAt: column("created_at", () => Millis.parse(row.created_at)),
    createdBy: column("created_by", () => z.string().parse(row.created_by)),
    envelopeId: column("envelope_id", () => Id.parse(row.envelope_id)),
  };
  if (row.meta === null) return job;
  return { ...job, meta: column("meta", () => Meta.parse(JSON.parse(row.meta!))) };
}

/** Parses one column; a failure is `invalid_message` naming the column, on one line. */
function column<T>(name: string, parse: () => T): T {
  try {
    return parse();
  } catch (err) {
    const why = err instanceof z.ZodError ? describeIssues(err) : toJwError(err).message;
    throw new JwError("invalid_message", `stored job column ${name}: ${why}`);
  }
}

/** Run history in memory (for jobs that are not persistent): the newest `keepRuns` per job. */
export function createMemoryRunHistory(keepRuns: number): RunHistory {
  const runs = new Map<string, RunRecord[]>();
  return {
    record(jobId, run) {
      const list = runs.get(jobId) ?? [];
      list.unshift(run);
      if (list.length > keepRuns) list.length = keepRuns;
      runs.set(jobId, list);
    },
    list: (jobId, limit) => (runs.get(jobId) ?? []).slice(0, limit),
    clear: (jobId) => void runs.delete(jobId),
  };
}
