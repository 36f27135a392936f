import assert from "node:assert/strict";
import { SendOrder } from "./turns.ts";

Deno.test("turns: a send waits for the one it follows to publish, and stops after its failure", async () => {
  const order = new SendOrder();
  const a = order.next(0);
  const b = order.next(2);
  const c = order.next(4);
  assert.equal(await a.ready(), true, "the first in line goes at once");
  let bReady: boolean | undefined;
  const waiting = b.ready().then((ok) => bReady = ok);
  await Promise.resolve();
  assert.equal(bReady, undefined, "b waits while a is publishing");
  a.published();
  await waiting;
  assert.equal(bReady, true);
  b.settle(false);
  assert.equal(await c.ready(), false, "c follows a failed batch");
  c.settle(false);
  // Even a send started after the failure is over must not publish while it follows it...
  const d = order.next(6);
  assert.equal(await d.ready(), false);
  d.settle(false);
  // ...until the sender starts again from the oldest message.
  assert.equal(await order.next(0).ready(), true);
});

Deno.test("turns: a send that failed after the next one started publishing does not hold it", async () => {
  const order = new SendOrder();
  const a = order.next(0);
  const b = order.next(2);
  await a.ready();
  a.published();
  assert.equal(await b.ready(), true);
  a.settle(false);
  // b was already publishing: its own outcome decides (the connection it shares fails it).
  b.settle(true);
  assert.equal(await order.next(0).ready(), true);
});
