import assert from "node:assert/strict";
import { FakeClock } from "../../shared/clock.ts";
import { OutputConfig, type OutputConfig as Config } from "../../shared/config/outputs.ts";
import { openDatabase } from "../../shared/db/mod.ts";
import { JwError } from "../../shared/errors.ts";
import { seededRandom } from "../../shared/random.ts";
import type { RelayedReply } from "../../shared/protocol/mod.ts";
import { serverMigrations } from "../db.ts";
import type { Backend, OutboxItem } from "./backend.ts";
import { loadFormatter } from "./format.ts";
import { OutputQueue } from "./outbox.ts";
import { startOutputs } from "./pipeline.ts";

/** A backend that records batches and fails while `down`. */
class FakeBackend implements Backend {
  readonly batches: OutboxItem[][] = [];
  down: "no" | "unavailable" | "rejected" = "no";
  closed = false;
  constructor(readonly name: string) {}
  send(batch: readonly OutboxItem[]): Promise<void> {
    if (this.down === "unavailable") {
      return Promise.reject(new JwError("unavailable", "broker down"));
    }
    const refused = batch.filter((i) => i.body.includes('"text":"bad"')).map((i) => i.seq);
    if (this.down === "rejected" && refused.length) {
      return Promise.reject(new JwError("rejected", "HTTP 400", { detail: { seqs: refused } }));
    }
    this.batches.push([...batch]);
    return Promise.resolve();
  }
  close() {
    this.closed = true;
    return Promise.resolve();
  }
  get bodies() {
    return this.batches.flat().map((i) => JSON.parse(i.body));
  }
}

function reply(agent: string, text: string, key = "exec.run"): RelayedReply {
  return {
    v: 1,
    id: "cmd-1",
    type: "output",
    job: { id: "j1", key },
    seq: 0,
    ts: 1,
    text,
    agent,
  } as RelayedReply;
}

async function setup<B extends Backend = FakeBackend>(
  configs: Record<string, unknown>[],
  db = openDatabase(":memory:", serverMigrations),
  make: (name: string) => B = (name) => new FakeBackend(name) as unknown as B,
) {
  const clock = new FakeClock();
  const queue = new OutputQueue(db, "srv-1");
  const backends = new Map<string, B>();
  const deadLetterDir = await Deno.makeTempDir({ prefix: "jw-dead-" });
  const outputs = await startOutputs({
    serverId: "srv-1",
    outputs: configs.map((c) => OutputConfig.parse(c)) as Config[],
    queue,
    backend: (c) => {
      const b = make(c.name);
      backends.set(c.name, b);
      return b;
    },
    formatter: (path) => loadFormatter(path),
    deadLetterDir,
    clock,
    random: seededRandom(3),
  });
  return { clock, queue, backends, outputs, db, deadLetterDir };
}

const settle = async (clock: FakeClock, ms = 10) => {
  for (let i = 0; i < 5; i++) await clock.advance(ms);
};

Deno.test("messages reach each matching output in order, with stable ids", async () => {
  const t = await setup([
    { name: "all", type: "http", url: "http://x.test" },
    {
      name: "web",
      type: "http",
      url: "http://x.test",
      filter: { tags: { role: "web" }, types: ["output"] },
    },
  ]);
  try {
    t.outputs.reply(reply("a1", "one"), { role: "web" });
    t.outputs.reply(reply("a2", "two"), { role: "db" });
    t.outputs.audit({ actor: "operator:x", action: "command.sent", outcome: "ok" }, 5);
    await settle(t.clock);
    const all = t.backends.get("all")!.bodies;
    assert.deepEqual(all.map((b) => b.type), ["output", "output", "audit"]);
    assert.deepEqual(all.map((b) => b.mid), ["srv-1-1", "srv-1-2", "srv-1-3"]);
    assert.equal(all[0].agent, "a1");
    assert.equal(all[0].message.text, "one");
    assert.deepEqual(all[0].tags, { role: "web" });
    assert.equal(all[2].message.action, "command.sent");
    const web = t.backends.get("web")!.bodies;
    assert.deepEqual(web.map((b) => b.mid), ["srv-1-1"], "same mid in every output");
    const [s] = t.outputs.status();
    assert.equal(s.delivered, 3);
    assert.equal(s.queued, 0);
  } finally {
    await t.outputs.close();
    t.db.close();
  }
});

Deno.test("a backend that is down keeps messages queued, then gets them all in order once", async () => {
  const t = await setup([{
    name: "q",
    type: "http",
    url: "http://x.test",
    queue: { batch: 7, retryMax: "2s" },
  }]);
  try {
    const b = t.backends.get("q")!;
    b.down = "unavailable";
    for (let i = 0; i < 50; i++) t.outputs.reply(reply("a1", `m${i}`), {});
    await settle(t.clock, 500);
    let s = t.outputs.status()[0];
    assert.equal(s.queued, 50);
    assert.equal(s.state, "retrying");
    assert.ok(s.failed >= 2, `failed attempts counted: ${s.failed}`);
    assert.match(s.lastError!, /unavailable: broker down/);
    b.down = "no";
    await settle(t.clock, 1000);
    s = t.outputs.status()[0];
    assert.equal(s.queued, 0);
    assert.equal(s.delivered, 50);
    assert.deepEqual(
      b.bodies.map((m) => m.message.text),
      Array.from({ length: 50 }, (_, i) => `m${i}`),
    );
    assert.ok(b.batches.every((x) => x.length <= 7));
  } finally {
    await t.outputs.close();
    t.db.close();
  }
});

Deno.test("a full queue drops the oldest and counts them", async () => {
  const t = await setup([{
    name: "q",
    type: "http",
    url: "http://x.test",
    queue: { maxBytes: 2000 },
  }]);
  try {
    t.backends.get("q")!.down = "unavailable";
    for (let i = 0; i < 40; i++) t.outputs.reply(reply("a1", `m${i}`.padEnd(20, ".")), {});
    t.outputs.flush();
    const s = t.outputs.status()[0];
    assert.ok(s.bytes <= 2000, `${s.bytes} bytes kept`);
    assert.ok(s.dropped > 0 && s.dropped + s.queued === 40, JSON.stringify(s));
    const kept = t.queue.peek("q", 100).map((i) => JSON.parse(i.body).message.text);
    assert.equal(kept.at(-1), "m39".padEnd(20, "."), "the newest are kept");
  } finally {
    await t.outputs.close();
    t.db.close();
  }
});

Deno.test("refused messages go to the dead-letter file; the rest are delivered", async () => {
  const t = await setup([{ name: "h", type: "http", url: "http://x.test" }]);
  try {
    const b = t.backends.get("h")!;
    b.down = "rejected";
    t.outputs.reply(reply("a1", "bad"), {});
    t.outputs.reply(reply("a1", "good"), {});
    t.outputs.flush();
    // The dead-letter file is real I/O: give it real time (bounded).
    for (let i = 0; i < 50 && t.outputs.status()[0].queued > 0; i++) {
      await new Promise((r) => setTimeout(r, 10));
      await t.clock.advance(10);
    }
    assert.deepEqual(b.bodies.map((m) => m.message.text), ["good"]);
    const dead = (await Deno.readTextFile(`${t.deadLetterDir}/h.dead.jsonl`)).trim().split("\n")
      .map((l) => JSON.parse(l));
    assert.equal(dead.length, 1);
    assert.equal(dead[0].message.message.text, "bad");
    assert.match(dead[0].reason, /HTTP 400/);
    const s = t.outputs.status()[0];
    assert.equal(s.dead, 1);
    assert.equal(s.delivered, 1);
  } finally {
    await t.outputs.close();
    t.db.close();
  }
});

Deno.test("queued messages survive a restart and are delivered by the next pipeline", async () => {
  const path = `${await Deno.makeTempDir({ prefix: "jw-outq-" })}/server.db`;
  const db1 = openDatabase(path, serverMigrations);
  const first = await setup([{ name: "q", type: "http", url: "http://x.test" }], db1);
  first.backends.get("q")!.down = "unavailable";
  for (let i = 0; i < 10; i++) first.outputs.reply(reply("a1", `m${i}`), {});
  await settle(first.clock);
  await first.outputs.close();
  db1.close();
  const db2 = openDatabase(path, serverMigrations);
  const second = await setup([{ name: "q", type: "http", url: "http://x.test" }], db2);
  try {
    second.outputs.reply(reply("a1", "after"), {});
    await settle(second.clock);
    const bodies = second.backends.get("q")!.bodies;
    assert.deepEqual(bodies.map((m) => m.message.text), [
      ...Array.from({ length: 10 }, (_, i) => `m${i}`),
      "after",
    ]);
    const mids = bodies.map((m) => m.mid);
    assert.equal(new Set(mids).size, 11, "no id reused after the restart");
  } finally {
    await second.outputs.close();
    db2.close();
  }
});

Deno.test("a format script reshapes, drops and dead-letters what it throws on", async () => {
  const dir = await Deno.makeTempDir({ prefix: "jw-fmt-" });
  await Deno.writeTextFile(
    `${dir}/f.js`,
    `export default (m) => {
       if (m.message.text === "skip") return null;
       if (m.message.text === "boom") throw new Error("cannot");
       return { line: m.message.text, from: m.agent };
     };`,
  );
  const t = await setup([{ name: "f", type: "http", url: "http://x.test", format: `${dir}/f.js` }]);
  try {
    for (const text of ["a", "skip", "boom", "b"]) t.outputs.reply(reply("a1", text), {});
    t.outputs.flush();
    for (let i = 0; i < 20 && t.outputs.status()[0].queued > 0; i++) {
      await new Promise((r) => setTimeout(r, 20));
      await t.clock.advance(10);
    }
    const bodies = t.backends.get("f")!.bodies;
    assert.deepEqual(bodies.map((m) => [m.line, m.from]), [["a", "a1"], ["b", "a1"]]);
    assert.ok(bodies.every((m) => typeof m.mid === "string"), "mid kept for de-duplication");
    const s = t.outputs.status()[0];
    assert.deepEqual([s.delivered, s.filtered, s.dead], [2, 1, 1]);
    const dead = JSON.parse((await Deno.readTextFile(`${t.deadLetterDir}/f.dead.jsonl`)).trim());
    assert.equal(dead.message.message.text, "boom", "dead-lettered unformatted");
    assert.match(dead.reason, /cannot/);
  } finally {
    await t.outputs.close();
    t.db.close();
  }
});

/** A backend that lets two sends overlap and settles each only when told. */
class OverlappingBackend implements Backend {
  readonly window = 2;
  readonly calls: {
    seqs: number[];
    after?: number;
    resolve: () => void;
    reject: (e: Error) => void;
  }[] = [];
  constructor(readonly name: string) {}
  send(batch: readonly OutboxItem[], after?: number): Promise<void> {
    return new Promise((resolve, reject) =>
      this.calls.push({ seqs: batch.map((i) => i.seq), after, resolve, reject })
    );
  }
  close() {
    return Promise.resolve();
  }
}

Deno.test("a backend with a window of 2 gets the next batch early; a failure resends what followed", async () => {
  const t = await setup(
    [{ name: "w", type: "http", url: "http://x.test", queue: { batch: 2 } }],
    undefined,
    (name) => new OverlappingBackend(name),
  );
  const turns = async () => {
    for (let i = 0; i < 5; i++) await new Promise((r) => setTimeout(r, 0));
  };
  try {
    for (let i = 1; i <= 8; i++) t.outputs.reply(reply("a1", `m${i}`), {});
    t.outputs.flush();
    await turns();
    const b = t.backends.get("w")!;
    const seqs = () => b.calls.map((c) => c.seqs);
    assert.deepEqual(seqs(), [[1, 2], [3, 4]], "two batches in flight, no more");
    assert.deepEqual(b.calls.map((c) => c.after), [0, 2], "each says which batch it follows");
    // The second confirms first: nothing is forgotten until the first did.
    b.calls[1].resolve();
    await turns();
    assert.equal(t.outputs.status()[0].queued, 8);
    b.calls[0].resolve();
    await turns();
    assert.equal(t.outputs.status()[0].queued, 4, "both batches forgotten, in order");
    assert.deepEqual(seqs().slice(2), [[5, 6], [7, 8]]);
    // [5, 6] fails while [7, 8] succeeds: both go again, [5, 6] first.
    b.calls[3].resolve();
    b.calls[2].reject(new JwError("unavailable", "broker gone"));
    await turns();
    let s = t.outputs.status()[0];
    assert.deepEqual([s.state, s.queued, s.delivered, s.failed], ["retrying", 4, 4, 1]);
    assert.equal(b.calls.length, 4, "nothing sent during the backoff");
    await t.clock.advance(1_000);
    await turns();
    assert.deepEqual(seqs().slice(4), [[5, 6], [7, 8]]);
    assert.deepEqual(b.calls.slice(4).map((c) => c.after), [0, 6], "a new run from the oldest");
    b.calls[4].resolve();
    b.calls[5].resolve();
    await turns();
    s = t.outputs.status()[0];
    assert.deepEqual([s.queued, s.delivered, s.failed], [0, 8, 1]);
  } finally {
    await t.outputs.close();
    t.db.close();
  }
});
