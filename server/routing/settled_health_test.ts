import { deepStrictEqual, strictEqual } from "node:assert/strict";
import { createSettledHealth } from "./settled_health.ts";

const hold = { riseMs: 10_000, fallMs: 30_000 };

Deno.test("settled health ignores a flicker shorter than the hold", () => {
  const settle = createSettledHealth(hold);
  const seen = [];
  // Up for 3 s, back for 1 s, up again for 3 s: never 10 s in a row.
  for (let t = 0; t <= 7_000; t += 1000) {
    seen.push(settle(t % 4000 === 3000 ? 0 : 2, t));
  }
  deepStrictEqual(seen, [0, 0, 0, 0, 0, 0, 0, 0]);
});

Deno.test("a worse score counts after riseMs, at the level it held throughout", () => {
  const settle = createSettledHealth(hold);
  strictEqual(settle(3, 0), 0);
  strictEqual(settle(1, 5_000), 0);
  strictEqual(settle(4, 9_999), 0);
  strictEqual(settle(4, 10_000), 1);
  // And the remaining rise needs its own hold.
  strictEqual(settle(4, 19_999), 1);
  strictEqual(settle(4, 20_000), 4);
});

Deno.test("a better score counts only after fallMs", () => {
  const settle = createSettledHealth(hold, 5);
  strictEqual(settle(0, 0), 5);
  strictEqual(settle(0, 29_999), 5);
  strictEqual(settle(0, 30_000), 0);
});

Deno.test("a reversal restarts the hold", () => {
  const settle = createSettledHealth(hold, 2);
  strictEqual(settle(4, 0), 2);
  strictEqual(settle(0, 8_000), 2);
  strictEqual(settle(4, 9_000), 2);
  strictEqual(settle(4, 18_999), 2);
  strictEqual(settle(4, 19_000), 4);
});
