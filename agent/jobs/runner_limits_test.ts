import assert from "node:assert/strict";
import { FakeClock } from "../../shared/clock.ts";
import type { JobSpec, Output, Reply } from "../../shared/protocol/mod.ts";
import { openAgentDatabase } from "../db.ts";
import { FakeExecutor } from "../_fake_executor.ts";
import { jobHarness, type JobHarnessOptions } from "../_job_harness.ts";
import { blockCommand, tickCommand, until } from "../_test_commands.ts";
import type { JobSummary } from "./job.ts";
import { DEFAULT_MAX_JOBS, DEFAULT_MAX_RUNNING } from "./runner.ts";

const T0 = Date.UTC(2026, 0, 1);
const MIN = 60_000;

function harness(over: Partial<JobHarnessOptions> = {}) {
  return jobHarness({
    executor: new FakeExecutor((p) => p.exit(0)),
    clock: new FakeClock(T0),
    ...over,
  });
}

function only(frames: Reply[]): Output {
  assert.equal(frames.length, 1, JSON.stringify(frames));
  return frames[0] as Output;
}

function every(id: string, key = "test.tick", over: Partial<JobSpec> = {}): JobSpec {
  return { id, key, args: {}, schedule: { trigger: "interval", every: "1m" }, ...over };
}

Deno.test("JobRunner limits default to 1000 jobs and 64 runs", () => {
  assert.equal(DEFAULT_MAX_JOBS, 1000);
  assert.equal(DEFAULT_MAX_RUNNING, 64);
});

Deno.test("JobRunner refuses installing a new id beyond maxJobs with forbidden", async () => {
  await using h = harness({ maxJobs: 2, commands: [tickCommand] });
  for (const id of ["a", "b"]) {
    assert.equal(only(await h.run({ id: `env-${id}`, job: every(id) })).error, null);
  }
  const refused = only(
    await h.run({ id: "env-c", job: every("c", "test.tick", { persistent: true }) }),
  );
  assert.equal(refused.error?.code, "forbidden");
  assert.match(refused.error!.message, /already has 2 jobs installed \(jobs\.max\)/);
  assert.equal(h.runner.list().length, 2);
  const rows = h.db.prepare("SELECT COUNT(*) AS n FROM jobs").get() as { n: number };
  assert.equal(rows.n, 0, "nothing stored");
  const denied = h.audit.list({ action: "command.denied" })[0];
  assert.match(denied.reason ?? "", /^forbidden: .*jobs\.max/);

  const replaced = only(await h.run({ id: "env-a2", job: every("a") }));
  assert.equal(replaced.error, null, "replacing an installed id is not a new job");
  const now = await h.run({ id: "env-now", job: { key: "test.tick", args: {} } });
  assert.equal((now.at(-1) as Output).error, null, "a run now is not an installed job");
  await h.call("job.delete", { id: "b" });
  assert.equal(only(await h.run({ id: "env-c2", job: every("c") })).error, null);
});

Deno.test("JobRunner keeps stored jobs beyond maxJobs blocked at start", async () => {
  const db = openAgentDatabase(":memory:");
  try {
    const clock = new FakeClock(T0);
    {
      await using h = harness({ clock, db, commands: [tickCommand] });
      for (const id of ["a", "b", "c"]) {
        await h.run({ id: `env-${id}`, job: every(id, "test.tick", { persistent: true }) });
      }
    }
    await using again = harness({ clock, db, maxJobs: 2, commands: [tickCommand] });
    const jobs = (await again.call("job.list")).jobs as JobSummary[];
    assert.deepEqual(jobs.map((j) => [j.id, j.blocked?.code ?? null, j.next]), [
      ["a", null, T0 + MIN],
      ["b", null, T0 + MIN],
      ["c", "forbidden", null],
    ]);
    assert.match(jobs[2].blocked!.message, /jobs\.max/);
    await clock.advance(MIN);
    await until(() => again.doneRuns("b").length === 1, "b runs");
    assert.equal(again.doneRuns("c").length, 0);
    const refused = only(await again.run({ id: "env-d", job: every("d") }));
    assert.equal(refused.error?.code, "forbidden", "blocked jobs count toward jobs.max");
  } finally {
    db.close();
  }
});

Deno.test("JobRunner skips due runs beyond maxRunning and counts them", async () => {
  const clock = new FakeClock(T0);
  const block = blockCommand();
  await using h = harness({ clock, maxRunning: 2, commands: [block.command] });
  await h.run({ id: "env-p", job: every("p", "test.block", { overlap: "allow" }) });
  await h.run({ id: "env-q", job: every("q", "test.block") });
  await clock.advance(MIN);
  assert.equal(block.running.length, 2);
  await clock.advance(2 * MIN);
  assert.equal(block.running.length, 2, "never more than maxRunning");
  assert.equal(h.runner.running, 2);
  const jobs = (await h.call("job.list")).jobs as JobSummary[];
  assert.deepEqual(jobs.map((j) => [j.id, j.skipped]), [["p", 2], ["q", 2]]);
  block.running[0].release();
  await until(() => h.runner.running === 1, "one run left");
  await clock.advance(MIN);
  assert.equal(block.running.length, 2, "a run starts again below the limit");
  for (const r of [...block.running]) r.release();
  await until(() => h.runner.running === 0, "no runs");
});

Deno.test("JobRunner refuses a run now beyond maxRunning with forbidden, but never job.*", async () => {
  const clock = new FakeClock(T0);
  const block = blockCommand();
  await using h = harness({ clock, maxRunning: 1, commands: [block.command] });
  const first = h.run({ id: "env-1", job: { key: "test.block", args: {} } });
  await until(() => block.running.length === 1, "the first run");
  const refused = only(await h.run({ id: "env-2", job: { key: "test.block", args: {} } }));
  assert.equal(refused.error?.code, "forbidden");
  assert.match(refused.error!.message, /already has 1 runs going \(jobs\.maxRunning\)/);
  assert.equal(block.started.length, 1);
  const denied = h.audit.list({ action: "command.denied" })[0];
  assert.equal(denied.actor, "server:s1");
  assert.match(denied.reason ?? "", /^forbidden: .*jobs\.maxRunning/);
  assert.deepEqual(await h.call("job.list"), { jobs: [] }, "job.* still answers");
  block.running[0].release();
  await first;
  const again = h.run({ id: "env-3", job: { key: "test.block", args: {} } });
  await until(() => block.running.length === 1, "a run below the limit");
  block.running[0].release();
  assert.equal((await again).at(-1)?.type, "output");
});

Deno.test("JobRunner.close() runs onStop jobs though the runs it kills filled maxRunning", async () => {
  const clock = new FakeClock(T0);
  const block = blockCommand();
  const h = harness({ clock, maxRunning: 1, commands: [block.command, tickCommand] });
  await h.run({ id: "env-b", job: every("busy", "test.block") });
  await h.run({
    id: "env-s",
    job: { id: "bye", key: "test.tick", args: {}, schedule: { trigger: "onStop" } },
  });
  await clock.advance(MIN);
  assert.equal(block.running.length, 1);
  await h[Symbol.asyncDispose]();
  assert.equal(h.doneRuns("bye").length, 1);
  assert.equal(h.doneRuns("bye")[0].error, null);
});

Deno.test("JobRunner refuses the reserved job id agent with invalid_args", async (t) => {
  const cases: [string, JobSpec][] = [
    ["install", every("agent")],
    ["persistent install", every("agent", "test.tick", { persistent: true })],
    ["run now", { id: "agent", key: "test.tick", args: {} }],
  ];
  for (const [name, job] of cases) {
    await t.step(name, async () => {
      const executor = new FakeExecutor((p) => p.exit(0));
      await using h = harness({ executor, commands: [tickCommand] });
      const done = only(await h.run({ id: "env-r", job }));
      assert.equal(done.error?.code, "invalid_args");
      assert.match(done.error!.message, /job id "agent" is reserved/);
      assert.deepEqual(h.runner.list(), []);
      assert.equal(h.frames.length, 1, "nothing ran");
      assert.equal(h.audit.list({ action: "command.denied" }).length, 1);
    });
  }
  await t.step("a stored job with the id is kept blocked", async () => {
    const db = openAgentDatabase(":memory:");
    try {
      db.prepare(
        `INSERT INTO jobs (id, key, args, meta, trigger, overlap, created_at, created_by,
          envelope_id) VALUES ('agent', 'test.tick', '{}', NULL, ?, 'skip', 0, 's1', 'e1')`,
      ).run(JSON.stringify({ trigger: "interval", every: "1m" }));
      const clock = new FakeClock(T0);
      await using h = harness({ clock, db, commands: [tickCommand] });
      await clock.advance(5 * MIN);
      assert.equal(h.doneRuns("agent").length, 0);
      const [job] = (await h.call("job.list")).jobs as JobSummary[];
      assert.equal(job.blocked?.code, "invalid_args");
      await h.call("job.delete", { id: "agent" });
      assert.deepEqual(h.runner.list(), []);
    } finally {
      db.close();
    }
  });
});
