import assert from "node:assert/strict";
import { createChannel } from "./channel.ts";

Deno.test("Channel delivers pushed items in order, then ends after close()", async () => {
  const ch = createChannel<number>();
  ch.push(1);
  const pending = ch.next();
  assert.deepEqual(await pending, { value: 1, done: false });
  const waiting = ch.next();
  ch.push(2);
  assert.deepEqual(await waiting, { value: 2, done: false });
  ch.push(3);
  ch.close();
  assert.equal(ch.push(4), false);
  const rest: number[] = [];
  for await (const n of ch) rest.push(n);
  assert.deepEqual(rest, [3]);
});

Deno.test("Channel with maxQueue drops the oldest unread item and counts it", async () => {
  const ch = createChannel<number>({ maxQueue: 3 });
  for (let i = 0; i < 5; i++) ch.push(i);
  assert.equal(ch.dropped, 2);
  assert.equal(ch.size, 3);
  ch.close();
  const got: number[] = [];
  for await (const n of ch) got.push(n);
  assert.deepEqual(got, [2, 3, 4]);
});

Deno.test("Channel.return() closes it, resolves a pending read and calls onClose once", async () => {
  let closes = 0;
  const ch = createChannel<number>({ onClose: () => closes++ });
  const pending = ch.next();
  await ch.return();
  assert.deepEqual(await pending, { value: undefined, done: true });
  ch.push(1);
  assert.deepEqual(await ch.next(), { value: undefined, done: true });
  ch.close();
  assert.equal(closes, 1);
  assert.equal(ch.closed, true);
});

Deno.test("Channel keeps order across many items", async () => {
  const ch = createChannel<number>();
  for (let i = 0; i < 5000; i++) ch.push(i);
  let expect = 0;
  for (let i = 0; i < 2500; i++) assert.equal((await ch.next()).value, expect++);
  for (let i = 5000; i < 6000; i++) ch.push(i);
  ch.close();
  for await (const n of ch) assert.equal(n, expect++);
  assert.equal(expect, 6000);
});

Deno.test("Channel with maxBytes drops the oldest items past the byte budget", async () => {
  const channel = createChannel<string>({ maxBytes: 10, weigh: (s) => s.length });
  channel.push("aaaa");
  channel.push("bbbb");
  channel.push("cccc"); // 12 bytes > 10: "aaaa" goes
  assert.equal(channel.dropped, 1);
  assert.equal(channel.size, 2);
  channel.push("x".repeat(50)); // alone over budget: everything older goes, it stays
  assert.equal(channel.dropped, 3);
  assert.equal((await channel.next()).value, "x".repeat(50));
  channel.push("dd");
  channel.push("ee");
  assert.equal(channel.dropped, 3, "budget freed by reading");
  channel.close();
  const rest: string[] = [];
  for await (const s of channel) rest.push(s);
  assert.deepEqual(rest, ["dd", "ee"]);
});
