import assert from "node:assert/strict";
import { isJwError, JwError } from "../../shared/errors.ts";
import type {
  Command,
  Output,
  RunEvent,
  ServerFrame,
  SummaryEvent,
} from "../../shared/protocol/mod.ts";
import { createFixture, fakeSession, type Fixture, pinFake, testRandom } from "../_testing.ts";
import {
  createDispatcher,
  type DispatcherOptions,
  type ForwardedCommand,
  type Run,
  runSummary,
} from "./dispatch.ts";

function setup(over: Partial<DispatcherOptions> = {}) {
  const f = createFixture();
  const dispatcher = createDispatcher({
    registry: f.registry,
    bus: f.bus,
    audit: f.audit,
    clock: f.clock,
    random: testRandom,
    ...over,
  });
  return { f, dispatcher };
}

function connect(f: Fixture, id: string, tags: Record<string, string> = {}) {
  pinFake(f.store, id);
  const s = fakeSession(id, tags);
  const agent = f.registry.attach(s.session);
  return { ...s, agent };
}

/** Publishes an output reply for `command` as if `agent` sent it. */
function reply(f: Fixture, agent: string, command: Command, extra: Partial<Output> = {}) {
  const frame: Output = {
    v: 1,
    id: command.id,
    type: "output",
    job: { id: "job-1", key: command.job.key },
    seq: 0,
    ts: f.clock.now(),
    ...extra,
  };
  if (command.meta !== undefined) frame.meta = command.meta;
  f.bus.publish({ ...frame, agent }, f.registry.get(agent)?.tags ?? {});
}

async function collect(run: Run): Promise<RunEvent[]> {
  const events: RunEvent[] = [];
  for await (const e of run) events.push(e);
  return events;
}

function commandOf(sent: ServerFrame[]): Command {
  assert.equal(sent.length, 1);
  assert.equal(sent[0].type, "command");
  return sent[0] as Command;
}

Deno.test("Dispatcher.start() sends the command and summarises ok and error outcomes", async () => {
  const { f, dispatcher } = setup();
  using _ = f;
  const a1 = connect(f, "a1", { role: "web" });
  const a2 = connect(f, "a2", { role: "web" });
  connect(f, "db", { role: "db" });
  const meta = { replyTo: "ticket-7", nested: { list: [1, "two", null] } };
  const run = dispatcher.start({
    target: "tag:role=web",
    job: { key: "exec.run", args: { cmd: "/bin/true" } },
    meta,
  }, "alice");
  assert.deepEqual(run.agents, ["a1", "a2"]);

  const cmd = commandOf(a1.sent);
  assert.deepEqual(cmd, {
    v: 1,
    id: run.id,
    type: "command",
    meta,
    job: { key: "exec.run", args: { cmd: "/bin/true" } },
  });
  assert.deepEqual(commandOf(a2.sent), cmd);

  reply(f, "a1", cmd, { text: "hello\n", stream: "stdout" });
  reply(f, "a1", cmd, { seq: 1, done: true, error: null, exitCode: 0, durationMs: 12 });
  reply(f, "a2", cmd, {
    done: true,
    exitCode: 3,
    error: { code: "exit_status", message: "exited with 3" },
  });
  reply(f, "a2", { ...cmd, id: "other-envelope" }, { text: "not ours" });

  const events = await collect(run);
  assert.deepEqual(events[0], {
    type: "dispatched",
    id: run.id,
    target: "tag:role=web",
    agents: ["a1", "a2"],
  });
  const replies = events.slice(1, -1);
  assert.equal(replies.length, 3);
  for (const r of replies) {
    assert.equal(r.id, run.id);
    assert.deepEqual((r as Output).meta, meta, "meta passes through untouched");
  }
  assert.equal((replies[0] as Output & { agent: string }).agent, "a1");
  assert.deepEqual(events.at(-1), {
    type: "summary",
    id: run.id,
    agents: {
      a1: { status: "ok", error: null, exitCode: 0, durationMs: 12, state: "done" },
      a2: {
        status: "error",
        error: { code: "exit_status", message: "exited with 3" },
        exitCode: 3,
        state: "error",
      },
    },
  });
  assert.equal(f.bus.subscribers, 0);
  assert.equal(f.clock.pending, 1, "only the dispatcher's sweep");
  assert.equal(dispatcher.active, 0);

  const sent = f.audit.list({ action: "command.sent" });
  assert.deepEqual(sent.map((e) => [e.actor, e.target, e.key, e.outcome]).sort(), [
    ["operator:alice", "a1", "exec.run", "ok"],
    ["operator:alice", "a2", "exec.run", "ok"],
  ]);
  assert.match(sent[0].argsDigest ?? "", /^sha256:[0-9a-f]{64}$/);
});

Deno.test("Dispatcher run times out the silent agents on the fake clock", async () => {
  const { f, dispatcher } = setup();
  using _ = f;
  const a1 = connect(f, "a1");
  connect(f, "a2");
  const run = dispatcher.start(
    { target: "all", job: { key: "exec.run" }, timeoutMs: 5_000 },
    "bob",
  );
  reply(f, "a1", commandOf(a1.sent), { done: true });
  const done = collect(run);
  await f.clock.advance(4_999);
  assert.equal(dispatcher.active, 1);
  await f.clock.advance(1);
  const events = await done;
  const summary = events.at(-1) as SummaryEvent;
  assert.deepEqual(summary.agents.a1, { status: "ok", error: null, state: "done" });
  assert.equal(summary.agents.a2.status, "timeout");
  assert.equal(summary.agents.a2.error?.code, "timeout");
  assert.equal(f.bus.subscribers, 0);
});

Deno.test("Dispatcher run reports an agent that is not connected", async () => {
  const { f, dispatcher } = setup();
  using _ = f;
  const run = dispatcher.start({ target: "agent:ghost", job: { key: "exec.run" } }, "bob");
  const events = await collect(run);
  assert.deepEqual(events.map((e) => e.type), ["dispatched", "summary"]);
  assert.deepEqual((events[0] as { agents: string[] }).agents, []);
  assert.deepEqual((events[1] as SummaryEvent).agents, {
    ghost: {
      status: "not_connected",
      error: { code: "not_connected", message: 'agent "ghost" is not connected' },
      state: "error",
      server: "local",
    },
  });
  assert.equal(f.clock.pending, 1, "only the dispatcher's sweep");
  const [entry] = f.audit.list({ action: "command.sent" });
  assert.equal(entry.target, "agent:ghost");
  assert.equal(entry.outcome, "error");
  assert.equal(entry.reason, "not_connected");
});

Deno.test("Dispatcher run with a target that matches nobody ends with an empty summary", async () => {
  const { f, dispatcher } = setup();
  using _ = f;
  const events = await collect(
    dispatcher.start({ target: "tag:role=none", job: { key: "exec.run" } }, "bob"),
  );
  assert.equal(events.length, 2);
  assert.deepEqual((events[0] as { agents: string[] }).agents, []);
  assert.deepEqual((events[1] as SummaryEvent).agents, {});
});

Deno.test("Dispatcher run marks an agent that disconnects mid-run as closed", async () => {
  const { f, dispatcher } = setup();
  using _ = f;
  const a1 = connect(f, "a1");
  const run = dispatcher.start({ target: "agent:a1", job: { key: "exec.run" } }, "bob");
  reply(f, "a1", commandOf(a1.sent), { text: "partial" });
  f.registry.detach(a1.agent);
  const events = await collect(run);
  assert.equal(events.length, 3);
  const summary = events[2] as SummaryEvent;
  assert.equal(summary.agents.a1.status, "error");
  assert.equal(summary.agents.a1.error?.code, "closed");
});

Deno.test("Dispatcher.rejected() ends that agent's part with the agent's error", async () => {
  const { f, dispatcher } = setup();
  using _ = f;
  const a1 = connect(f, "a1");
  const a2 = connect(f, "a2");
  const run = dispatcher.start({ target: "all", job: { key: "exec.run" } }, "bob");
  const command = commandOf(a1.sent);
  dispatcher.rejected("a1", "some-other-run", { code: "invalid_message", message: "x" });
  assert.equal(dispatcher.active, 1);
  dispatcher.rejected("a1", command.id, { code: "invalid_message", message: "bad command frame" });
  reply(f, "a2", commandOf(a2.sent), { done: true });
  const summary = (await collect(run)).at(-1) as SummaryEvent;
  assert.deepEqual(summary.agents.a1, {
    status: "error",
    error: { code: "invalid_message", message: "bad command frame" },
    state: "error",
  });
  assert.equal(summary.agents.a2.status, "ok");
  assert.equal(f.clock.pending, 1, "no timeout left behind, only the dispatcher's sweep");
});

Deno.test("Dispatcher run marks a failed send as closed", async () => {
  const { f, dispatcher } = setup();
  using _ = f;
  const a1 = connect(f, "a1");
  a1.closes.push({ code: 1006, reason: "" }); // the fake send now throws
  const events = await collect(
    dispatcher.start({ target: "agent:a1", job: { key: "exec.run" } }, "bob"),
  );
  const summary = events.at(-1) as SummaryEvent;
  assert.equal(summary.agents.a1.status, "error");
  assert.equal(summary.agents.a1.error?.code, "closed");
  assert.equal(f.audit.list({ action: "command.sent" })[0].outcome, "error");
});

Deno.test("Dispatcher.start() rejects bad requests and audits command.denied", async (t) => {
  const { f, dispatcher } = setup();
  using _ = f;
  const cases: { name: string; body: unknown; code: string; match: RegExp }[] = [
    { name: "not an object", body: [1], code: "invalid_message", match: /\(root\)/ },
    {
      name: "unknown key",
      body: { target: "all", job: { key: "exec.run" }, extra: 1 },
      code: "invalid_message",
      match: /extra/,
    },
    {
      name: "bad job key",
      body: { target: "all", job: { key: "Exec" } },
      code: "invalid_message",
      match: /job\.key/,
    },
    {
      name: "bad target",
      body: { target: "everyone", job: { key: "exec.run" } },
      code: "usage",
      match: /bad target/,
    },
    {
      name: "timeout too long",
      body: { target: "all", job: { key: "exec.run" }, timeoutMs: 7_200_000 },
      code: "invalid_message",
      match: /timeoutMs/,
    },
  ];
  for (const c of cases) {
    await t.step(c.name, () => {
      assert.throws(
        () => dispatcher.start(c.body, "mallory"),
        (e) => isJwError(e) && e.code === c.code && c.match.test(e.message),
      );
    });
  }
  const denied = f.audit.list({ action: "command.denied" });
  assert.equal(denied.length, cases.length);
  assert.equal(denied[1].actor, "operator:mallory");
  assert.equal(denied[1].target, "everyone");
  assert.equal(denied[1].key, "exec.run");
  assert.equal(denied[1].outcome, "denied");
  assert.match(denied[1].reason ?? "", /^usage: /);
  assert.equal(dispatcher.active, 0);
  assert.equal(f.bus.subscribers, 0);
});

Deno.test("Run.close() ends one reader; the run goes on and a later reader sees it", async () => {
  const { f, dispatcher } = setup();
  using _ = f;
  connect(f, "a1");
  const run = dispatcher.start(
    { target: "all", job: { key: "exec.run" }, timeoutMs: 1000 },
    "bob",
  );
  const it = run[Symbol.asyncIterator]();
  assert.equal((await it.next()).value?.type, "dispatched");
  const pending = it.next();
  run.close();
  assert.equal((await pending).done, true);
  assert.equal(dispatcher.active, 1, "the agent's part is still open");
  assert.equal(f.bus.subscribers, 1);
  await f.clock.advance(1000);
  assert.equal(dispatcher.active, 0);
  assert.equal(f.bus.subscribers, 0, "no open target: no longer listening");
  const later = await dispatcher.follow(run.id, 0);
  assert.ok(later);
  const events = await collect(later);
  assert.deepEqual(events.map((e) => e.type), ["dispatched", "summary"]);
  assert.equal((events[1] as SummaryEvent).agents.a1.status, "timeout");
});

Deno.test("Dispatcher.close() finishes active runs and refuses new ones", async () => {
  const { f, dispatcher } = setup();
  using _ = f;
  connect(f, "a1");
  const run = dispatcher.start({ target: "all", job: { key: "exec.run" } }, "bob");
  dispatcher.close();
  const summary = (await collect(run)).at(-1) as SummaryEvent;
  assert.equal(summary.agents.a1.error?.code, "closed");
  assert.throws(
    () => dispatcher.start({ target: "all", job: { key: "exec.run" } }, "bob"),
    (e) => isJwError(e, "closed"),
  );
});

Deno.test("Dispatcher writes the fan-out's audit records through defer, after the sends", () => {
  const deferred: (() => void)[] = [];
  const { f, dispatcher } = setup({ defer: (fn) => deferred.push(fn) });
  using _ = f;
  const a1 = connect(f, "a1");
  const a2 = connect(f, "a2");
  const run = dispatcher.start({ target: "all", job: { key: "exec.run" } }, "bob");
  assert.equal(a1.sent.length + a2.sent.length, 2, "frames handed over first");
  assert.equal(f.audit.list({ action: "command.sent" }).length, 0);
  assert.equal(deferred.length, 1);
  deferred[0]();
  assert.deepEqual(f.audit.list({ action: "command.sent" }).map((e) => e.target).sort(), [
    "a1",
    "a2",
  ]);
  run.close();
});

Deno.test("Dispatcher expand rewrites the sent job; the audit digest covers the operator's args", () => {
  const seen: unknown[] = [];
  const { f, dispatcher } = setup({
    expand: (job) => {
      seen.push(job);
      return job.key === "script.register"
        ? { ...job, args: { ...job.args, script: "TEXT" } }
        : job;
    },
  });
  using _ = f;
  const a1 = connect(f, "a1");
  const run = dispatcher.start(
    { target: "all", job: { key: "script.register", args: { name: "s" } } },
    "bob",
  );
  assert.deepEqual(seen, [{ key: "script.register", args: { name: "s" } }]);
  const cmd = commandOf(a1.sent);
  assert.deepEqual(cmd.job, { key: "script.register", args: { name: "s", script: "TEXT" } });

  const plain = createDispatcher({
    registry: f.registry,
    bus: f.bus,
    audit: f.audit,
    clock: f.clock,
    random: testRandom,
  });
  const other = connect(f, "a2");
  const control = plain.start(
    { target: "agent:a2", job: { key: "script.register", args: { name: "s" } } },
    "bob",
  );
  assert.deepEqual(commandOf(other.sent).job.args, { name: "s" }, "no hook: sent as given");
  const digests = f.audit.list({ action: "command.sent" }).map((e) => e.argsDigest);
  assert.equal(digests.length, 2);
  assert.equal(digests[0], digests[1], "same digest with and without expansion");
  run.close();
  control.close();
  plain.close();
});

Deno.test("Dispatcher expand refusing a job denies the run and sends nothing", () => {
  const { f, dispatcher } = setup({
    expand: () => {
      throw new JwError("not_found", 'no script "s" on this server');
    },
  });
  using _ = f;
  const a1 = connect(f, "a1");
  const timers = f.clock.pending;
  assert.throws(
    () =>
      dispatcher.start(
        { target: "all", job: { key: "script.register", args: { name: "s" } } },
        "bob",
      ),
    (e) => isJwError(e, "not_found"),
  );
  assert.equal(a1.sent.length, 0);
  assert.equal(dispatcher.active, 0);
  assert.equal(f.bus.subscribers, 0);
  assert.equal(f.clock.pending, timers, "no run timer");
  const [denied] = f.audit.list({ action: "command.denied" });
  assert.deepEqual(
    [denied.actor, denied.target, denied.key, denied.outcome, denied.reason],
    ["operator:bob", "all", "script.register", "denied", 'not_found: no script "s" on this server'],
  );
  assert.equal(f.audit.list({ action: "command.sent" }).length, 0);
});

Deno.test("runSummary() drains a run to its summary, or throws closed when it is closed", async () => {
  const { f, dispatcher } = setup();
  using _ = f;
  const a1 = connect(f, "a1");
  const run = dispatcher.start({ target: "all", job: { key: "exec.run" } }, "bob");
  const cmd = commandOf(a1.sent);
  reply(f, "a1", cmd, { text: "dropped" });
  reply(f, "a1", cmd, { seq: 1, done: true, error: null });
  const summary = await runSummary(run);
  assert.deepEqual(summary, {
    type: "summary",
    id: run.id,
    agents: { a1: { status: "ok", error: null, state: "done" } },
  });

  const closed = dispatcher.start({ target: "all", job: { key: "exec.run" } }, "bob");
  closed.close();
  await assert.rejects(runSummary(closed), (e) => isJwError(e, "closed"));
});

Deno.test("Dispatcher forwards every started command and delivers forwarded ones locally", async () => {
  const forwarded: ForwardedCommand[] = [];
  const { f, dispatcher } = setup({
    forward: (c) => {
      forwarded.push(c);
      return ["srv-2", "srv-3"];
    },
  });
  const web = connect(f, "w1", { role: "web" });
  const db = connect(f, "d1", { role: "db" });
  const run = dispatcher.start({
    target: "tag:role=web",
    job: { key: "exec.run", args: { cmd: "/bin/true" } },
    meta: { ticket: 1 },
  }, "alice");
  assert.equal(forwarded.length, 1);
  const first = await run[Symbol.asyncIterator]().next();
  assert.deepEqual((first.value as { servers?: string[] }).servers, ["srv-2", "srv-3"]);
  assert.deepEqual(forwarded[0], {
    id: run.id,
    target: "tag:role=web",
    job: { key: "exec.run", args: { cmd: "/bin/true" } },
    meta: { ticket: 1 },
    actor: "operator:alice",
    timeoutMs: 30_000,
    ttlMs: 3_600_000,
  });
  run.close();

  // The same command arriving from another server goes to this server's matching agents.
  web.sent.length = 0;
  const delivered = dispatcher.deliver({ ...forwarded[0], id: "remote-1" }, "srv-2");
  assert.deepEqual(delivered, ["w1"]);
  assert.equal(commandOf(web.sent).id, "remote-1");
  assert.deepEqual(commandOf(web.sent).meta, { ticket: 1 });
  assert.equal(db.sent.length, 0);
  const audited = f.audit.list({ action: "command.sent" })[0];
  assert.deepEqual([audited.actor, audited.target, audited.reason], [
    "operator:alice",
    "w1",
    "via server:srv-2",
  ]);
  const other = (id: string, over: Partial<ForwardedCommand>) => ({ ...forwarded[0], id, ...over });
  assert.deepEqual(dispatcher.deliver(other("r2", { target: "tag:role=none" }), "srv-2"), []);
  assert.deepEqual(dispatcher.deliver(other("r3", { target: "bogus" }), "srv-2"), []);
  const job = { key: "Not A Key", args: {} };
  assert.deepEqual(dispatcher.deliver(other("r4", { job }), "srv-3"), []);
  // A command already handled here (the same id gossiped twice) is not delivered again.
  web.sent.length = 0;
  assert.deepEqual(dispatcher.deliver(other("remote-1", {}), "srv-2"), []);
  assert.equal(web.sent.length, 0);
  const denied = f.audit.list({ action: "command.denied" });
  assert.equal(denied.length, 2);
  assert.match(denied[0].reason!, /invalid_message: .*\(via server:srv-3\)$/);
  assert.match(denied[1].reason!, /\(via server:srv-2\)$/);
});
