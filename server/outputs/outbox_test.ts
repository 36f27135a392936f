import assert from "node:assert/strict";
import { openDatabase } from "../../shared/db/mod.ts";
import { serverMigrations } from "../db.ts";
import { type NewItem, OutputQueue } from "./outbox.ts";

const WEB = { role: "web" };
const DB = { role: "db" };

function items(q: OutputQueue, n: number, fields: Partial<NewItem> = {}): NewItem[] {
  return Array.from({ length: n }, (_, i) => {
    const mid = q.newMid();
    return {
      mid,
      type: "output" as const,
      agent: i % 2 ? "a2" : "a1",
      key: "exec.run",
      tags: i % 2 ? DB : WEB,
      body: JSON.stringify({ n: String(i).padStart(4, "0"), pad: "x".repeat(10) }),
      ...fields,
    };
  });
}

const fresh = () => {
  const db = openDatabase(":memory:", serverMigrations);
  return { db, q: new OutputQueue(db, "s1") };
};

Deno.test("outbox: messages come back in order, with their fields, a batch per chunk", () => {
  const { db, q } = fresh();
  const put = items(q, 7);
  q.put("o", put, 1 << 20, 3);
  assert.equal(db.prepare("SELECT count(*) AS n FROM output_chunks").get()!.n, 3, "3 + 3 + 1");
  const first = q.peek("o", 3);
  assert.deepEqual(first.map((i) => i.mid), put.slice(0, 3).map((i) => i.mid));
  assert.deepEqual(first[1], { ...put[1], seq: first[1].seq });
  assert.deepEqual(first.map((i) => i.tags), [WEB, DB, WEB]);
  // Whole chunks only: a limit of 5 gives the first chunk (3), not half of the second.
  assert.equal(q.peek("o", 5).length, 3);
  assert.equal(q.peek("o", 6).length, 6);
  const rest = q.peek("o", 10, first[2].seq);
  assert.deepEqual(rest.map((i) => i.mid), put.slice(3).map((i) => i.mid));
  assert.ok(rest.every((i, n) => n === 0 || i.seq > rest[n - 1].seq), "seq increases");
  q.done("o", first[2].seq, { delivered: 3 }, 1000);
  const c = q.counters("o");
  assert.deepEqual([c.queued, c.delivered, c.lastDeliveredAt], [4, 3, 1000]);
  assert.equal(c.bytes, put.slice(3).reduce((n, i) => n + i.body.length, 0));
  assert.deepEqual(q.peek("o", 10).map((i) => i.mid), put.slice(3).map((i) => i.mid));
  db.close();
});

Deno.test("outbox: outputs are separate queues", () => {
  const { db, q } = fresh();
  q.put("a", items(q, 2), 1 << 20);
  q.put("b", items(q, 3), 1 << 20);
  assert.equal(q.peek("a", 10).length, 2);
  assert.equal(q.peek("b", 10).length, 3);
  q.done("b", q.peek("b", 10)[2].seq, { delivered: 3 }, 1);
  assert.deepEqual([q.counters("a").queued, q.counters("b").queued], [2, 0]);
  db.close();
});

Deno.test("outbox: forgetting single messages keeps the rest, including a chunk's last", () => {
  const { db, q } = fresh();
  const put = items(q, 6);
  q.put("o", put, 1 << 20, 3);
  const all = q.peek("o", 10);
  // The second message of chunk one, and the last of chunk two.
  q.forget("o", [all[1].seq, all[5].seq], { dead: 2 });
  const left = q.peek("o", 10);
  assert.deepEqual(left.map((i) => i.mid), [0, 2, 3, 4].map((n) => put[n].mid));
  assert.deepEqual([q.counters("o").queued, q.counters("o").dead], [4, 2]);
  // Done up to the last message left: nothing stays behind in the rewritten chunk.
  q.done("o", left[3].seq, { delivered: 4 }, 1);
  assert.equal(q.counters("o").queued, 0);
  assert.equal(db.prepare("SELECT count(*) AS n FROM output_chunks").get()!.n, 0);
  db.close();
});

Deno.test("outbox: over maxBytes exactly the oldest messages go, across and inside chunks", () => {
  const { db, q } = fresh();
  const put = items(q, 10);
  const size = put[0].body.length;
  assert.ok(put.every((i) => i.body.length === size));
  // Room for 6.5 messages: the 4 oldest are dropped (a whole chunk of 3, one of the next).
  const dropped = q.put("o", put, Math.floor(size * 6.5), 3);
  assert.equal(dropped, 4);
  const c = q.counters("o");
  assert.deepEqual([c.queued, c.dropped, c.bytes], [6, 4, size * 6]);
  assert.deepEqual(q.peek("o", 100).map((i) => i.mid), put.slice(4).map((i) => i.mid));
  // A message larger than the bound on its own takes everything with it.
  assert.equal(
    q.put("o", items(q, 1, { body: JSON.stringify({ big: "y".repeat(size * 8) }) }), size * 7),
    7,
  );
  assert.equal(q.counters("o").queued, 0);
  db.close();
});

Deno.test("outbox: a body holding a raw U+0001 is stored with it escaped", () => {
  const { db, q } = fresh();
  // Not valid JSON (a raw control character in a string); agents' frames never are.
  const raw = '{"text":"a' + String.fromCharCode(1) + 'b"}';
  q.put("o", [...items(q, 1), ...items(q, 1, { body: raw }), ...items(q, 1)], 1 << 20);
  const got = q.peek("o", 10);
  assert.equal(got.length, 3, "the chunk still splits into three");
  assert.deepEqual(JSON.parse(got[1].body), { text: "a\u0001b" });
  db.close();
});

Deno.test("outbox: a restart finds the queue, its counters, and goes on numbering", () => {
  const path = Deno.makeTempFileSync({ suffix: ".db" });
  try {
    const db1 = openDatabase(path, serverMigrations);
    const q1 = new OutputQueue(db1, "s1");
    q1.put("o", items(q1, 5), 1 << 20, 2);
    const lastSeq = q1.peek("o", 10).at(-1)!.seq;
    db1.close();
    const db2 = openDatabase(path, serverMigrations);
    const q2 = new OutputQueue(db2, "s1");
    assert.equal(q2.counters("o").queued, 5);
    q2.put("o", items(q2, 1), 1 << 20);
    const all = q2.peek("o", 10);
    assert.equal(all.length, 6);
    assert.ok(all[5].seq > lastSeq, "positions keep increasing");
    db2.close();
  } finally {
    Deno.removeSync(path);
  }
});

Deno.test("outbox: messages queued one row each by an older server become chunks in order", () => {
  const bodies = ['{"n":1}', '{"n":2,"t":"grüße"}', '{"n":3}'];
  // Written by the previous schema, then opened by this version: the migration runs.
  const path = Deno.makeTempFileSync({ suffix: ".db" });
  try {
    const old = openDatabase(path, serverMigrations.slice(0, -1));
    bodies.forEach((b, n) =>
      old.prepare(
        `INSERT INTO output_queue (output, mid, type, agent, key, tags, body, bytes)
         VALUES (?, ?, ?, ?, ?, ?, ?, ?)`,
      ).run("o", `s1-${n}`, "log", n === 2 ? null : "a1", null, '{"zone":"eu"}', b, b.length)
    );
    old.close();
    const db2 = openDatabase(path, serverMigrations);
    const q = new OutputQueue(db2, "s1");
    const got = q.peek("o", 10);
    assert.deepEqual(got.map((i) => i.body), bodies);
    assert.deepEqual(got.map((i) => i.mid), ["s1-0", "s1-1", "s1-2"]);
    assert.deepEqual(got.map((i) => i.agent), ["a1", "a1", null]);
    assert.deepEqual(got[0].tags, { zone: "eu" });
    assert.equal(q.counters("o").queued, 3);
    q.done("o", got[2].seq, { delivered: 3 }, 1);
    assert.equal(q.counters("o").queued, 0);
    db2.close();
  } finally {
    Deno.removeSync(path);
  }
});
