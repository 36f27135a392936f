/**
 * Test helper: commands whose runs the test controls. `test.tick` emits one line naming its
 * run and finishes; `test.block` runs until the test releases it (or it is aborted).
 *
 * @module
 */
import { z } from "zod";
import { toJwError } from "../shared/errors.ts";
import { type Command, defineCommand, type RunResult } from "./payload/commands.ts";

/** `test.tick`: emits `tick <run id>` on stdout and ends without error. */
export const tickCommand: Command = defineCommand({
  key: "test.tick",
  description: "emits one line and finishes",
  args: z.object({}).strict(),
  run(ctx) {
    ctx.emitText("stdout", `tick ${ctx.job.run}`);
    return Promise.resolve({ error: null });
  },
}) as Command;

/** A run of `test.block` in progress. */
export interface BlockedRun {
  /** The run id. */
  run: string;
  /** The job id. */
  job: string;
  /** Ends the run without error. */
  release(): void;
  /** Set when the run was aborted (the abort reason's message). */
  aborted?: string;
}

/** `test.block` plus the runs going now, oldest first. */
export interface BlockCommand {
  command: Command;
  /** Runs started and not yet ended. */
  readonly running: BlockedRun[];
  /** Every run started, in order. */
  readonly started: BlockedRun[];
}

/** Creates `test.block`: each run waits for `release()` or for its abort signal. */
export function blockCommand(): BlockCommand {
  const running: BlockedRun[] = [];
  const started: BlockedRun[] = [];
  const command = defineCommand({
    key: "test.block",
    description: "runs until the test releases it",
    args: z.object({}).strict(),
    run(ctx) {
      return new Promise<RunResult>((resolve) => {
        const entry: BlockedRun = {
          run: ctx.job.run,
          job: ctx.job.id,
          release: () => finish({ error: null }),
        };
        const finish = (result: RunResult) => {
          const i = running.indexOf(entry);
          if (i >= 0) running.splice(i, 1);
          ctx.signal.removeEventListener("abort", onAbort);
          resolve(result);
        };
        const onAbort = () => {
          const e = toJwError(ctx.signal.reason);
          entry.aborted = e.message;
          finish({ error: { code: e.code, message: e.message } });
        };
        ctx.signal.addEventListener("abort", onAbort, { once: true });
        running.push(entry);
        started.push(entry);
        ctx.emitText("stdout", `started ${ctx.job.run}`);
      });
    },
  }) as Command;
  return { command, running, started };
}

/** Lets promise chains settle (microtasks only; no time passes) until `cond` holds. */
export async function until(cond: () => boolean, what: string): Promise<void> {
  for (let i = 0; i < 10_000; i++) {
    if (cond()) return;
    await Promise.resolve();
  }
  throw new Error(`still waiting for ${what}`);
}
