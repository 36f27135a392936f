import assert from "node:assert/strict";
import { formatDuration, parseDuration, parseSize } from "./units.ts";

Deno.test("parseDuration() reads units, compounds and bare milliseconds", async (t) => {
  const cases: [string | number, number | undefined][] = [
    ["30s", 30_000],
    ["250ms", 250],
    ["1m30s", 90_000],
    ["1.5h", 5_400_000],
    ["2d", 172_800_000],
    ["1500", 1500],
    [42, 42],
    ["", undefined],
    ["5 minutes", undefined],
    ["s", undefined],
    [-1, undefined],
  ];
  for (const [input, want] of cases) {
    await t.step(JSON.stringify(input), () => assert.equal(parseDuration(input), want));
  }
});

Deno.test("parseSize() reads binary and decimal units", () => {
  assert.equal(parseSize("1MiB"), 1024 * 1024);
  assert.equal(parseSize("512KiB"), 512 * 1024);
  assert.equal(parseSize("64kb"), 64_000);
  assert.equal(parseSize("1000"), 1000);
  assert.equal(parseSize("1 XB"), undefined);
  assert.equal(parseSize(1.5), undefined);
});

Deno.test("formatDuration() picks a compact unit", () => {
  assert.equal(formatDuration(12), "12ms");
  assert.equal(formatDuration(1500), "1.5s");
  assert.equal(formatDuration(123_000), "2m3s");
  assert.equal(formatDuration(120_000), "2m");
});
