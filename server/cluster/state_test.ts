import assert from "node:assert/strict";
import { type Clock, FakeClock } from "../../shared/clock.ts";
import { isJwError } from "../../shared/errors.ts";
import { encode } from "@msgpack/msgpack";
import {
  type AgentRecord,
  compareHlc,
  decodeRecords,
  encodeRecords,
  packState,
  ReplicatedState,
  type StateChange,
  type StateRecord,
  unpackState,
} from "./state.ts";

const agent = (id: string, server: string, connected = true): AgentRecord => ({
  id,
  key: { x: "x".repeat(43), kid: "k".repeat(43) },
  server,
  tags: { role: "web" },
  connected,
  lastSeen: 1,
});

/** A clock whose time the test sets directly (it may go backwards). */
class SetClock implements Clock {
  constructor(public t: number) {}
  now = () => this.t;
  setTimeout = () => 0;
  clearTimeout = () => {};
  sleep = () => Promise.resolve();
}

Deno.test("ReplicatedState keeps values by kind and id and reports local changes", () => {
  const s = new ReplicatedState({ node: "s1", clock: new FakeClock() });
  const changes: StateChange[] = [];
  s.onChange((c) => changes.push(c));
  s.set("agent", "a1", agent("a1", "s1"));
  s.set("agent", "a1", agent("a1", "s1", false));
  s.set("server", "s1", { id: "s1", gossip: "127.0.0.1:7401", url: "http://x", health: 0 });
  assert.equal(s.get("agent", "a1")?.connected, false);
  assert.deepEqual(s.list("server").map((v) => v.id), ["s1"]);
  assert.deepEqual(changes.map((c) => [c.kind, c.id, c.remote, c.previous === null]), [
    ["agent", "a1", false, true],
    ["agent", "a1", false, false],
    ["server", "s1", false, true],
  ]);
  assert.throws(
    // deno-lint-ignore no-explicit-any
    () => s.set("agent", "a2", { id: "a2" } as any),
    (e) => isJwError(e, "invalid_message") && /bad agent record a2/.test(e.message),
  );
});

Deno.test("stamps only move forward, even when the wall clock goes back", () => {
  const clock = new SetClock(10_000);
  const s = new ReplicatedState({ node: "s1", clock });
  const a = s.set("agent", "a1", agent("a1", "s1")).version;
  clock.t = 5_000;
  const b = s.set("agent", "a1", agent("a1", "s1", false)).version;
  const c = s.set("agent", "a1", agent("a1", "s1")).version;
  assert.ok(compareHlc(a, b) < 0 && compareHlc(b, c) < 0);
  assert.equal(b.wall, 10_000);
  assert.equal(c.logical, b.logical + 1);
});

Deno.test("replicas converge whatever order records arrive in; ties break by server id", () => {
  const clock = new FakeClock();
  const writers = ["s1", "s2", "s3"].map((node) => new ReplicatedState({ node, clock }));
  const written: StateRecord[] = [];
  for (let i = 0; i < 60; i++) {
    const w = writers[i % 3];
    const id = `a${i % 7}`;
    // Same wall time for every write of a round: ties between servers are common.
    written.push(i % 11 === 0 ? w.set("agent", id, null) : w.set("agent", id, agent(id, `s${i}`)));
  }
  let seed = 7;
  const shuffled = () => {
    const copy = [...written];
    for (let i = copy.length - 1; i > 0; i--) {
      seed = (seed * 1103515245 + 12345) % 2 ** 31;
      const j = seed % (i + 1);
      [copy[i], copy[j]] = [copy[j], copy[i]];
    }
    return copy;
  };
  const replicas = [written, [...written].reverse(), shuffled(), shuffled()].map((order, n) => {
    const r = new ReplicatedState({ node: `r${n}`, clock });
    r.mergeAll(order);
    return r;
  });
  const view = (r: ReplicatedState) =>
    JSON.stringify(
      r.snapshot().map((x) => [x.id, x.value && (x.value as AgentRecord).server, x.version])
        .sort(),
    );
  for (const r of replicas.slice(1)) assert.equal(view(r), view(replicas[0]));
  // The winner of each id is the record with the greatest stamp.
  for (const id of new Set(written.map((w) => w.id))) {
    const newest = written.filter((w) => w.id === id).sort((a, b) =>
      compareHlc(a.version, b.version)
    ).at(-1)!;
    assert.deepEqual(replicas[2].get("agent", id) ?? null, newest.value);
  }
});

Deno.test("a tombstone beats older values and is forgotten after its TTL", async () => {
  const clock = new FakeClock();
  const a = new ReplicatedState({ node: "s1", clock, tombstoneTtlMs: 60_000 });
  const b = new ReplicatedState({ node: "s2", clock, tombstoneTtlMs: 60_000 });
  const old = a.set("agent", "a1", agent("a1", "s1"));
  await clock.advance(1);
  const gone = a.set("agent", "a1", null);
  assert.equal(b.merge(gone), true);
  assert.equal(b.merge(old), false, "an older value does not come back");
  assert.equal(b.get("agent", "a1"), undefined);
  assert.equal(b.stats().tombstones, 1);
  await clock.advance(60_001);
  assert.equal(b.snapshot().length, 0);
});

Deno.test("records stamped too far ahead, or malformed, are refused and counted", () => {
  const clock = new FakeClock();
  const s = new ReplicatedState({ node: "s1", clock, maxDriftMs: 1000 });
  const future: StateRecord = {
    kind: "agent",
    id: "a1",
    value: agent("a1", "s9"),
    version: { wall: clock.now() + 5000, logical: 0, node: "s9" },
  };
  assert.equal(s.merge(future), false);
  const bad = { ...future, version: { ...future.version, wall: clock.now() }, value: { id: 5 } };
  assert.equal(s.merge(bad as unknown as StateRecord), false);
  assert.deepEqual(
    [s.stats().refusedDrift, s.stats().invalid, s.stats().records],
    [1, 1, 0],
  );
});

Deno.test("encodeRecords/decodeRecords round-trip and refuse garbage", () => {
  const s = new ReplicatedState({ node: "s1", clock: new FakeClock() });
  const r = s.set("script", "report@1", {
    name: "report",
    version: 1,
    sha256: "sha256:ab",
    signer: "kid",
    holder: "http://127.0.0.1:7400",
  });
  assert.deepEqual(decodeRecords(encodeRecords([r])), [r]);
  for (
    const bytes of [
      new Uint8Array([0xc1]),
      encode({ not: "a list" }),
      encode([{ kind: "nope", id: "x", value: null, version: { wall: 1, logical: 0, node: "s" } }]),
      encode([{ kind: "agent", id: "x", value: null }]),
    ]
  ) {
    assert.throws(() => decodeRecords(bytes), (e) => isJwError(e, "invalid_message"));
  }
});

Deno.test("packState() deflates the whole state and unpackState() refuses bad input", () => {
  const s = new ReplicatedState({ node: "s1", clock: new FakeClock() });
  for (let i = 0; i < 20; i++) {
    s.set("server", `srv-${i}`, {
      id: `srv-${i}`,
      gossip: `127.0.0.1:${40000 + i}`,
      url: `http://127.0.0.1:${41000 + i}`,
      health: 0,
    });
  }
  const records = s.snapshot();
  const packed = packState(records);
  assert.deepEqual(unpackState(packed), records);
  assert.ok(packed.length * 3 < encodeRecords(records).length, "at least 3× smaller");
  for (
    const bad of [new Uint8Array([9, 1, 2]), new Uint8Array([1, 0xff, 0xee]), new Uint8Array()]
  ) {
    assert.throws(() => unpackState(bad), (e) => isJwError(e, "invalid_message"));
  }
});
