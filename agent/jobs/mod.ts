/**
 * Jobs: the model, triggers, the scheduler, the store (jobs and run history in sqlite), one
 * run's replies, and the runner that ties them together.
 *
 * @module
 */
export {
  type DoneFields,
  isInstalled,
  type Job,
  type JobBlock,
  jobFromCommand,
  type JobSummary,
  Replies,
  type RunRecord,
  type UnreadableJobSummary,
} from "./job.ts";
export {
  type AuditSink,
  createJobRunner,
  DEFAULT_MAX_JOBS,
  DEFAULT_MAX_RUNNING,
  DEFAULT_STOP_TIMEOUT_MS,
  type JobRunner,
  type JobRunnerOptions,
  RESERVED_JOB_ID,
} from "./runner.ts";
export { DENIAL_CODES, executeRun, type RunDeps, type RunOutcome } from "./run.ts";
export {
  createScheduler,
  MAX_TIMER_MS,
  type Scheduler,
  type SchedulerOptions,
} from "./scheduler.ts";
export {
  createJobStore,
  createMemoryRunHistory,
  jobsMigration,
  type JobStore,
  type RunHistory,
  type StoredJobs,
  type UnreadableJob,
} from "./store.ts";
export {
  type CompiledTrigger,
  compileTrigger,
  cronTrigger,
  type EventTrigger,
  intervalTrigger,
  MIN_INTERVAL_MS,
  type TimeTrigger,
} from "./triggers.ts";
