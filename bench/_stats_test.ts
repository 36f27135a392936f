import assert from "node:assert/strict";
import { median, percentile, ratio } from "./_stats.ts";

Deno.test("percentile() uses the nearest rank", () => {
  const samples = [5, 1, 4, 2, 3];
  assert.equal(percentile(samples, 50), 3);
  assert.equal(percentile(samples, 99), 5);
  assert.equal(percentile(samples, 20), 1);
  assert.equal(percentile(samples, 21), 2);
  assert.ok(Number.isNaN(percentile([], 50)));
});

Deno.test("percentile() of 20 rounds at p99 is the slowest round", () => {
  const rounds = Array.from({ length: 20 }, (_, i) => i + 1);
  assert.equal(percentile(rounds, 99), 20);
  assert.equal(percentile(rounds, 50), 10);
});

Deno.test("median() averages the middle pair of an even count", () => {
  assert.equal(median([4, 1, 3, 2]), 2.5);
  assert.equal(median([3, 1, 2]), 2);
  assert.ok(Number.isNaN(median([])));
});

Deno.test("ratio() is NaN unless both sides are usable", () => {
  assert.equal(ratio(3, 2), 1.5);
  assert.ok(Number.isNaN(ratio(1, 0)));
  assert.ok(Number.isNaN(ratio(NaN, 2)));
  assert.ok(Number.isNaN(ratio(1, Infinity)));
});
