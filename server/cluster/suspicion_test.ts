import assert from "node:assert/strict";
import { FakeClock } from "../../shared/clock.ts";
import { Suspicion, suspicionTimeout } from "./suspicion.ts";

function start(clock: FakeClock, k: number, minMs = 2_000, maxMs = 30_000) {
  const fired: { at: number; confirmations: number }[] = [];
  const s = new Suspicion({
    clock,
    from: "a",
    k,
    minMs,
    maxMs,
    onTimeout: (confirmations) => fired.push({ at: clock.now(), confirmations }),
  });
  return { s, fired };
}

Deno.test("suspicionTimeout() shrinks from max to min with log(c+1)/log(k+1)", () => {
  assert.equal(suspicionTimeout(0, 3, 2_000, 30_000), 30_000);
  // memberlist's table for k=3, min 2 s, max 30 s: 1 → 16 s, 2 → 7.81 s (floored ms), 3 → 2 s.
  assert.equal(suspicionTimeout(1, 3, 2_000, 30_000), 16_000);
  assert.equal(suspicionTimeout(2, 3, 2_000, 30_000), 7_810);
  assert.equal(suspicionTimeout(3, 3, 2_000, 30_000), 2_000);
  assert.equal(suspicionTimeout(4, 3, 2_000, 30_000), 2_000);
  assert.equal(suspicionTimeout(0, 0, 2_000, 30_000), 2_000);
});

Deno.test("Suspicion fires once at max with no confirmations", async () => {
  const clock = new FakeClock(0);
  const { s, fired } = start(clock, 3);
  await clock.advance(29_999);
  assert.deepEqual(fired, []);
  await clock.advance(1);
  assert.deepEqual(fired, [{ at: 30_000, confirmations: 0 }]);
  assert.equal(s.done, true);
  await clock.advance(60_000);
  assert.equal(fired.length, 1);
  assert.equal(s.confirm("b"), false, "no confirmations after firing");
});

Deno.test("Suspicion.confirm() counts distinct members and shortens the timer", async () => {
  const clock = new FakeClock(0);
  const { s, fired } = start(clock, 3);
  assert.equal(s.confirm("a"), false, "the starter does not count");
  await clock.advance(1_000);
  assert.equal(s.confirm("b"), true);
  assert.equal(s.confirm("b"), false, "a repeat does not count");
  assert.equal(s.confirmations, 1);
  assert.equal(s.timeoutMs, 16_000);
  await clock.advance(14_999);
  assert.deepEqual(fired, []);
  await clock.advance(1);
  assert.deepEqual(fired, [{ at: 16_000, confirmations: 1 }]);
});

Deno.test("Suspicion fires at once when a confirmation lands past the new timeout", async () => {
  const clock = new FakeClock(0);
  const { s, fired } = start(clock, 3);
  await clock.advance(10_000);
  s.confirm("b"); // 16 s: not yet
  s.confirm("c"); // 7.8 s: already past
  await clock.advance(0);
  assert.deepEqual(fired, [{ at: 10_000, confirmations: 2 }]);
  assert.equal(s.confirm("d"), false);
});

Deno.test("Suspicion ignores confirmations beyond k and starts at min when k < 1", async () => {
  const clock = new FakeClock(0);
  const { s, fired } = start(clock, 1);
  assert.equal(s.confirm("b"), true);
  assert.equal(s.confirm("c"), false, "k reached");
  await clock.advance(2_000);
  assert.equal(fired.length, 1);

  const zero = start(clock, 0);
  assert.equal(zero.s.confirm("b"), false);
  await clock.advance(2_000);
  assert.deepEqual(zero.fired, [{ at: 4_000, confirmations: 0 }]);
});

Deno.test("Suspicion.cancel() stops the timer", async () => {
  const clock = new FakeClock(0);
  const { s, fired } = start(clock, 3);
  s.cancel();
  s.cancel();
  await clock.advance(60_000);
  assert.deepEqual(fired, []);
  assert.equal(clock.pending, 0);
});
