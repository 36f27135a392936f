import assert from "node:assert/strict";
import { retransmitLimit, TransmitLimitedQueue } from "./broadcast.ts";

const bytes = (s: string) => new TextEncoder().encode(s);
const text = (msgs: Uint8Array[]) => msgs.map((m) => new TextDecoder().decode(m));

Deno.test("retransmitLimit() is retransmitMult * ceil(log10(n + 1))", () => {
  assert.equal(retransmitLimit(4, 1), 4);
  assert.equal(retransmitLimit(4, 9), 4);
  assert.equal(retransmitLimit(4, 10), 8);
  assert.equal(retransmitLimit(4, 99), 8);
  assert.equal(retransmitLimit(4, 100), 12);
  assert.equal(retransmitLimit(3, 50), 6);
});

Deno.test("TransmitLimitedQueue sends each broadcast its limit, then finishes it", () => {
  const q = new TransmitLimitedQueue({ retransmitMult: 2, numNodes: () => 5 });
  let finished = 0;
  q.queue({ key: "a", message: bytes("a1"), finished: () => finished++ });
  for (let i = 0; i < 2; i++) assert.deepEqual(text(q.getBroadcasts(2, 100)), ["a1"]);
  assert.equal(finished, 1);
  assert.equal(q.length, 0);
  assert.deepEqual(q.getBroadcasts(2, 100), []);
});

Deno.test("TransmitLimitedQueue: least-sent first, newest first among equals", () => {
  const q = new TransmitLimitedQueue({ retransmitMult: 3, numNodes: () => 5 });
  q.queue({ key: "a", message: bytes("a") });
  q.queue({ key: "b", message: bytes("b") });
  assert.deepEqual(text(q.getBroadcasts(0, 1)), ["b"]);
  q.queue({ key: "c", message: bytes("c") });
  // a and c are unsent (c newer), b was sent once.
  assert.deepEqual(text(q.getBroadcasts(0, 100)), ["c", "a", "b"]);
});

Deno.test("TransmitLimitedQueue: a newer broadcast about a node replaces older ones", () => {
  const q = new TransmitLimitedQueue({ retransmitMult: 3, numNodes: () => 5 });
  const done: string[] = [];
  q.queue({ key: "n1", message: bytes("suspect n1"), finished: () => done.push("suspect") });
  q.queue({ message: bytes("user 1") });
  q.queue({ message: bytes("user 2") });
  q.queue({ key: "n1", message: bytes("alive n1") });
  assert.deepEqual(done, ["suspect"]);
  assert.deepEqual(text(q.getBroadcasts(0, 100)).sort(), ["alive n1", "user 1", "user 2"]);
});

Deno.test("TransmitLimitedQueue.getBroadcasts() fills up to the byte limit and count", () => {
  const q = new TransmitLimitedQueue({ retransmitMult: 3, numNodes: () => 5 });
  q.queue({ message: new Uint8Array(50) });
  q.queue({ message: new Uint8Array(30) });
  q.queue({ message: new Uint8Array(10) });
  // Newest first: 10 + 3, 30 + 3 = 46; the 50 does not fit in 60 bytes.
  const got = q.getBroadcasts(3, 60);
  assert.deepEqual(got.map((m) => m.length), [10, 30]);
  assert.ok(got.reduce((s, m) => s + m.length + 3, 0) <= 60);
  assert.deepEqual(q.getBroadcasts(3, 1000, 1).map((m) => m.length), [50]);
  assert.deepEqual(q.getBroadcasts(3, 2), []);
});

Deno.test("TransmitLimitedQueue skips broadcasts not meant for the destination", () => {
  const q = new TransmitLimitedQueue({ retransmitMult: 1, numNodes: () => 1 });
  q.queue({ key: "n1", notFor: "n1", message: bytes("alive n1") });
  q.queue({ key: "n2", message: bytes("suspect n2") });
  assert.deepEqual(text(q.getBroadcasts(0, 100, Infinity, "n1")), ["suspect n2"]);
  assert.deepEqual(text(q.getBroadcasts(0, 100, Infinity, "n2")), ["alive n1"]);
  assert.equal(q.length, 0);
});

Deno.test("TransmitLimitedQueue.prune() and reset() finish what they drop", () => {
  const q = new TransmitLimitedQueue({ retransmitMult: 3, numNodes: () => 5 });
  const done: string[] = [];
  for (const k of ["a", "b", "c"]) {
    q.queue({
      key: k,
      message: bytes(k),
      finished: () => done.push(k),
    });
  }
  q.prune(2);
  assert.deepEqual(done, ["a"]);
  assert.equal(q.length, 2);
  q.reset();
  assert.deepEqual(done.sort(), ["a", "b", "c"]);
  assert.equal(q.length, 0);
});

Deno.test("TransmitLimitedQueue asks for the cluster size each time", () => {
  let n = 5;
  const q = new TransmitLimitedQueue({ retransmitMult: 1, numNodes: () => n });
  q.queue({ message: bytes("x") });
  n = 50; // limit 2 now
  assert.equal(q.getBroadcasts(0, 100).length, 1);
  assert.equal(q.length, 1);
  assert.equal(q.getBroadcasts(0, 100).length, 1);
  assert.equal(q.length, 0);
});
