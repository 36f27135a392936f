import assert from "node:assert/strict";
import { FakeClock } from "../../shared/clock.ts";
import { digestJson } from "../../shared/crypto/mod.ts";
import { toJwError } from "../../shared/errors.ts";
import { Log as LogSchema, Output as OutputSchema } from "../../shared/protocol/mod.ts";
import type { JobSpec, Output, Reply } from "../../shared/protocol/mod.ts";
import { z } from "zod";
import { openAgentDatabase } from "../db.ts";
import { type Command, defineCommand } from "../payload/commands.ts";
import { FakeExecutor } from "../_fake_executor.ts";
import { jobHarness, type JobHarnessOptions } from "../_job_harness.ts";
import { blockCommand, tickCommand, until } from "../_test_commands.ts";
import type { JobSummary, RunRecord } from "./job.ts";

const T0 = Date.UTC(2026, 0, 1);
const MIN = 60_000;

function harness(over: Partial<JobHarnessOptions> = {}) {
  return jobHarness({ executor: new FakeExecutor((p) => p.out("hi").exit(0)), ...over });
}

function install(
  h: ReturnType<typeof harness>,
  id: string,
  job: JobSpec,
  meta?: Record<string, unknown>,
): Promise<Reply[]> {
  return h.run({ id, job, ...(meta ? { meta } : {}) });
}

/** The run id of a reply (setTag frames have none). */
function runOf(f: Reply): string | undefined {
  return f.type === "setTag" ? undefined : f.run;
}

function only(frames: Reply[]): Output {
  assert.equal(frames.length, 1, JSON.stringify(frames));
  const [done] = frames;
  assert.equal(done.type, "output");
  assert.equal(done.type === "output" && done.done, true);
  return done as Output;
}

async function list(h: ReturnType<typeof harness>): Promise<JobSummary[]> {
  return (await h.call("job.list")).jobs as JobSummary[];
}

Deno.test("JobRunner answers an install at once, then runs the job on its interval for hours", async () => {
  const clock = new FakeClock(T0);
  await using h = harness({ clock, commands: [tickCommand] });
  const meta = { reply: { to: "ops" }, n: [1, 2] };
  const spec: JobSpec = {
    id: "tick",
    key: "test.tick",
    args: {},
    schedule: { trigger: "interval", every: "20m" },
  };
  const answer = only(await install(h, "env-i", spec, meta));
  assert.deepEqual(answer, {
    v: 1,
    id: "env-i",
    meta,
    job: { id: "tick", key: "test.tick" },
    seq: 0,
    ts: T0,
    type: "output",
    done: true,
    start: T0,
    finish: T0,
    durationMs: 0,
    error: null,
    data: {
      installed: {
        id: "tick",
        key: "test.tick",
        trigger: { trigger: "interval", every: "20m" },
        persistent: false,
        next: T0 + 20 * MIN,
        replaced: false,
      },
    },
  });
  assert.ok(OutputSchema.safeParse(answer).success);

  await clock.advance(3 * 60 * MIN);
  const runs = h.frames.filter((f) => runOf(f) !== undefined);
  const ids = [...new Set(runs.map(runOf))];
  assert.equal(ids.length, 9, "one run every 20 minutes for 3 hours");
  for (const run of ids) {
    assert.match(run!, /^r-[A-Za-z0-9_-]{16}$/);
    const frames = runs.filter((f) => runOf(f) === run);
    assert.deepEqual(frames.map((f) => f.seq), [0, 1]);
    for (const f of frames) {
      assert.equal(f.id, "env-i");
      assert.deepEqual(f.meta, meta);
      assert.deepEqual(f.job, { id: "tick", key: "test.tick" });
      assert.ok(OutputSchema.safeParse(f).success, JSON.stringify(f));
    }
    assert.equal(frames[0].type === "output" && frames[0].text, `tick ${run}`);
  }
  assert.deepEqual(
    h.doneRuns("tick").map((f) => f.start! - T0),
    Array.from({ length: 9 }, (_, i) => (i + 1) * 20 * MIN),
  );
  const [summary] = await list(h);
  assert.equal(summary.next, T0 + 200 * MIN);
  assert.equal(summary.last?.run, ids.at(-1));
});

Deno.test("JobRunner runs a cron job at the exact times across the New York DST change", async () => {
  const clock = new FakeClock(Date.UTC(2026, 2, 7, 12));
  await using h = harness({ clock, commands: [tickCommand] });
  const answer = only(
    await install(h, "env-c", {
      id: "nightly",
      key: "test.tick",
      args: {},
      schedule: { trigger: "cron", cron: "30 1 * * *", tz: "America/New_York" },
    }),
  );
  assert.equal(
    (answer.data!.installed as { next: number }).next,
    Date.UTC(2026, 2, 8, 6, 30),
  );
  await clock.advance(3 * 24 * 60 * MIN);
  assert.deepEqual(h.doneRuns("nightly").map((f) => new Date(f.start!).toISOString()), [
    "2026-03-08T06:30:00.000Z",
    "2026-03-09T05:30:00.000Z",
    "2026-03-10T05:30:00.000Z",
  ]);
});

Deno.test("JobRunner overlap skip: a due run is skipped while the previous one is going", async () => {
  const clock = new FakeClock(T0);
  const block = blockCommand();
  await using h = harness({ clock, commands: [block.command] });
  await install(h, "env-s", {
    id: "slow",
    key: "test.block",
    args: {},
    schedule: { trigger: "interval", every: "1m" },
  });
  await clock.advance(MIN);
  assert.equal(block.running.length, 1);
  await clock.advance(3 * MIN);
  assert.equal(block.started.length, 1, "three due times skipped");
  let [summary] = await list(h);
  assert.equal(summary.running, true);
  assert.equal(summary.skipped, 3);
  assert.equal(summary.overlap, "skip");
  block.running[0].release();
  await until(() => h.doneRuns("slow").length === 1, "the first run's done");
  await clock.advance(MIN);
  assert.equal(block.started.length, 2, "the next due time runs again");
  [summary] = await list(h);
  assert.equal(summary.last?.run, block.started[0].run);
  block.running[0].release();
  await until(() => h.runner.running === 0, "no runs");
});

Deno.test("JobRunner overlap allow: due runs start while earlier ones are going", async () => {
  const clock = new FakeClock(T0);
  const block = blockCommand();
  await using h = harness({ clock, commands: [block.command] });
  await install(h, "env-a", {
    id: "par",
    key: "test.block",
    args: {},
    schedule: { trigger: "interval", every: "1m" },
    overlap: "allow",
  });
  await clock.advance(4 * MIN);
  assert.equal(block.running.length, 4);
  assert.equal(h.runner.running, 4);
  assert.equal(new Set(block.running.map((r) => r.run)).size, 4, "each run has its own id");
  for (const r of [...block.running]) r.release();
  await until(() => h.doneRuns("par").length === 4, "four done outputs");
  const [summary] = await list(h);
  assert.equal(summary.skipped, 0);
});

Deno.test("JobRunner keeps the newest keepRuns runs of a job and prunes older ones", async (t) => {
  for (const persistent of [true, false]) {
    await t.step(persistent ? "persistent (sqlite)" : "in memory", async () => {
      const clock = new FakeClock(T0);
      await using h = harness({ clock, commands: [tickCommand], keepRuns: 3 });
      await install(h, "env-p", {
        id: "p",
        key: "test.tick",
        args: {},
        schedule: { trigger: "interval", every: "1s" },
        persistent,
      });
      await clock.advance(10_000);
      await until(() => h.doneRuns("p").length === 10, "ten runs");
      const { runs } = await h.call("job.runs", { id: "p" }) as { runs: RunRecord[] };
      const expected = h.doneRuns("p").slice(-3).reverse();
      assert.deepEqual(
        runs,
        expected.map((f) => ({
          run: f.run,
          start: f.start,
          finish: f.finish,
          durationMs: 0,
          exitCode: null,
          error: null,
        })),
      );
      const rows = h.db.prepare("SELECT COUNT(*) AS n FROM runs").get() as { n: number };
      assert.equal(rows.n, persistent ? 3 : 0);
    });
  }
});

Deno.test("JobRunner reloads persistent jobs on the same database and runs them again", async () => {
  const db = openAgentDatabase(":memory:");
  try {
    const meta = { ticket: "OPS-1" };
    const clock = new FakeClock(T0);
    {
      await using h = harness({
        clock,
        db,
        executor: new FakeExecutor((p) => p.exit(0)),
        allowRun: ["/bin/echo"],
      });
      await install(h, "env-keep", {
        id: "keep",
        key: "exec.run",
        args: { cmd: "/bin/echo" },
        schedule: { trigger: "interval", every: "5m" },
        persistent: true,
      }, meta);
      await install(h, "env-mem", {
        id: "mem",
        key: "exec.run",
        args: { cmd: "/bin/echo" },
        schedule: { trigger: "interval", every: "5m" },
      });
      await clock.advance(5 * MIN);
      await until(() => h.doneRuns("keep").length === 1, "the first run");
    }
    assert.equal(clock.pending, 0, "closing the runner cleared its timers");

    await clock.advance(60 * MIN);
    const executor = new FakeExecutor((p) => p.exit(0));
    await using again = harness({ clock, db, executor, allowRun: ["/bin/echo"] });
    const jobs = await list(again);
    assert.deepEqual(jobs.map((j) => [j.id, j.persistent, j.next]), [
      ["keep", true, clock.now() + 5 * MIN],
    ]);
    assert.equal(jobs[0].last?.exitCode, 0, "the run history survived");
    await clock.advance(5 * MIN);
    await until(() => again.doneRuns("keep").length === 1, "a run after the restart");
    const [done] = again.doneRuns("keep");
    assert.equal(done.id, "env-keep");
    assert.deepEqual(done.meta, meta);
    assert.equal(done.exitCode, 0);
    assert.equal(executor.spawned.length, 1);
    const { runs } = await again.call("job.runs", { id: "keep" }) as { runs: RunRecord[] };
    assert.equal(runs.length, 2);
  } finally {
    db.close();
  }
});

Deno.test("JobRunner replaces a job installed again under the same id", async () => {
  const clock = new FakeClock(T0);
  await using h = harness({ clock, commands: [tickCommand] });
  await install(h, "env-1", {
    id: "x",
    key: "test.tick",
    args: {},
    schedule: { trigger: "interval", every: "1m" },
    persistent: true,
  });
  const answer = only(
    await install(h, "env-2", {
      id: "x",
      key: "test.tick",
      args: {},
      schedule: { trigger: "interval", every: "10m" },
      persistent: true,
    }, { v: 2 }),
  );
  assert.equal((answer.data!.installed as { replaced: boolean }).replaced, true);
  assert.equal(clock.pending, 1, "the old timer is gone");
  await clock.advance(9 * MIN);
  assert.equal(h.doneRuns("x").length, 0, "the old 1m trigger was cancelled");
  await clock.advance(MIN);
  const runs = h.doneRuns("x");
  assert.equal(runs.length, 1);
  assert.equal(runs[0].id, "env-2");
  assert.deepEqual(runs[0].meta, { v: 2 });
  const stored = h.db.prepare("SELECT id, envelope_id FROM jobs").all().map((r) => ({ ...r }));
  assert.deepEqual(stored, [{ id: "x", envelope_id: "env-2" }]);
  const actions = h.audit.list().map((e) => e.action).reverse();
  assert.deepEqual(actions.filter((a) => a.startsWith("job.")), ["job.installed", "job.replaced"]);
});

Deno.test("JobRunner fires onStart, onConnect, onDisconnect and onStop jobs once each at their moment", async () => {
  const db = openAgentDatabase(":memory:");
  try {
    const clock = new FakeClock(T0);
    const events = ["onStart", "onConnect", "onDisconnect", "onStop"] as const;
    {
      await using h = harness({ clock, db, commands: [tickCommand] });
      for (const e of events) {
        const answer = only(
          await install(h, `env-${e}`, {
            id: e,
            key: "test.tick",
            args: {},
            schedule: { trigger: e },
            persistent: true,
          }),
        );
        assert.equal((answer.data!.installed as { next: unknown }).next, null);
      }
      assert.equal(h.frames.filter(runOf).length, 0, "installing runs nothing");
    }
    const h = harness({ clock, db, commands: [tickCommand], start: false });
    const ran = () => events.map((e) => h.doneRuns(e).length);
    assert.deepEqual(ran(), [0, 0, 0, 0]);
    h.runner.start();
    h.runner.start();
    await until(() => ran()[0] === 1, "onStart");
    assert.deepEqual(ran(), [1, 0, 0, 0]);
    h.runner.connected();
    await until(() => ran()[1] === 1, "onConnect");
    assert.deepEqual(ran(), [1, 1, 0, 0]);
    h.runner.disconnected();
    await until(() => ran()[2] === 1, "onDisconnect");
    assert.deepEqual(ran(), [1, 1, 1, 0]);
    await h[Symbol.asyncDispose]();
    assert.deepEqual(ran(), [1, 1, 1, 1]);
    const stop = h.doneRuns("onStop")[0];
    assert.equal(stop.error, null);
    assert.equal(stop.id, "env-onStop");
    h.runner.connected();
    h.runner.disconnected();
    assert.deepEqual(ran(), [1, 1, 1, 1], "nothing fires after close");
  } finally {
    db.close();
  }
});

Deno.test("JobRunner fires onConnect and onDisconnect on every connect and disconnect", async () => {
  const clock = new FakeClock(T0);
  await using h = harness({ clock, commands: [tickCommand] });
  for (const e of ["onConnect", "onDisconnect"] as const) {
    await install(h, `env-${e}`, { id: e, key: "test.tick", args: {}, schedule: { trigger: e } });
  }
  for (let i = 1; i <= 3; i++) {
    h.runner.connected();
    await until(() => h.doneRuns("onConnect").length === i, `connect run ${i}`);
    h.runner.disconnected();
    await until(() => h.doneRuns("onDisconnect").length === i, `disconnect run ${i}`);
  }
  assert.equal(h.doneRuns("onConnect").length, 3);
});

Deno.test("JobRunner.close() waits for onStop runs at most stopTimeoutMs, then kills them", async () => {
  const clock = new FakeClock(T0);
  const block = blockCommand();
  const h = harness({ clock, commands: [block.command] });
  await install(h, "env-stop", {
    id: "bye",
    key: "test.block",
    args: {},
    schedule: { trigger: "onStop" },
  });
  await install(h, "env-busy", {
    id: "busy",
    key: "test.block",
    args: {},
    schedule: { trigger: "interval", every: "1m" },
  });
  await clock.advance(MIN);
  assert.equal(block.running.length, 1);
  let closed = false;
  const closing = h[Symbol.asyncDispose]().then(() => (closed = true));
  await until(() => block.started.length === 2, "the onStop run");
  assert.equal(block.started[0].aborted, "killed because the agent is stopping");
  await clock.advance(4999);
  assert.equal(closed, false, "still waiting for the onStop run");
  await clock.advance(1);
  await closing;
  assert.equal(block.started[1].aborted, "killed: onStop jobs may take at most 5000ms");
  const [done] = h.doneRuns("bye");
  assert.equal(done.error?.code, "closed");
  assert.equal(clock.pending, 0);
});

Deno.test("JobRunner refuses bad installs before any job is created or stored", async (t) => {
  const cases: [string, JobSpec, string, RegExp, string[]?][] = [
    [
      "forbidden key",
      {
        key: "exec.run",
        args: { cmd: "/bin/echo" },
        schedule: { trigger: "interval", every: "1m" },
      },
      "forbidden",
      /exec\.run is not allowed.*allowCommands/,
      ["tags.set"],
    ],
    [
      "unknown key",
      { key: "nope.run", args: {}, schedule: { trigger: "interval", every: "1m" } },
      "unknown_command",
      /nope\.run/,
    ],
    [
      "bad args",
      { key: "exec.run", args: { cmd: 1 }, schedule: { trigger: "interval", every: "1m" } },
      "invalid_args",
      /cmd/,
    ],
    [
      "bad cron",
      { key: "test.tick", args: {}, schedule: { trigger: "cron", cron: "61 * * * *" } },
      "invalid_args",
      /bad cron expression "61 \* \* \* \*": CronPattern: .*minute/,
    ],
    [
      "bad time zone",
      { key: "test.tick", args: {}, schedule: { trigger: "cron", cron: "* * * * *", tz: "X/Y" } },
      "invalid_args",
      /unknown time zone "X\/Y"/,
    ],
    [
      "zero interval",
      { key: "test.tick", args: {}, schedule: { trigger: "interval", every: "0s" } },
      "invalid_args",
      /at least 1s/,
    ],
    [
      "negative interval",
      { key: "test.tick", args: {}, schedule: { trigger: "interval", every: "-5s" } },
      "invalid_args",
      /bad interval "-5s"/,
    ],
    [
      "interval that is not a duration",
      {
        key: "test.tick",
        args: {},
        schedule: { trigger: "interval", every: "soon" },
        persistent: true,
      },
      "invalid_args",
      /bad interval "soon"/,
    ],
    [
      "onStart job that is not persistent",
      { key: "test.tick", args: {}, schedule: { trigger: "onStart" } },
      "invalid_args",
      /persistent: true/,
    ],
  ];
  for (const [name, spec, code, message, allowCommands] of cases) {
    await t.step(name, async () => {
      const clock = new FakeClock(T0);
      const executor = new FakeExecutor((p) => p.exit(0));
      await using h = jobHarness({
        executor,
        clock,
        allowRun: ["/bin/echo"],
        commands: [tickCommand],
        allowCommands,
      });
      const done = only(await install(h, "env-bad", { id: "bad", ...spec }, { m: 1 }));
      assert.equal(done.error?.code, code);
      assert.match(done.error!.message, message);
      assert.deepEqual(done.meta, { m: 1 });
      assert.equal(done.job.id, "bad");
      assert.equal("data" in done, false);
      assert.equal(clock.pending, 0, "nothing armed");
      const rows = h.db.prepare("SELECT COUNT(*) AS n FROM jobs").get() as { n: number };
      assert.equal(rows.n, 0, "nothing stored");
      assert.equal(h.runner.list().length, 0, "nothing installed");
      await clock.advance(3_600_000);
      assert.equal(executor.spawned.length, 0);
      const [denied, received] = h.audit.list();
      assert.equal(received.action, "command.received");
      assert.equal(denied.action, "command.denied");
      assert.match(denied.reason ?? "", new RegExp(`^${code}: `));
    });
  }
});

Deno.test("JobRunner runs a persistent job without a schedule once and keeps it", async () => {
  const db = openAgentDatabase(":memory:");
  try {
    const clock = new FakeClock(T0);
    {
      await using h = harness({ clock, db, commands: [tickCommand] });
      const frames = await install(h, "env-once", {
        id: "once",
        key: "test.tick",
        args: {},
        persistent: true,
      });
      const answer = frames[0] as Output;
      assert.deepEqual(answer.data?.installed, {
        id: "once",
        key: "test.tick",
        trigger: { trigger: "now" },
        persistent: true,
        next: null,
        replaced: false,
      });
      await until(() => h.doneRuns("once").length === 1, "the run");
    }
    await using again = harness({ clock, db, commands: [tickCommand] });
    await clock.advance(3_600_000);
    assert.equal(again.doneRuns("once").length, 0, "not run again at start");
    const [job] = await list(again);
    assert.equal(job.id, "once");
    assert.equal(job.last?.error, null);
  } finally {
    db.close();
  }
});

Deno.test("JobRunner keeps a stored job the ACL now forbids, lists it blocked, never runs it", async () => {
  const db = openAgentDatabase(":memory:");
  try {
    const clock = new FakeClock(T0);
    {
      await using h = harness({ clock, db, commands: [tickCommand] });
      await install(h, "env-f", {
        id: "f",
        key: "test.tick",
        args: {},
        schedule: { trigger: "interval", every: "1m" },
        persistent: true,
      });
    }
    await using again = harness({
      clock,
      db,
      commands: [tickCommand],
      allowCommands: ["job.*"],
    });
    await clock.advance(10 * MIN);
    assert.equal(again.doneRuns("f").length, 0);
    const [job] = await list(again);
    assert.deepEqual([job.id, job.next], ["f", null]);
    assert.deepEqual(job.blocked, {
      code: "forbidden",
      message:
        "command test.tick is not allowed on this agent: it is not on the agent's allowCommands list",
    });
    const denied = again.audit.list({ action: "command.denied" })[0];
    assert.equal(denied.actor, "agent:a1");
    assert.match(denied.reason ?? "", /^forbidden: stored job f: /);
    await again.call("job.delete", { id: "f" });
    assert.equal(again.runner.list().length, 0);
  } finally {
    db.close();
  }
});

Deno.test("RunContext.log sends log frames at every level with the run id", async () => {
  const levels = ["error", "warn", "info", "debug", "trace"] as const;
  const logs = defineCommand({
    key: "test.logs",
    description: "logs at every level",
    args: z.object({}).strict(),
    run(ctx) {
      for (const level of levels) ctx.log(level, `at ${level}`, { level });
      return Promise.resolve({ error: null });
    },
  }) as Command;
  await using h = harness({ clock: new FakeClock(T0), commands: [logs] });
  const frames = await h.run({ id: "env-log", job: { key: "test.logs", args: {} } });
  const logFrames = frames.filter((f) => f.type === "log");
  assert.deepEqual(logFrames.map((f) => f.type === "log" && f.level), [...levels]);
  for (const f of logFrames) {
    assert.ok(LogSchema.safeParse(f).success);
    assert.equal(runOf(f), runOf(frames.at(-1)!));
  }
});

Deno.test("RunContext.emitData refuses a top-level array; arrays inside an object are fine", async () => {
  const emit = defineCommand({
    key: "test.emit",
    description: "emits its value",
    args: z.object({ value: z.unknown() }).strict(),
    run(ctx, args) {
      ctx.emitData(args.value as Record<string, unknown>);
      return Promise.resolve({ error: null });
    },
  }) as Command;
  await using h = harness({ clock: new FakeClock(T0), commands: [emit] });
  const ok = await h.run({ id: "e-ok", job: { key: "test.emit", args: { value: { a: [1, 2] } } } });
  assert.deepEqual(ok.map((f) => f.type === "output" && (f.data ?? null)), [{ a: [1, 2] }, null]);
  assert.equal((ok[1] as Output).error, null);
  for (const value of [[1, 2], null, "text"]) {
    const bad = only(await h.run({ id: "e-bad", job: { key: "test.emit", args: { value } } }));
    assert.deepEqual(bad.error, {
      code: "invalid_args",
      message: "structured output must be an object (arrays are fine inside it)",
    });
    h.frames.length = 0;
  }
});

/**
 * `test.slowstop`: like `test.block`, but an abort only takes effect once the test releases
 * the run (a process slow to die), so the killed run is still going for a while.
 */
function slowStopCommand() {
  const runs: { run: string; aborted?: string; release(): void }[] = [];
  const command = defineCommand({
    key: "test.slowstop",
    description: "ends when released; an abort shows only then",
    args: z.object({}).strict(),
    run(ctx) {
      return new Promise((resolve) => {
        const entry: (typeof runs)[number] = {
          run: ctx.job.run,
          release: () => {
            const reason = ctx.signal.aborted ? toJwError(ctx.signal.reason) : undefined;
            resolve({ error: reason ? { code: reason.code, message: reason.message } : null });
          },
        };
        ctx.signal.addEventListener("abort", () => {
          entry.aborted = toJwError(ctx.signal.reason).message;
        });
        runs.push(entry);
      });
    },
  }) as Command;
  return { command, runs };
}

Deno.test("JobRunner replacing a job kills its running run and keeps it out of the new job's runs", async (t) => {
  for (const persistent of [false, true]) {
    await t.step(persistent ? "persistent" : "in memory", async () => {
      const clock = new FakeClock(T0);
      const block = blockCommand();
      await using h = harness({ clock, commands: [block.command] });
      const spec: JobSpec = {
        id: "x",
        key: "test.block",
        args: {},
        schedule: { trigger: "interval", every: "1m" },
        persistent,
      };
      await install(h, "env-1", spec);
      await clock.advance(MIN);
      assert.equal(block.running.length, 1);
      await install(h, "env-2", spec, { v: 2 });
      assert.equal(block.started[0].aborted, "killed because the job was replaced");
      await until(() => h.doneRuns("x").length === 1, "the killed run's done");
      const [killed] = h.doneRuns("x");
      assert.equal(killed.id, "env-1", "the old run answers with its own envelope");
      assert.deepEqual(killed.error, {
        code: "closed",
        message: "killed because the job was replaced",
      });
      assert.deepEqual(await h.call("job.runs", { id: "x" }), { runs: [] });
      const [summary] = await list(h);
      assert.equal(summary.last, null, "the killed run is not the new job's last run");
      assert.equal(summary.running, false);
      await clock.advance(MIN);
      assert.equal(block.started.length, 2, "the new job runs on its own trigger");
      block.running[0].release();
      await until(() => h.doneRuns("x").length === 2, "the new run's done");
      const { runs } = await h.call("job.runs", { id: "x" }) as { runs: RunRecord[] };
      assert.deepEqual(runs.map((r) => r.run), [block.started[1].run]);
    });
  }
});

Deno.test("JobRunner overlap skip never has two runs of an id at once across a replace", async () => {
  const clock = new FakeClock(T0);
  const slow = slowStopCommand();
  await using h = harness({ clock, commands: [slow.command] });
  const spec = (every: string): JobSpec => ({
    id: "x",
    key: "test.slowstop",
    args: {},
    schedule: { trigger: "interval", every },
  });
  await install(h, "env-1", spec("1m"));
  await clock.advance(MIN);
  assert.equal(slow.runs.length, 1);
  await install(h, "env-2", spec("30s"));
  assert.equal(slow.runs[0].aborted, "killed because the job was replaced");
  await clock.advance(MIN);
  assert.equal(slow.runs.length, 1, "no new run while the killed one is still going");
  let [summary] = await list(h);
  assert.equal(summary.running, true);
  assert.equal(summary.skipped, 2);
  slow.runs[0].release();
  await until(() => h.doneRuns("x").length === 1, "the killed run's done");
  assert.equal(h.doneRuns("x")[0].error?.message, "killed because the job was replaced");
  await clock.advance(30_000);
  assert.equal(slow.runs.length, 2, "the new job runs once the old run has ended");
  [summary] = await list(h);
  assert.equal(summary.last, null, "the killed run is not in the new job's history");
  slow.runs[1].release();
  await until(() => h.runner.running === 0, "no runs");
});

Deno.test("JobRunner a replaced persistent job without a schedule runs once the killed run ends", async () => {
  const clock = new FakeClock(T0);
  const slow = slowStopCommand();
  await using h = harness({ clock, commands: [slow.command] });
  const spec: JobSpec = { id: "once", key: "test.slowstop", args: {}, persistent: true };
  await install(h, "env-1", spec);
  await until(() => slow.runs.length === 1, "the first run");
  const replacing = install(h, "env-2", spec);
  await until(() => slow.runs[0].aborted !== undefined, "the kill");
  assert.equal(slow.runs.length, 1, "waits for the killed run");
  slow.runs[0].release();
  await replacing;
  await until(() => slow.runs.length === 2, "the new run");
  slow.runs[1].release();
  await until(() => h.doneRuns("once").length === 2, "both done");
  assert.deepEqual(h.doneRuns("once").map((f) => f.id), ["env-1", "env-2"]);
});

Deno.test("JobRunner replacing a job with one of the other kind drops the old run history", async (t) => {
  for (const first of [false, true]) {
    await t.step(
      first ? "persistent → memory → persistent" : "memory → persistent → memory",
      async () => {
        const clock = new FakeClock(T0);
        await using h = harness({ clock, commands: [tickCommand] });
        const spec = (persistent: boolean): JobSpec => ({
          id: "x",
          key: "test.tick",
          args: {},
          schedule: { trigger: "interval", every: "1m" },
          persistent,
        });
        const runIds = async () =>
          ((await h.call("job.runs", { id: "x" })).runs as RunRecord[]).map((r) => r.run);
        await install(h, "env-1", spec(first));
        await clock.advance(2 * MIN);
        await until(() => h.doneRuns("x").length === 2, "two runs");
        assert.equal((await runIds()).length, 2);
        await install(h, "env-2", spec(!first));
        assert.deepEqual(await runIds(), [], "the other kind starts with no runs");
        await clock.advance(MIN);
        await until(() => h.doneRuns("x").length === 3, "a run of the second job");
        await install(h, "env-3", spec(first));
        assert.deepEqual(await runIds(), [], "the first job's runs do not come back");
        const rows = h.db.prepare("SELECT COUNT(*) AS n FROM runs").get() as { n: number };
        assert.equal(rows.n, 0);
      },
    );
  }
});

Deno.test("JobRunner audits scheduled runs refused at run time, not those that ran", async () => {
  const db = openAgentDatabase(":memory:");
  try {
    const clock = new FakeClock(T0);
    const spec: JobSpec = {
      id: "keep",
      key: "exec.run",
      args: { cmd: "/bin/echo", args: ["hi"] },
      schedule: { trigger: "interval", every: "1m" },
      persistent: true,
    };
    {
      await using h = harness({ clock, db, allowRun: ["/bin/echo"], commands: [tickCommand] });
      await install(h, "env-keep", spec);
      await install(h, "env-t", {
        id: "t",
        key: "test.tick",
        args: {},
        schedule: { trigger: "interval", every: "1m" },
      });
      await clock.advance(2 * MIN);
      await until(() => h.doneRuns("keep").length === 2, "two runs");
      assert.equal(h.doneRuns("keep")[1].exitCode, 0);
      const actions = h.audit.list().map((e) => e.action).reverse();
      assert.deepEqual(actions, [
        "command.received",
        "job.installed",
        "command.received",
        "job.installed",
      ]);
    }
    const executor = new FakeExecutor((p) => p.exit(0));
    await using again = harness({ clock, db, executor, allowRun: [] });
    await clock.advance(MIN);
    await until(() => again.doneRuns("keep").length === 1, "a refused run");
    const [run] = again.doneRuns("keep");
    assert.equal(run.error?.code, "not_whitelisted");
    assert.equal(executor.spawned.length, 0);
    const denied = again.audit.list({ action: "command.denied" });
    assert.equal(denied.length, 1);
    assert.equal(denied[0].actor, "agent:a1");
    assert.equal(denied[0].target, "a1");
    assert.equal(denied[0].key, "exec.run");
    assert.equal(denied[0].outcome, "denied");
    assert.equal(denied[0].argsDigest, digestJson(spec.args));
    assert.equal(
      denied[0].reason,
      `not_whitelisted: job keep run ${run.run}: /bin/echo is not on this agent's allowRun list`,
    );
    assert.equal(again.audit.list({ action: "command.executed" }).length, 0);
  } finally {
    db.close();
  }
});

Deno.test("JobRunner lists a stored row that no longer parses as blocked and deletes it", async () => {
  const db = openAgentDatabase(":memory:");
  try {
    const clock = new FakeClock(T0);
    const spec = (id: string): JobSpec => ({
      id,
      key: "test.tick",
      args: {},
      schedule: { trigger: "interval", every: "1m" },
      persistent: true,
    });
    {
      await using h = harness({ clock, db, commands: [tickCommand] });
      await install(h, "env-ok", spec("ok"));
      await install(h, "env-bad", spec("bad"));
      await install(h, "env-nokey", spec("nokey"));
      await clock.advance(MIN);
      await until(() => h.doneRuns("bad").length === 1, "a run of bad");
    }
    db.prepare("UPDATE jobs SET trigger = ? WHERE id = 'bad'").run('{"trigger":"sometimes"}');
    db.prepare("UPDATE jobs SET key = 'BAD KEY', args = '[' WHERE id = 'nokey'").run();
    await using again = harness({ clock, db, commands: [tickCommand] });
    const jobs = (await again.call("job.list")).jobs as Record<string, unknown>[];
    assert.deepEqual(jobs.map((j) => j.id), ["ok", "bad", "nokey"]);
    const [, bad, nokey] = jobs;
    assert.deepEqual(Object.keys(bad), ["id", "key", "blocked"]);
    assert.equal(bad.key, "test.tick");
    const blocked = bad.blocked as { code: string; message: string };
    assert.equal(blocked.code, "invalid_message");
    assert.match(blocked.message, /^stored job column trigger: /);
    assert.deepEqual(Object.keys(nokey), ["id", "blocked"]);
    const denied = again.audit.list({ action: "command.denied" }).reverse();
    assert.deepEqual(denied.map((e) => [e.actor, e.key]), [
      ["agent:a1", "test.tick"],
      ["agent:a1", null],
    ]);
    assert.match(denied[0].reason ?? "", /^invalid_message: stored job bad: /);
    await clock.advance(10 * MIN);
    assert.equal(again.doneRuns("bad").length, 0, "never runs");
    const { runs } = await again.call("job.runs", { id: "bad" }) as { runs: RunRecord[] };
    assert.equal(runs.length, 1, "its stored runs can still be read");

    assert.deepEqual(await again.call("job.delete", { id: "bad" }), { deleted: "bad" });
    const answer = only(
      await install(again, "env-nokey2", { ...spec("nokey"), persistent: false }),
    );
    assert.equal((answer.data!.installed as { replaced: boolean }).replaced, true);
    const rows = db.prepare("SELECT id FROM jobs ORDER BY id").all().map((r) => r.id);
    assert.deepEqual(rows, ["ok"], "the bad rows are gone from the table");
    const left = db.prepare("SELECT COUNT(*) AS n FROM runs WHERE job_id = 'bad'").get();
    assert.equal((left as { n: number }).n, 0);
    assert.deepEqual((await list(again)).map((j) => [j.id, j.blocked]), [
      ["ok", undefined],
      ["nokey", undefined],
    ]);
    const deleted = again.audit.list({ action: "job.deleted" })[0];
    assert.equal(deleted.key, "test.tick");
    assert.match(deleted.reason ?? "", /^job bad /);
  } finally {
    db.close();
  }
});

Deno.test("JobRunner: an onStart job installed with runNow runs at once and again at the next start", async () => {
  const db = openAgentDatabase(":memory:");
  try {
    const clock = new FakeClock(T0);
    {
      await using h = harness({ clock, db, commands: [tickCommand] });
      const answer = only(
        (await h.run({
          id: "env-w",
          job: {
            id: "w",
            key: "test.tick",
            args: {},
            schedule: { trigger: "onStart" },
            persistent: true,
            runNow: true,
          },
        })).filter((f) => runOf(f) === undefined),
      );
      assert.equal((answer.data!.installed as { id: string }).id, "w");
      await until(() => h.doneRuns("w").length === 1, "the run right after the install");
    }
    await using h = harness({ clock, db, commands: [tickCommand] });
    await until(() => h.doneRuns("w").length === 1, "the run at the next start");
    // runNow is for the install only: it is not kept with the job.
    const stored = db.prepare("SELECT * FROM jobs WHERE id = 'w'").get() as Record<string, string>;
    assert.ok(!JSON.stringify(stored).includes("runNow"));
  } finally {
    db.close();
  }
});
