import assert from "node:assert/strict";
import { FakeClock } from "../../shared/clock.ts";
import type { Output, Reply } from "../../shared/protocol/mod.ts";
import { Output as OutputSchema } from "../../shared/protocol/mod.ts";
import { FakeExecutor } from "../_fake_executor.ts";
import { jobHarness } from "../_job_harness.ts";
import { blockCommand, tickCommand, until } from "../_test_commands.ts";

const T0 = Date.UTC(2026, 0, 1);

function done(frames: Reply[]): Output {
  const last = frames.at(-1) as Output;
  assert.equal(last.done, true);
  return last;
}

Deno.test("job.list reports each installed job with its trigger, next and last run", async () => {
  const clock = new FakeClock(T0);
  const block = blockCommand();
  await using h = jobHarness({
    executor: new FakeExecutor(),
    clock,
    commands: [tickCommand, block.command],
  });
  const empty = await h.run({ id: "l0", job: { key: "job.list", args: {} } });
  assert.deepEqual(empty.map((f) => f.type === "output" && (f.data ?? null)), [{ jobs: [] }, null]);

  await h.run({
    id: "i1",
    meta: { who: "ops" },
    job: {
      id: "tick",
      key: "test.tick",
      args: {},
      schedule: { trigger: "cron", cron: "*/5 * * * *", tz: "UTC" },
      persistent: true,
    },
  });
  await h.run({
    id: "i2",
    job: {
      id: "slow",
      key: "test.block",
      args: {},
      schedule: { trigger: "interval", every: "1m" },
      overlap: "allow",
    },
  });
  await h.run({
    id: "i3",
    job: { id: "hello", key: "test.tick", args: {}, schedule: { trigger: "onConnect" } },
  });
  await clock.advance(5 * 60_000);
  await until(() => h.doneRuns("tick").length === 1, "a tick");
  const tick = h.doneRuns("tick")[0];

  const frames = await h.run({ id: "l1", job: { key: "job.list", args: {} } });
  assert.equal(frames.length, 2);
  assert.ok(frames.every((f) => OutputSchema.safeParse(f).success));
  assert.equal(done(frames).error, null);
  const { jobs } = (frames[0] as Output).data as { jobs: unknown[] };
  assert.deepEqual(jobs, [
    {
      id: "tick",
      key: "test.tick",
      trigger: { trigger: "cron", cron: "*/5 * * * *", tz: "UTC" },
      persistent: true,
      overlap: "skip",
      createdAt: T0,
      next: T0 + 10 * 60_000,
      running: false,
      skipped: 0,
      last: {
        run: tick.run,
        start: T0 + 5 * 60_000,
        finish: T0 + 5 * 60_000,
        durationMs: 0,
        exitCode: null,
        error: null,
      },
    },
    {
      id: "slow",
      key: "test.block",
      trigger: { trigger: "interval", every: "1m" },
      persistent: false,
      overlap: "allow",
      createdAt: T0,
      next: T0 + 6 * 60_000,
      running: true,
      skipped: 0,
      last: null,
    },
    {
      id: "hello",
      key: "test.tick",
      trigger: { trigger: "onConnect" },
      persistent: false,
      overlap: "skip",
      createdAt: T0,
      next: null,
      running: false,
      skipped: 0,
      last: null,
    },
  ]);
  for (const r of [...block.running]) r.release();
});

Deno.test("job.delete cancels the trigger, kills the running run and drops the job's runs", async () => {
  const clock = new FakeClock(T0);
  const block = blockCommand();
  await using h = jobHarness({ executor: new FakeExecutor(), clock, commands: [block.command] });
  await h.run({
    id: "i",
    job: {
      id: "slow",
      key: "test.block",
      args: {},
      schedule: { trigger: "interval", every: "1m" },
      persistent: true,
    },
  });
  await clock.advance(60_000);
  block.running[0].release();
  await clock.advance(60_000);
  assert.equal(block.running.length, 1);
  assert.equal(clock.pending, 1);

  const frames = await h.run({ id: "d", job: { key: "job.delete", args: { id: "slow" } } });
  assert.equal(frames.length, 1);
  assert.equal(done(frames).error, null);
  assert.deepEqual(done(frames).data, { deleted: "slow" });
  assert.equal(block.started[1].aborted, "killed because the job was deleted");
  await until(() => h.doneRuns("slow").length === 2, "the killed run's done");
  assert.deepEqual(h.doneRuns("slow")[1].error, {
    code: "closed",
    message: "killed because the job was deleted",
  });
  assert.equal(clock.pending, 0, "trigger cancelled");
  await clock.advance(10 * 60_000);
  assert.equal(block.started.length, 2);
  for (const table of ["jobs", "runs"]) {
    const row = h.db.prepare(`SELECT COUNT(*) AS n FROM ${table}`).get() as { n: number };
    assert.equal(row.n, 0, `${table} is empty`);
  }
  assert.deepEqual(h.runner.list(), []);
  const deleted = h.audit.list({ action: "job.deleted" })[0];
  assert.equal(deleted.actor, "server:s1");
  assert.equal(deleted.key, "test.block");
});

Deno.test("job.delete and job.runs answer not_found for an unknown id", async (t) => {
  await using h = jobHarness({ executor: new FakeExecutor(), commands: [tickCommand] });
  for (const key of ["job.delete", "job.runs"]) {
    await t.step(key, async () => {
      const frames = await h.run({ id: `nf-${key}`, job: { key, args: { id: "ghost" } } });
      assert.equal(frames.length, 1);
      assert.deepEqual(done(frames).error, {
        code: "not_found",
        message: 'no job "ghost" on this agent',
        detail: { id: "ghost" },
      });
    });
  }
  await t.step("a job run now is not installed", async () => {
    await h.run({ id: "now", job: { id: "once", key: "test.tick", args: {} } });
    const frames = await h.run({ id: "nf2", job: { key: "job.runs", args: { id: "once" } } });
    assert.equal(done(frames).error?.code, "not_found");
  });
});

Deno.test("job.runs lists the newest runs first, up to limit", async (t) => {
  const clock = new FakeClock(T0);
  await using h = jobHarness({ executor: new FakeExecutor(), clock, commands: [tickCommand] });
  await h.run({
    id: "i",
    job: { id: "t", key: "test.tick", args: {}, schedule: { trigger: "interval", every: "1s" } },
  });
  await clock.advance(5000);
  await until(() => h.doneRuns("t").length === 5, "five runs");
  const runIds = h.doneRuns("t").map((f) => f.run);
  const runs = async (args: Record<string, unknown>) =>
    ((await h.call("job.runs", args)).runs as { run: string }[]).map((r) => r.run);
  assert.deepEqual(await runs({ id: "t" }), runIds.toReversed());
  assert.deepEqual(await runs({ id: "t", limit: 2 }), runIds.toReversed().slice(0, 2));
  for (const limit of [0, 1001, 2.5, "5"]) {
    await t.step(`limit ${JSON.stringify(limit)} is refused`, async () => {
      const frames = await h.run({ id: "bad", job: { key: "job.runs", args: { id: "t", limit } } });
      assert.equal(done(frames).error?.code, "invalid_args");
      assert.match(done(frames).error!.message, /limit/);
    });
  }
});

Deno.test("the ACL applies to job.* like any command", async () => {
  await using h = jobHarness({ executor: new FakeExecutor(), allowCommands: ["exec.run"] });
  for (const key of ["job.list", "job.delete", "job.runs"]) {
    const frames = await h.run({ id: key, job: { key, args: { id: "x" } } });
    assert.equal(done(frames).error?.code, "forbidden");
    assert.match(
      done(frames).error!.message,
      new RegExp(`${key.replace(".", "\\.")}.*allowCommands`),
    );
  }
  await using jobsOnly = jobHarness({ executor: new FakeExecutor(), allowCommands: ["job.*"] });
  assert.deepEqual(await jobsOnly.call("job.list"), { jobs: [] });
});
