/**
 * The dispatcher with offline agents (mailbox), per-target states, and targets on other
 * servers of a cluster.
 */
import assert from "node:assert/strict";
import type { Command, Output, RunEvent, SummaryEvent } from "../../shared/protocol/mod.ts";
import { createMailbox } from "../agents/mailbox.ts";
import { createFixture, fakeSession, type Fixture, pinFake, testRandom } from "../_testing.ts";
import {
  type ClusterDirectory,
  createDispatcher,
  type DispatcherOptions,
  type KnownAgent,
  type Run,
  SWEEP_MS,
} from "./dispatch.ts";

function setup(over: Partial<DispatcherOptions> = {}) {
  const f = createFixture("s1");
  const mailbox = createMailbox(f.db);
  const dispatcher = createDispatcher({
    serverId: "s1",
    registry: f.registry,
    bus: f.bus,
    audit: f.audit,
    clock: f.clock,
    random: testRandom,
    mailbox,
    known: (id?: string) =>
      f.store.all().filter((r) => !f.registry.get(r.id) && (id === undefined || r.id === id)).map((
        r,
      ) => ({
        id: r.id,
        tags: r.tags,
        connected: false,
        server: r.server,
      })),
    ...over,
  });
  return { f, dispatcher, mailbox };
}

/** An agent seen before (pinned, with tags) and now offline. */
function seenBefore(f: Fixture, id: string, tags: Record<string, string> = {}) {
  pinFake(f.store, id);
  f.store.saveTags(id, tags);
}

function connect(
  f: Fixture,
  id: string,
  tags: Record<string, string> = {},
  dispatcher?: { welcomed(id: string): void },
) {
  pinFake(f.store, id);
  const s = fakeSession(id, tags);
  f.registry.attach(s.session);
  dispatcher?.welcomed(id);
  return s;
}

function done(f: Fixture, agent: string, command: Command, extra: Partial<Output> = {}) {
  f.bus.publish(
    {
      v: 1,
      id: command.id,
      type: "output",
      job: { id: "j", key: command.job.key },
      seq: 0,
      ts: f.clock.now(),
      done: true,
      error: null,
      exitCode: 0,
      meta: command.meta,
      agent,
      ...extra,
    } as Output & { agent: string },
    {},
  );
}

async function collect(run: Run): Promise<RunEvent[]> {
  const out: RunEvent[] = [];
  for await (const e of run) out.push(e);
  return out;
}

Deno.test("a command to an offline agent waits in the mailbox and is delivered on connect", async () => {
  const { f, dispatcher, mailbox } = setup();
  using _ = f;
  seenBefore(f, "db-1", { role: "db" });
  connect(f, "db-2", { role: "db" });
  const run = dispatcher.start({
    target: "tag:role=db",
    job: { key: "exec.run", args: { cmd: "/bin/true" } },
    meta: { ticket: 9 },
    timeoutMs: 5000,
  }, "alice");
  const live = f.registry.get("db-2")!;
  assert.ok(live);
  const collecting = collect(run);
  await f.clock.advance(5000);
  const first = await collecting;
  // db-2 never answered: timeout. db-1 is offline and queued.
  const summary = first.at(-1) as SummaryEvent;
  assert.deepEqual(first[0].type === "dispatched" && first[0].agents, ["db-1", "db-2"]);
  assert.equal(summary.agents["db-2"].status, "timeout");
  assert.equal(summary.agents["db-1"].state, "offline");
  assert.equal(summary.agents["db-1"].until, f.clock.now() - 5000 + 3_600_000);
  assert.equal(mailbox.size, 1);
  assert.equal(f.audit.list({ action: "command.queued" })[0].target, "db-1");

  // db-1 connects: the command goes out once, with its meta; its state follows.
  const s = connect(f, "db-1", { role: "db" }, dispatcher);
  assert.equal(mailbox.size, 0);
  const command = s.sent.find((x) => x.type === "command") as Command;
  assert.equal(command.id, run.id);
  assert.deepEqual(command.meta, { ticket: 9 });
  const again = await dispatcher.follow(run.id, 0);
  assert.ok(again);
  done(f, "db-1", command);
  const events = await collect(again);
  const after = events.at(-1) as SummaryEvent;
  assert.equal(after.agents["db-1"].state, "done");
  assert.equal(after.agents["db-2"].status, "timeout");
  const sent = f.audit.list({ action: "command.sent" }).find((e) => e.target === "db-1");
  assert.equal(sent?.reason, "from the mailbox");
  assert.equal(sent?.actor, "operator:alice");
});

Deno.test("a queued command expires after its TTL and the operator sees it", async () => {
  const { f, dispatcher, mailbox } = setup();
  using _ = f;
  seenBefore(f, "edge-1");
  const run = dispatcher.start(
    { target: "agent:edge-1", job: { key: "exec.run" }, ttlMs: 20_000 },
    "bob",
  );
  const summary = (await collect(run)).at(-1) as SummaryEvent;
  assert.equal(summary.agents["edge-1"].status, "offline");
  await f.clock.advance(20_000 + SWEEP_MS);
  assert.equal(mailbox.size, 0);
  const later = await dispatcher.follow(run.id, 0);
  const expired = (await collect(later!)).at(-1) as SummaryEvent;
  assert.equal(expired.agents["edge-1"].state, "expired");
  assert.equal(expired.agents["edge-1"].status, "expired");
  const [audited] = f.audit.list({ action: "command.expired" });
  assert.equal(audited.target, "edge-1");
  assert.equal(audited.actor, "operator:bob");
  // It comes back afterwards: nothing is sent.
  const s = connect(f, "edge-1", {}, dispatcher);
  assert.equal(s.sent.filter((x) => x.type === "command").length, 0);
});

Deno.test("TTL 0 reports an offline agent without keeping the command", async () => {
  const { f, dispatcher, mailbox } = setup();
  using _ = f;
  seenBefore(f, "edge-1");
  const run = dispatcher.start(
    { target: "all", job: { key: "exec.run" }, ttlMs: 0 },
    "bob",
  );
  const summary = (await collect(run)).at(-1) as SummaryEvent;
  assert.equal(summary.agents["edge-1"].state, "offline");
  assert.equal(summary.agents["edge-1"].until, undefined);
  assert.equal(mailbox.size, 0);
});

Deno.test("targets on other servers are listed with their server; only own offline ones are kept", async () => {
  const others: KnownAgent[] = [
    { id: "far-1", tags: { role: "web" }, connected: true, server: "s2" },
    { id: "far-2", tags: { role: "web" }, connected: false, server: "s3" },
    { id: "near-1", tags: { role: "web" }, connected: false, server: "s2" },
  ];
  const cluster: ClusterDirectory = {
    agents: () => others,
    owner: (id) => (id === "near-1" ? "s1" : "s3"),
    url: (id) => `http://${id}.test`,
  };
  const forwarded: string[] = [];
  const { f, dispatcher, mailbox } = setup({
    cluster,
    forward: (c) => {
      forwarded.push(c.id);
      return ["s2", "s3"];
    },
  });
  using _ = f;
  connect(f, "here-1", { role: "web" });
  const run = dispatcher.start({ target: "tag:role=web", job: { key: "exec.run" } }, "eve");
  const it = run[Symbol.asyncIterator]();
  const head = (await it.next()).value!;
  assert.equal(head.type, "dispatched");
  if (head.type !== "dispatched") return;
  assert.deepEqual(head.agents, ["far-1", "far-2", "here-1", "near-1"]);
  assert.deepEqual(head.owners, { "far-1": "s2", "far-2": "s3" });
  assert.deepEqual(head.urls, { s2: "http://s2.test", s3: "http://s3.test" });
  assert.deepEqual(head.servers, ["s2", "s3"]);
  assert.deepEqual(forwarded, [run.id]);
  // near-1 is offline and placed on this server: its command waits here.
  assert.equal(mailbox.size, 1);
  run.close();

  // The same command reaching s1 from elsewhere for an offline agent it owns.
  const part = dispatcher.deliver({
    id: "remote-1",
    target: "agent:near-1",
    job: { key: "exec.run", args: {} },
    actor: "operator:eve",
    timeoutMs: 1000,
    ttlMs: 60_000,
  }, "s2");
  assert.deepEqual(part, []);
  assert.equal(mailbox.size, 2);
  const followed = await dispatcher.follow("remote-1", 0);
  const events = await collect(followed!);
  assert.deepEqual(events[0], {
    type: "part",
    id: "remote-1",
    server: "s1",
    origin: "s2",
    agents: ["near-1"],
  });
  assert.equal((events.at(-1) as SummaryEvent).agents["near-1"].state, "offline");
});

Deno.test("follow() waits for a command that reaches this server a little later", async () => {
  const { f, dispatcher } = setup();
  using _ = f;
  const s = connect(f, "w1");
  const waiting = dispatcher.follow("late-1", 3000);
  await f.clock.advance(500);
  dispatcher.deliver({
    id: "late-1",
    target: "all",
    job: { key: "exec.run", args: {} },
    actor: "operator:eve",
    timeoutMs: 1000,
  }, "s2");
  const run = await waiting;
  assert.ok(run, "found once delivered");
  done(f, "w1", s.sent.find((x) => x.type === "command") as Command);
  const events = await collect(run);
  assert.deepEqual(events.map((e) => e.type), ["part", "output", "summary"]);
  assert.equal(await dispatcher.follow("never", 0), undefined);
  const gone = dispatcher.follow("never-2", 1000);
  await f.clock.advance(1000);
  assert.equal(await gone, undefined);
});
