import assert from "node:assert/strict";
import { seededRandom } from "../shared/random.ts";
import { backoffDelay } from "./backoff.ts";

const bounds = { min: 500, max: 30_000 };

Deno.test("backoffDelay() scales the draw by min·2^attempt capped at max", async (t) => {
  const cases: [number, number, number][] = [
    [0, 0.5, 250],
    [1, 0.5, 500],
    [5, 0.5, 8000],
    [6, 0.5, 15_000],
    [60, 0.5, 15_000],
    [10_000, 0.999, 29_970],
    [3, 0, 0],
  ];
  for (const [attempt, f, want] of cases) {
    await t.step(`attempt ${attempt}, float ${f}`, () => {
      assert.equal(
        backoffDelay(attempt, bounds, { float: () => f, bytes: () => new Uint8Array() }),
        want,
      );
    });
  }
});

Deno.test("backoffDelay() stays within [0, cap) for random draws", () => {
  const random = seededRandom(7);
  for (let attempt = 0; attempt < 40; attempt++) {
    const cap = Math.min(bounds.max, bounds.min * 2 ** attempt);
    for (let i = 0; i < 50; i++) {
      const d = backoffDelay(attempt, bounds, random);
      assert.ok(d >= 0 && d < cap, `attempt ${attempt}: ${d} not in [0, ${cap})`);
    }
  }
});

Deno.test("backoffDelay() treats a zero min as 1 ms and never returns NaN", () => {
  const one = { float: () => 0.5, bytes: () => new Uint8Array() };
  assert.equal(backoffDelay(0, { min: 0, max: 1000 }, one), 0.5);
  assert.equal(backoffDelay(4, { min: 0, max: 1000 }, one), 8);
  assert.equal(backoffDelay(5000, { min: 0, max: 1000 }, one), 500);
  assert.equal(backoffDelay(-3, bounds, one), 250);
});
