import assert from "node:assert/strict";
import { FakeClock } from "../shared/clock.ts";
import type { DatabaseSync } from "../shared/db/mod.ts";
import { createLogger } from "../shared/log.ts";
import { type AgentFrame, Log as LogSchema, type Output } from "../shared/protocol/mod.ts";
import { seededRandom } from "../shared/random.ts";
import { openAgentDatabase } from "./db.ts";
import { createOutbox, type Outbox, type OutboxOptions } from "./outbox.ts";

/** A socket stand-in: takes frames while `up`, else refuses them. */
class Wire {
  up = false;
  /** Refuse after this many more frames (then `up` turns false). */
  budget = Infinity;
  readonly sent: AgentFrame[] = [];
  send = (frame: AgentFrame): boolean => {
    if (!this.up || this.budget <= 0) {
      this.up = false;
      return false;
    }
    this.budget--;
    this.sent.push(frame);
    return true;
  };
  /** What was sent: the `text` of outputs, `log:N` for drop warnings. */
  get texts(): string[] {
    return this.sent.map((f) =>
      f.type === "log" ? `log:${(f.fields as { dropped: number }).dropped}` : (f as Output).text!
    );
  }
  /** The `dseq` of each sent output. */
  get dseqs(): (number | undefined)[] {
    return this.sent.filter((f) => f.type === "output").map((f) => (f as Output).dseq);
  }
}

function frame(n: number | string): Output {
  return {
    v: 1,
    id: `env-${n}`,
    type: "output",
    job: { id: "j", key: "exec.run" },
    run: "r-1",
    seq: typeof n === "number" ? n : 0,
    ts: 0,
    text: `${n}`,
  };
}

function outbox(
  db: DatabaseSync,
  wire: Wire,
  over: Partial<OutboxOptions> = {},
): { outbox: Outbox; clock: FakeClock; lines: string[] } {
  const clock = new FakeClock();
  const lines: string[] = [];
  const box = createOutbox({
    db,
    maxFrames: 10_000,
    send: wire.send,
    clock,
    random: seededRandom(7),
    logger: createLogger("t", { sink: (l) => lines.push(l) }),
    ...over,
  });
  return { outbox: box, clock, lines };
}

/** Runs `fn` with a fresh in-memory agent database, closed afterwards. */
async function withDb(fn: (db: DatabaseSync) => void | Promise<void>): Promise<void> {
  const db = openAgentDatabase(":memory:");
  try {
    await fn(db);
  } finally {
    db.close();
  }
}

function rows(db: DatabaseSync): number {
  return (db.prepare("SELECT COUNT(*) AS n FROM outbox").get() as { n: number }).n;
}

Deno.test("Outbox stores every reply, sends it with its dseq once live, and forgets it on ack", () =>
  withDb(async (db) => {
    const wire = new Wire();
    const { outbox: box } = outbox(db, wire);
    box.deliver(frame(1));
    box.deliver(frame(2));
    assert.deepEqual(wire.sent, [], "not live before a drain");
    assert.equal(box.size, 2);
    wire.up = true;
    assert.equal(await box.drain(), 2);
    box.deliver(frame(3));
    assert.deepEqual(wire.texts, ["1", "2", "3"]);
    assert.deepEqual(wire.dseqs, [1, 2, 3]);
    assert.equal(rows(db), 3, "kept until acknowledged");
    box.ack(2);
    assert.equal(box.size, 1);
    assert.equal(rows(db), 1);
    box.ack(3);
    assert.equal(box.size, 0);
    box.close();
  }));

Deno.test("Outbox resends what the server never acknowledged after a reconnect, with the same dseq", () =>
  withDb(async (db) => {
    const wire = new Wire();
    wire.up = true;
    const { outbox: box } = outbox(db, wire);
    await box.drain();
    for (const n of [1, 2, 3]) box.deliver(frame(n));
    box.ack(1);
    // The connection dies silently: 2 and 3 were written to a dead socket.
    box.disconnected();
    box.deliver(frame(4));
    assert.deepEqual(wire.texts, ["1", "2", "3"]);
    await box.drain();
    assert.deepEqual(wire.texts, ["1", "2", "3", "2", "3", "4"]);
    assert.deepEqual(
      wire.dseqs,
      [1, 2, 3, 2, 3, 4],
      "a resend keeps its dseq so the server can drop it",
    );
    box.close();
  }));

Deno.test("Outbox drops the oldest frames past maxFrames and warns first on the next drain", () =>
  withDb(async (db) => {
    const wire = new Wire();
    const { outbox: box, lines } = outbox(db, wire, { maxFrames: 3 });
    for (let i = 1; i <= 10; i++) box.deliver(frame(i));
    assert.equal(box.size, 3);
    assert.equal(box.dropped, 7);
    assert.equal(lines.filter((l) => l.includes("outbox full")).length, 1, "warned once");
    wire.up = true;
    assert.equal(await box.drain(), 3);
    assert.deepEqual(wire.texts, ["log:7", "8", "9", "10"]);
    const warning = LogSchema.parse(wire.sent[0]);
    assert.equal(warning.level, "warn");
    assert.deepEqual(warning.job, { id: "agent", key: "agent.outbox" });
    assert.match(warning.id, /^o-/, "its own envelope id, not an operator's");
    assert.equal(box.dropped, 0);
    box.close();
  }));

Deno.test("Outbox keeps frames, the drop count and its stream id across a restart", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const wire = new Wire();
    const db1 = openAgentDatabase(dir);
    const first = outbox(db1, wire, { maxFrames: 2 }).outbox;
    for (let i = 1; i <= 3; i++) first.deliver(frame(i));
    const stream = first.stream;
    assert.match(stream, /^o[0-9a-z]+$/);
    first.close();
    db1.close();
    const db2 = openAgentDatabase(dir);
    const second = outbox(db2, wire, { maxFrames: 2 }).outbox;
    assert.equal(second.size, 2);
    assert.equal(second.dropped, 1);
    assert.equal(second.stream, stream);
    wire.up = true;
    await second.drain();
    assert.deepEqual(wire.texts, ["log:1", "2", "3"]);
    assert.deepEqual(wire.dseqs, [2, 3]);
    second.close();
    db2.close();
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("Outbox.drain() stops at a refused frame; the next drain starts over from the oldest", () =>
  withDb(async (db) => {
    const wire = new Wire();
    const { outbox: box } = outbox(db, wire);
    for (let i = 1; i <= 5; i++) box.deliver(frame(i));
    wire.up = true;
    wire.budget = 2;
    assert.equal(await box.drain(), 2);
    box.deliver(frame(6));
    assert.deepEqual(wire.texts, ["1", "2"], "not live after a refused frame");
    wire.up = true;
    wire.budget = Infinity;
    box.ack(2);
    assert.equal(await box.drain(), 4);
    assert.deepEqual(wire.texts, ["1", "2", "3", "4", "5", "6"]);
    box.close();
  }));

Deno.test("Outbox.drain() sends chunk by chunk; replies made meanwhile queue behind, in order", () =>
  withDb(async (db) => {
    const wire = new Wire();
    const { outbox: box, clock } = outbox(db, wire, { chunk: 2 });
    for (let i = 1; i <= 5; i++) box.deliver(frame(i));
    wire.up = true;
    const drained = box.drain();
    assert.deepEqual(wire.texts, ["1", "2"]);
    box.deliver(frame(6));
    assert.deepEqual(wire.texts, ["1", "2"], "a new reply waits behind the stored ones");
    await clock.advance(0);
    await clock.advance(0);
    await clock.advance(0);
    assert.equal(await drained, 6);
    box.deliver(frame(7));
    assert.deepEqual(wire.texts, ["1", "2", "3", "4", "5", "6", "7"]);
    assert.deepEqual(wire.dseqs, [1, 2, 3, 4, 5, 6, 7]);
    box.close();
  }));

Deno.test("Outbox.close() stops a drain between chunks; the rest stays stored", () =>
  withDb(async (db) => {
    const wire = new Wire();
    const { outbox: box } = outbox(db, wire, { chunk: 2 });
    for (let i = 1; i <= 5; i++) box.deliver(frame(i));
    wire.up = true;
    const drained = box.drain();
    box.close();
    assert.equal(await drained, 2);
    assert.equal(rows(db), 5, "nothing is forgotten without an ack");
    box.deliver(frame(6));
    assert.equal(rows(db), 5, "closed: later replies are not stored");
  }));

Deno.test("Outbox drops the oldest frames past maxSize characters of JSON, and tracks acks", () =>
  withDb(async (db) => {
    const wire = new Wire();
    const size = JSON.stringify(frame(1)).length;
    const { outbox: box } = outbox(db, wire, { maxSize: size * 3 });
    for (let i = 1; i <= 5; i++) box.deliver(frame(i));
    assert.equal(box.size, 3);
    assert.equal(box.dropped, 2);
    wire.up = true;
    await box.drain();
    assert.deepEqual(wire.texts, ["log:2", "3", "4", "5"]);
    box.ack(5);
    assert.equal(box.size, 0);
    // After the ack the budget is free again: three more fit without drops.
    for (let i = 6; i <= 8; i++) box.deliver(frame(i));
    assert.equal(box.dropped, 0);
    box.close();
  }));

Deno.test("Outbox.drain() on a new connection stops a drain still going and starts over", () =>
  withDb(async (db) => {
    const wire = new Wire();
    const { outbox: box, clock } = outbox(db, wire, { chunk: 2 });
    for (let i = 1; i <= 5; i++) box.deliver(frame(i));
    wire.up = true;
    const first = box.drain(); // sends 1, 2, then yields
    box.disconnected();
    const second = box.drain(); // a new welcome: from the oldest row again
    await clock.advance(0);
    await clock.advance(0);
    await clock.advance(0);
    assert.equal(await first, 2);
    assert.equal(await second, 5);
    assert.deepEqual(wire.texts, ["1", "2", "1", "2", "3", "4", "5"]);
    assert.equal(clock.pending, 0, "no yield timer left behind");
    box.close();
  }));

Deno.test("Outbox drops a single reply larger than maxSize instead of emptying itself", () =>
  withDb((db) => {
    const wire = new Wire();
    const { outbox: box } = outbox(db, wire, { maxSize: 1000 });
    box.deliver(frame(1));
    box.deliver({ ...frame(2), text: "é".repeat(600) }); // 1200 bytes of UTF-8
    assert.equal(box.size, 1, "the earlier reply stays");
    assert.equal(box.dropped, 1);
    box.close();
  }));

Deno.test("Outbox drops replies that exceed the server's frame limit instead of resending them forever", () =>
  withDb(async (db) => {
    const wire = new Wire();
    const { outbox: box } = outbox(db, wire);
    box.deliver(frame(1));
    box.deliver({ ...frame(2), text: "x".repeat(500) });
    box.deliver(frame(3));
    wire.up = true;
    box.limitFrames(400); // the welcome says: at most 400 bytes
    await box.drain();
    assert.deepEqual(wire.texts, ["1", "3"], "the oversized stored reply is dropped, not sent");
    assert.equal(box.size, 2, "the others wait for their ack");
    box.deliver({ ...frame(4), text: "y".repeat(500) });
    assert.equal(box.size, 2, "a new oversized reply is not stored");
    await box.drain();
    assert.deepEqual(wire.texts, ["1", "3", "log:2", "1", "3"]);
    box.close();
  }));
