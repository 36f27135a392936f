/**
 * The `job` category: operators list, delete and inspect the jobs installed on an agent.
 *
 * - `job.list` `{}` → one output `data: {jobs: (JobSummary | UnreadableJobSummary)[]}`, then
 *   the done output. A job that is kept but never runs carries `blocked: {code, message}`.
 * - `job.delete` `{id}` → cancels the job's trigger, kills a run in progress, deletes the
 *   job and its runs; the done output carries `data: {deleted: id}`.
 * - `job.runs` `{id, limit?}` → one output `data: {runs: RunRecord[]}` (newest first), then
 *   the done output.
 *
 * An unknown id ends the run with error `not_found`.
 *
 * @module
 */
import { z } from "zod";
import { Id } from "../../shared/protocol/mod.ts";
import type { JobSummary, RunRecord, UnreadableJobSummary } from "../jobs/job.ts";
import { type Command, defineCommand } from "./commands.ts";

/** What the `job.*` commands need from the job runner. */
export interface JobControl {
  /**
   * Every installed job (persistent or scheduled), in install order; stored jobs that are
   * blocked or no longer parse are listed too, with `blocked`.
   */
  list(): (JobSummary | UnreadableJobSummary)[];
  /**
   * Deletes job `id` (also a blocked or unreadable stored one): disarms it, kills its running
   * runs, removes it and its run history.
   * Audited as `job.deleted` with actor `server:<by>`.
   * @throws JwError `not_found`.
   */
  delete(id: string, by: string): void;
  /**
   * The newest `limit` finished runs of job `id`, newest first.
   * @throws JwError `not_found`.
   */
  runs(id: string, limit: number): RunRecord[];
}

/** Arguments of `job.list`: none. */
export const JobListArgs = z.object({}).strict();
/** Arguments of `job.delete`. */
export const JobDeleteArgs = z.object({ id: Id }).strict();
/** Arguments of `job.runs`: `limit` 1–1000, default 20. */
export const JobRunsArgs = z.object({
  id: Id,
  limit: z.number().int().min(1).max(1000).default(20),
}).strict();

/** Creates `job.list`, `job.delete` and `job.runs` on top of `control`. */
export function createJobCommands(control: JobControl): Command[] {
  return [
    defineCommand({
      key: "job.list",
      description: "lists the jobs installed on the agent with their next and last run",
      args: JobListArgs,
      run(ctx) {
        ctx.emitData({ jobs: control.list() });
        return Promise.resolve({ error: null });
      },
    }),
    defineCommand({
      key: "job.delete",
      description: "deletes an installed job: cancels its trigger, kills its run, drops its runs",
      args: JobDeleteArgs,
      run(ctx, args) {
        control.delete(args.id, ctx.job.createdBy);
        return Promise.resolve({ error: null, data: { deleted: args.id } });
      },
    }),
    defineCommand({
      key: "job.runs",
      description: "lists the newest finished runs of an installed job",
      args: JobRunsArgs,
      run(ctx, args) {
        ctx.emitData({ runs: control.runs(args.id, args.limit) });
        return Promise.resolve({ error: null });
      },
    }),
  ] as Command[];
}
