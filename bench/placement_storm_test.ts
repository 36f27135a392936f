import assert from "node:assert/strict";
import { peakPerWindow } from "./placement_storm.ts";

Deno.test("peakPerWindow counts the busiest 1 s window", () => {
  assert.equal(peakPerWindow([]), 0);
  assert.equal(peakPerWindow([5]), 1);
  // 0..900 (10 in the first second), then 3 more spread out.
  const times = [...Array.from({ length: 10 }, (_, i) => i * 100), 2500, 4000, 4100];
  assert.equal(peakPerWindow(times), 10);
  assert.equal(peakPerWindow([1000, 0, 999]), 2, "unsorted input; window is half-open");
  assert.equal(peakPerWindow(times, 200), 2);
});
