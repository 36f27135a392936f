import assert from "node:assert/strict";
import { FakeClock } from "../../shared/clock.ts";
import { digestJson } from "../../shared/crypto/mod.ts";
import type { Output, Reply } from "../../shared/protocol/mod.ts";
import { Output as OutputSchema, SetTag as SetTagSchema } from "../../shared/protocol/mod.ts";
import { seededRandom } from "../../shared/random.ts";
import { FakeExecutor, spawnFailure } from "../_fake_executor.ts";
import { jobHarness } from "../_job_harness.ts";
import { until } from "../_test_commands.ts";
import { type Command, defineCommand } from "../payload/commands.ts";
import { z } from "zod";

const ECHO = ["/bin/echo"];

function done(frames: Reply[]): Output {
  const last = frames.at(-1) as Output;
  assert.equal(last.type, "output");
  assert.equal(last.done, true);
  return last;
}

Deno.test("JobRunner replies carry envelope id, verbatim meta, job ref, seq from 0 and ts", async () => {
  const clock = new FakeClock();
  const executor = new FakeExecutor((p) => {
    p.out("one", "two").err("oops").exit(0);
  });
  await using h = jobHarness({ executor, allowRun: ECHO, clock });
  const meta = { reply: { to: ["ops", 1, null] }, trace: "t-1", deep: { a: { b: { c: true } } } };
  const frames = await h.run({
    id: "env-1",
    meta,
    job: { id: "job-7", key: "exec.run", args: { cmd: "/bin/echo" } },
  });
  assert.deepEqual(frames.map((f) => f.seq), frames.map((_, i) => i));
  const run = (frames[0] as Output).run;
  assert.match(run ?? "", /^r-[A-Za-z0-9_-]{16}$/);
  for (const f of frames) {
    assert.equal((f as Output).run, run, "every reply names the run");
    assert.equal(f.v, 1);
    assert.equal(f.id, "env-1");
    assert.deepEqual(f.meta, meta);
    assert.deepEqual(f.job, { id: "job-7", key: "exec.run" });
    assert.equal(f.ts, clock.now());
    assert.ok(OutputSchema.safeParse(f).success, JSON.stringify(f));
  }
  const texts = frames.filter((f) => f.type === "output" && !f.done) as Output[];
  assert.deepEqual(
    texts.filter((f) => f.stream === "stdout").map((f) => f.text),
    ["one", "two"],
  );
  assert.deepEqual(texts.filter((f) => f.stream === "stderr").map((f) => f.text), ["oops"]);
  const last = done(frames);
  assert.equal(last.exitCode, 0);
  assert.equal(last.error, null);
  assert.equal(last.start, clock.now());
  assert.equal(last.finish, clock.now());
  assert.equal(last.durationMs, 0);
});

Deno.test("JobRunner omits meta when the command has none and generates a job id", async () => {
  const executor = new FakeExecutor((p) => p.exit(3));
  await using h = jobHarness({ executor, allowRun: ECHO, random: seededRandom(1) });
  const frames = await h.run({ id: "env-2", job: { key: "exec.run", args: { cmd: "/bin/echo" } } });
  const last = done(frames);
  assert.equal("meta" in last, false);
  assert.match(last.job.id, /^j-[A-Za-z0-9_-]{16}$/);
  assert.equal(last.exitCode, 3);
  assert.equal(last.error, null, "a non-zero exit is not an error");
  const again = await h.run({ id: "env-3", job: { key: "exec.run", args: { cmd: "/bin/echo" } } });
  assert.notEqual(done(again).job.id, last.job.id);
});

Deno.test("JobRunner measures start, finish and duration on the clock", async () => {
  const clock = new FakeClock();
  const executor = new FakeExecutor();
  await using h = jobHarness({ executor, allowRun: ECHO, clock });
  const running = h.run({ id: "env-t", job: { key: "exec.run", args: { cmd: "/bin/echo" } } });
  const proc = await executor.nth(0);
  const start = clock.now();
  await clock.advance(1234);
  proc.exit(0);
  const last = done(await running);
  assert.equal(last.start, start);
  assert.equal(last.finish, start + 1234);
  assert.equal(last.durationMs, 1234);
});

Deno.test("JobRunner refuses what it cannot run with a single done output", async (t) => {
  const cases: [string, Record<string, unknown>, string, RegExp][] = [
    ["unknown command", { key: "nope.run", args: {} }, "unknown_command", /nope\.run/],
    ["bad args", { key: "exec.run", args: { cmd: 5 } }, "invalid_args", /cmd/],
    [
      "unknown arg",
      { key: "exec.run", args: { cmd: "/bin/echo", shell: true } },
      "invalid_args",
      /shell/,
    ],
    [
      "not whitelisted",
      { key: "exec.run", args: { cmd: "/bin/rm" } },
      "not_whitelisted",
      /allowRun/,
    ],
    ["relative program", { key: "exec.run", args: { cmd: "rm" } }, "not_whitelisted", /absolute/],
    [
      "forbidden by the ACL",
      { key: "exec.run", args: { cmd: "/bin/echo" } },
      "forbidden",
      /exec\.run is not allowed on this agent: it is not on the agent's allowCommands list/,
    ],
    [
      "forbidden wins over an unknown key",
      { key: "nope.run", args: {} },
      "forbidden",
      /nope\.run/,
    ],
  ];
  for (const [name, job, code, message] of cases) {
    await t.step(name, async () => {
      const executor = new FakeExecutor((p) => p.exit(0));
      const allowCommands = code === "forbidden" ? ["tags.set", "job.*"] : undefined;
      await using h = jobHarness({ executor, allowRun: ECHO, allowCommands });
      const frames = await h.run({ id: "env-x", meta: { m: 1 }, job: job as never });
      assert.equal(frames.length, 1);
      const last = done(frames);
      assert.equal(last.seq, 0);
      assert.deepEqual(last.meta, { m: 1 });
      assert.equal(last.error?.code, code);
      assert.match(last.error!.message, message);
      assert.equal("exitCode" in last, false);
      assert.equal(executor.spawned.length, 0);
      const [denied, received] = h.audit.list();
      assert.equal(received.action, "command.received");
      assert.equal(denied.action, "command.denied");
      assert.equal(denied.outcome, "denied");
      assert.match(denied.reason ?? "", new RegExp(code));
    });
  }
});

Deno.test("JobRunner runs a job with schedule trigger now", async () => {
  await using h = jobHarness({ executor: new FakeExecutor((p) => p.exit(0)), allowRun: ECHO });
  const frames = await h.run({
    id: "env-n",
    job: { key: "exec.run", args: { cmd: "/bin/echo" }, schedule: { trigger: "now" } },
  });
  assert.equal(done(frames).error, null);
});

Deno.test("JobRunner audits received and executed commands with the server as actor", async () => {
  const executor = new FakeExecutor((p) => p.exit(0));
  await using h = jobHarness({ executor, allowRun: ECHO });
  const args = { cmd: "/bin/echo", args: ["hi"] };
  await h.run({ id: "env-a", job: { key: "exec.run", args } });
  executor.failWith = spawnFailure("/bin/echo");
  const failed = await h.run({ id: "env-b", job: { key: "exec.run", args } });
  assert.equal(done(failed).error?.code, "spawn_failed");
  const records = h.audit.list().reverse();
  assert.deepEqual(records.map((r) => [r.action, r.outcome]), [
    ["command.received", "ok"],
    ["command.executed", "ok"],
    ["command.received", "ok"],
    ["command.executed", "error"],
  ]);
  for (const r of records) {
    assert.equal(r.actor, "server:s1");
    assert.equal(r.key, "exec.run");
    assert.equal(r.argsDigest, digestJson(args));
  }
  assert.match(records[3].reason ?? "", /spawn_failed/);
});

Deno.test("exec.run timeout kills the process group with SIGKILL (fake clock)", async () => {
  const clock = new FakeClock();
  const executor = new FakeExecutor();
  await using h = jobHarness({ executor, allowRun: ECHO, clock });
  const running = h.run({
    id: "env-k",
    job: { key: "exec.run", args: { cmd: "/bin/echo", timeout: "5s" } },
  });
  const proc = await executor.nth(0);
  proc.out("started");
  await clock.advance(4999);
  assert.deepEqual(proc.kills, []);
  await clock.advance(1);
  assert.deepEqual(proc.kills, ["SIGKILL"]);
  const last = done(await running);
  assert.deepEqual(last.error, { code: "timeout", message: "killed after 5s" });
  assert.equal(last.exitCode, null);
  assert.equal(last.durationMs, 5000);
  assert.equal(clock.pending, 0);
});

Deno.test("exec.run uses the agent's execTimeout when the args give none", async () => {
  const clock = new FakeClock();
  const executor = new FakeExecutor();
  await using h = jobHarness({ executor, allowRun: ECHO, clock, execTimeoutMs: 60_000 });
  const running = h.run({ id: "env-d", job: { key: "exec.run", args: { cmd: "/bin/echo" } } });
  const proc = await executor.nth(0);
  await clock.advance(59_999);
  assert.equal(proc.exited, false);
  await clock.advance(1);
  assert.deepEqual(done(await running).error, { code: "timeout", message: "killed after 1m" });
});

Deno.test("exec.run reports an outside kill as exitCode null with a warn log", async () => {
  const executor = new FakeExecutor((p) => p.exit(null, "SIGTERM"));
  await using h = jobHarness({ executor, allowRun: ECHO });
  const frames = await h.run({ id: "env-s", job: { key: "exec.run", args: { cmd: "/bin/echo" } } });
  assert.equal(frames[0].type, "log");
  assert.equal(frames[0].type === "log" && frames[0].level, "warn");
  const last = done(frames);
  assert.equal(last.exitCode, null);
  assert.equal(last.error, null);
});

Deno.test("JobRunner.close() kills running jobs, which finish with error closed", async () => {
  const executor = new FakeExecutor();
  const h = jobHarness({ executor, allowRun: ECHO });
  const running = h.run({ id: "env-c", job: { key: "exec.run", args: { cmd: "/bin/echo" } } });
  const proc = await executor.nth(0);
  assert.equal(h.runner.running, 1);
  await h.runner.close();
  assert.deepEqual(proc.kills, ["SIGKILL"]);
  assert.equal(done(await running).error?.code, "closed");
  assert.equal(h.runner.running, 0);
  const late = await h.run({
    id: "env-late",
    job: { key: "exec.run", args: { cmd: "/bin/echo" } },
  });
  assert.equal(done(late).error?.code, "closed");
  assert.equal(executor.spawned.length, 1);
  const audited = h.audit.list().reverse().map((e) => [e.action, e.outcome, e.reason]);
  assert.deepEqual(audited, [
    ["command.received", "ok", null],
    ["command.executed", "error", "closed: killed because the agent is stopping"],
    ["command.received", "ok", null],
    ["command.denied", "denied", "closed: agent is stopping"],
  ]);
  await h[Symbol.asyncDispose]();
});

Deno.test("JobRunner audits a run killed by close() as executed with an error, not denied", async () => {
  // A command that throws its abort reason (JwError closed) rather than returning it.
  const throwing = defineCommand({
    key: "test.throwing",
    description: "waits for its abort and throws the reason",
    args: z.object({}).strict(),
    run: (ctx) =>
      new Promise((_, reject) => {
        ctx.signal.addEventListener("abort", () => reject(ctx.signal.reason), { once: true });
      }),
  }) as Command;
  const clock = new FakeClock();
  const h = jobHarness({ executor: new FakeExecutor(), clock, commands: [throwing] });
  await h.run({
    id: "env-i",
    job: {
      id: "sched",
      key: "test.throwing",
      args: {},
      schedule: { trigger: "interval", every: "1m" },
    },
  });
  await clock.advance(60_000);
  const now = h.run({ id: "env-now", job: { key: "test.throwing", args: {} } });
  await until(() => h.runner.running === 2, "two runs");
  await h.runner.close();
  assert.equal(done(await now).error?.code, "closed");
  assert.equal(h.doneRuns("sched")[0].error?.code, "closed");
  const audited = h.audit.list().reverse().map((e) => [e.actor, e.action, e.outcome]);
  assert.deepEqual(audited, [
    ["server:s1", "command.received", "ok"],
    ["server:s1", "job.installed", "ok"],
    ["server:s1", "command.received", "ok"],
    ["server:s1", "command.executed", "error"],
  ]);
  await h[Symbol.asyncDispose]();
});

Deno.test("tags.set sends a setTag frame, applies the change and finishes", async () => {
  await using h = jobHarness({ executor: new FakeExecutor() });
  const frames = await h.run({
    id: "env-tag",
    meta: { who: "ops" },
    job: { id: "jt", key: "tags.set", args: { tags: { role: "db", old: null } } },
  });
  assert.equal(frames.length, 2);
  const [setTag, last] = frames;
  assert.ok(SetTagSchema.safeParse(setTag).success);
  assert.equal(setTag.type, "setTag");
  assert.deepEqual(setTag.type === "setTag" && setTag.tags, { role: "db", old: null });
  assert.equal(setTag.seq, 0);
  assert.equal(setTag.id, "env-tag");
  assert.deepEqual(setTag.meta, { who: "ops" });
  assert.deepEqual(setTag.job, { id: "jt", key: "tags.set" });
  assert.equal(done(frames).seq, 1);
  assert.equal(last.type === "output" && "exitCode" in last, false);
  assert.deepEqual(h.tagChanges, [{ role: "db", old: null }]);
  const bad = await h.run({
    id: "env-bad",
    job: { key: "tags.set", args: { tags: { "-x": "1" } } },
  });
  assert.equal(done(bad).error?.code, "invalid_args");
});
