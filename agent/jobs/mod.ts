/**
 * Jobs: the model, the reply frames of a run, and the runner.
 *
 * @module
 */
export { type DoneFields, type Job, jobFromCommand, Replies } from "./job.ts";
export {
  type AuditSink,
  createJobRunner,
  type JobRunner,
  type JobRunnerOptions,
} from "./runner.ts";
