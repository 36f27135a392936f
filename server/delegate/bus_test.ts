import assert from "node:assert/strict";
import type { RelayedReply } from "../../shared/protocol/mod.ts";
import { createReplyBus, RELAYED_JSON, relayedJson, withAgent } from "./bus.ts";

function output(agent: string, id: string, text: string): RelayedReply {
  return {
    v: 1,
    id,
    type: "output",
    job: { id: "j1", key: "exec.run" },
    seq: 0,
    ts: 1,
    text,
    agent,
  };
}

function textOf(r: RelayedReply): string {
  return r.type === "output" ? r.text ?? "" : "";
}

Deno.test("ReplyBus.subscribe() filters by agent, tag and envelope id", () => {
  const bus = createReplyBus();
  const got: Record<string, string[]> = { all: [], agent: [], tag: [], id: [], both: [] };
  bus.subscribe({}, (r) => got.all.push(textOf(r)));
  bus.subscribe({ agent: "a1" }, (r) => got.agent.push(textOf(r)));
  bus.subscribe({ tag: { name: "role", value: "web" } }, (r) => got.tag.push(textOf(r)));
  bus.subscribe({ id: "e1" }, (r) => got.id.push(textOf(r)));
  bus.subscribe({ id: "e1", agent: "a2" }, (r) => got.both.push(textOf(r)));
  const web = { role: "web" };
  bus.publish(output("a1", "e1", "one"), web);
  bus.publish(output("a2", "e1", "two"), {});
  bus.publish(output("a2", "e2", "three"), web);
  assert.deepEqual(got, {
    all: ["one", "two", "three"],
    agent: ["one"],
    tag: ["one", "three"],
    id: ["one", "two"],
    both: ["two"],
  });
  bus.close();
});

Deno.test("ReplyBus.publish() keeps delivering when a subscriber throws", () => {
  const bus = createReplyBus();
  const got: string[] = [];
  bus.subscribe({}, () => {
    throw new Error("boom");
  });
  bus.subscribe({}, (r) => got.push(textOf(r)));
  bus.publish(output("a1", "e1", "x"), {});
  assert.deepEqual(got, ["x"]);
  bus.close();
});

Deno.test("ReplyBus unsubscribe stops delivery and frees the id index", () => {
  const bus = createReplyBus();
  const got: string[] = [];
  const off = bus.subscribe({ id: "e1" }, (r) => got.push(textOf(r)));
  assert.equal(bus.subscribers, 1);
  off();
  off();
  assert.equal(bus.subscribers, 0);
  bus.publish(output("a1", "e1", "x"), {});
  assert.deepEqual(got, []);
  bus.close();
});

Deno.test("ReplyBus.stream() drops oldest for a slow reader without blocking others", async () => {
  const bus = createReplyBus();
  const slow = bus.stream({}, { maxQueue: 2 });
  const fast: string[] = [];
  bus.subscribe({}, (r) => fast.push(textOf(r)));
  for (const t of ["1", "2", "3", "4"]) bus.publish(output("a1", "e1", t), {});
  assert.deepEqual(fast, ["1", "2", "3", "4"]);
  assert.equal(slow.dropped, 2);
  assert.equal(textOf((await slow.next()).value!), "3");
  slow.close();
  assert.equal(bus.subscribers, 1, "closing a stream unsubscribes it");
  bus.close();
});

Deno.test("ReplyBus.close() ends open streams and later ones", async () => {
  const bus = createReplyBus();
  const stream = bus.stream({ agent: "a1" });
  const pending = stream.next();
  bus.close();
  assert.equal((await pending).done, true);
  const late = bus.stream({});
  assert.equal((await late.next()).done, true);
});

Deno.test("withAgent() adds the agent id to frame text the way JSON.stringify would", () => {
  const frame = {
    v: 1,
    id: "e1",
    type: "output",
    job: { id: "j", key: "exec.run" },
    seq: 0,
    ts: 1,
    text: '}{"',
  };
  const text = withAgent(JSON.stringify(frame) + "  \n", 'a"1');
  assert.deepEqual(JSON.parse(text), { ...frame, agent: 'a"1' });
  const reply = { ...frame, agent: "a1" } as unknown as RelayedReply;
  assert.equal(relayedJson(reply), JSON.stringify(reply), "falls back to serialising");
  const kept = { ...reply, [RELAYED_JSON]: "KEPT" };
  assert.equal(relayedJson(kept), "KEPT");
  assert.equal(
    JSON.stringify(kept),
    JSON.stringify(reply),
    "the kept text is not part of the JSON",
  );
});

Deno.test("ReplyBus filters by reply type", () => {
  const bus = createReplyBus();
  const seen: string[] = [];
  bus.subscribe({ types: ["log", "setTag"] }, (r) => seen.push(r.type));
  bus.publish(output("a1", "e1", "x"), {});
  bus.publish(
    { ...output("a1", "e1", "y"), type: "log", level: "info", message: "m" } as never,
    {},
  );
  assert.deepEqual(seen, ["log"]);
  bus.close();
});

Deno.test("ReplyBus.stream with closeWhenFull ends a reader that falls behind", async () => {
  const bus = createReplyBus();
  const slow = bus.stream({}, { maxQueue: 3, closeWhenFull: true });
  const kept = bus.stream({}, { maxQueue: 3 });
  for (let i = 0; i < 5; i++) bus.publish(output("a1", "e1", `m${i}`), {});
  assert.equal(slow.closed, true, "cut off at the first drop");
  assert.equal(bus.subscribers, 1, "and unsubscribed");
  const got: string[] = [];
  for await (const r of slow) got.push(textOf(r));
  assert.deepEqual(got, ["m1", "m2", "m3"], "what was queued is still read");
  assert.equal(kept.closed, false, "without it the oldest are dropped instead");
  assert.equal(kept.dropped, 2);
  bus.close();
});
