import assert from "node:assert/strict";
import { FakeClock } from "./clock.ts";

Deno.test("FakeClock.advance() fires due timers in deadline order and moves now()", async () => {
  const clock = new FakeClock(1000);
  const fired: string[] = [];
  clock.setTimeout(() => fired.push("b@300"), 300);
  clock.setTimeout(() => fired.push("a@100"), 100);
  const late = clock.setTimeout(() => fired.push("never"), 1000);
  clock.clearTimeout(late);
  await clock.advance(500);
  assert.deepEqual(fired, ["a@100", "b@300"]);
  assert.equal(clock.now(), 1500);
  assert.equal(clock.pending, 0);
});

Deno.test("FakeClock.advance() runs timers scheduled by timers within the window", async () => {
  const clock = new FakeClock(0);
  const at: number[] = [];
  const tick = () => {
    at.push(clock.now());
    if (at.length < 5) clock.setTimeout(tick, 100);
  };
  clock.setTimeout(tick, 100);
  await clock.advance(1000);
  assert.deepEqual(at, [100, 200, 300, 400, 500]);
});

Deno.test("FakeClock.sleep() rejects when its signal aborts", async () => {
  const clock = new FakeClock(0);
  const abort = new AbortController();
  const slept = clock.sleep(1000, abort.signal);
  abort.abort(new Error("stop"));
  await assert.rejects(slept, /stop/);
  assert.equal(clock.pending, 0);
});
