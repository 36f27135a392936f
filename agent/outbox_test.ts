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

function rows(db: DatabaseSync): number {
  return (db.prepare("SELECT COUNT(*) AS n FROM outbox").get() as { n: number }).n;
}

Deno.test("Outbox.deliver() sends at once while connected and stores while not", async () => {
  using db = handle(openAgentDatabase(":memory:"));
  const wire = new Wire();
  const { outbox: box } = outbox(db.db, wire);
  wire.up = true;
  box.deliver(frame(0));
  assert.deepEqual(wire.texts, ["0"]);
  assert.equal(rows(db.db), 0);
  wire.up = false;
  for (let i = 1; i <= 3; i++) box.deliver(frame(i));
  assert.equal(box.size, 3);
  assert.equal(rows(db.db), 3);
  wire.up = true;
  assert.equal(await box.drain(), 3);
  assert.deepEqual(wire.texts, ["0", "1", "2", "3"]);
  assert.equal(box.size, 0);
  assert.equal(rows(db.db), 0, "sent rows are deleted");
});

Deno.test("Outbox drops the oldest frames past maxFrames and warns first on the next drain", async () => {
  using db = handle(openAgentDatabase(":memory:"));
  const wire = new Wire();
  const { outbox: box, lines, clock } = outbox(db.db, wire, { maxFrames: 3 });
  for (let i = 0; i < 10; i++) box.deliver(frame(i));
  assert.equal(box.size, 3);
  assert.equal(box.dropped, 7);
  assert.equal(rows(db.db), 3);
  assert.equal(lines.filter((l) => l.includes("outbox full")).length, 1, "one warning per fill");
  wire.up = true;
  assert.equal(await box.drain(), 3);
  assert.deepEqual(wire.texts, ["log:7", "7", "8", "9"]);
  const warning = wire.sent[0];
  assert.ok(LogSchema.safeParse(warning).success, JSON.stringify(warning));
  assert.deepEqual(warning, {
    v: 1,
    id: "env-7",
    type: "log",
    job: { id: "agent", key: "agent.outbox" },
    seq: 0,
    ts: clock.now(),
    level: "warn",
    message:
      "7 replies were dropped while disconnected: the outbox keeps at most 3 frames (outbox.maxFrames)",
    fields: { dropped: 7, maxFrames: 3 },
  });
  assert.equal(box.dropped, 0);
  wire.up = false;
  box.deliver(frame(10));
  wire.up = true;
  await box.drain();
  assert.deepEqual(wire.texts.slice(4), ["10"], "no second warning");
});

Deno.test("Outbox keeps frames and the drop count across a restart", async () => {
  const dir = await Deno.makeTempDir({ prefix: "jw-outbox-test-" });
  try {
    {
      using db = handle(openAgentDatabase(dir));
      const { outbox: box } = outbox(db.db, new Wire(), { maxFrames: 4 });
      for (let i = 0; i < 6; i++) box.deliver(frame(i));
      box.close();
    }
    using db = handle(openAgentDatabase(dir));
    const wire = new Wire();
    const { outbox: box } = outbox(db.db, wire, { maxFrames: 4 });
    assert.equal(box.size, 4);
    assert.equal(box.dropped, 2);
    wire.up = true;
    await box.drain();
    assert.deepEqual(wire.texts, ["log:2", "2", "3", "4", "5"]);
    assert.equal(rows(db.db), 0);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("Outbox.drain() stops at a refused frame and resumes there, without duplicates", async () => {
  using db = handle(openAgentDatabase(":memory:"));
  const wire = new Wire();
  const { outbox: box, clock } = outbox(db.db, wire, { chunk: 4 });
  for (let i = 0; i < 10; i++) box.deliver(frame(i));
  wire.up = true;
  wire.budget = 3;
  assert.equal(await box.drain(), 3);
  assert.equal(box.size, 7);
  assert.equal(rows(db.db), 7);
  box.deliver(frame(10));
  assert.equal(box.size, 8, "stored behind the waiting frames");
  wire.up = true;
  wire.budget = Infinity;
  const drained = box.drain();
  await clock.advance(0);
  assert.equal(await drained, 8);
  assert.deepEqual(wire.texts, Array.from({ length: 11 }, (_, i) => `${i}`));
});

Deno.test("Outbox.drain() sends chunk by chunk; replies made meanwhile queue behind", async () => {
  using db = handle(openAgentDatabase(":memory:"));
  const wire = new Wire();
  const { outbox: box, clock } = outbox(db.db, wire, { chunk: 2 });
  for (let i = 0; i < 5; i++) box.deliver(frame(i));
  wire.up = true;
  const drained = box.drain();
  assert.deepEqual(wire.texts, ["0", "1"], "the first chunk goes at once");
  assert.equal(rows(db.db), 3, "and its rows are gone");
  assert.equal(box.drain(), drained, "a second drain joins the first");
  box.deliver(frame("new"));
  assert.deepEqual(wire.texts, ["0", "1"], "a new reply waits its turn");
  await clock.advance(0);
  assert.equal(await drained, 6);
  assert.deepEqual(wire.texts, ["0", "1", "2", "3", "4", "new"]);
  box.deliver(frame("direct"));
  assert.equal(wire.texts.at(-1), "direct", "sent at once once nothing waits");
  assert.equal(clock.pending, 0);
});

Deno.test("Outbox.close() stops a drain between chunks; the rest stays stored", async () => {
  using db = handle(openAgentDatabase(":memory:"));
  const wire = new Wire();
  const { outbox: box, clock } = outbox(db.db, wire, { chunk: 2 });
  for (let i = 0; i < 5; i++) box.deliver(frame(i));
  wire.up = true;
  const drained = box.drain();
  box.close();
  assert.equal(await drained, 2);
  assert.equal(rows(db.db), 3);
  assert.equal(clock.pending, 0);
  wire.up = false;
  box.deliver(frame(9));
  assert.equal(rows(db.db), 3, "after close, a reply that cannot be sent is dropped");
});

/** `using` for a database handle. */
function handle(db: DatabaseSync): { db: DatabaseSync } & Disposable {
  return { db, [Symbol.dispose]: () => db.close() };
}
