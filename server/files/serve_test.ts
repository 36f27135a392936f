import assert from "node:assert/strict";
import { contentTypeFor } from "./_mime.ts";
import { noneMatchHits, parseRange, type RangeAsked } from "./serve.ts";

Deno.test("parseRange() reads one byte range against the file size", async (t) => {
  const cases: [string | null, number, RangeAsked][] = [
    [null, 10, { kind: "whole" }],
    ["bytes=0-0", 10, { kind: "range", start: 0, end: 0 }],
    ["bytes=2-5", 10, { kind: "range", start: 2, end: 5 }],
    ["bytes = 2 - 5", 10, { kind: "range", start: 2, end: 5 }],
    ["BYTES=2-5", 10, { kind: "range", start: 2, end: 5 }],
    ["bytes=7-", 10, { kind: "range", start: 7, end: 9 }],
    ["bytes=8-99", 10, { kind: "range", start: 8, end: 9 }],
    ["bytes=-4", 10, { kind: "range", start: 6, end: 9 }],
    ["bytes=-40", 10, { kind: "range", start: 0, end: 9 }],
    ["bytes=10-", 10, { kind: "unsatisfiable" }],
    ["bytes=10-20", 10, { kind: "unsatisfiable" }],
    ["bytes=-0", 10, { kind: "unsatisfiable" }],
    ["bytes=0-", 0, { kind: "unsatisfiable" }],
    ["bytes=-5", 0, { kind: "unsatisfiable" }],
    ["bytes=5-2", 10, { kind: "whole" }],
    ["bytes=-", 10, { kind: "whole" }],
    ["bytes=0-1,3-4", 10, { kind: "whole" }],
    ["bytes=a-b", 10, { kind: "whole" }],
    ["bytes=1-2-3", 10, { kind: "whole" }],
    ["pages=1-2", 10, { kind: "whole" }],
    ["bytes=99999999999999999999-", 10, { kind: "whole" }],
    ["", 10, { kind: "whole" }],
  ];
  for (const [header, size, want] of cases) {
    await t.step(`${JSON.stringify(header)} of ${size}`, () => {
      assert.deepEqual(parseRange(header, size), want);
    });
  }
});

Deno.test("noneMatchHits() compares weakly and takes lists and *", () => {
  assert.equal(noneMatchHits('"a"', '"a"'), true);
  assert.equal(noneMatchHits('W/"a"', '"a"'), true);
  assert.equal(noneMatchHits('"x", "a"', '"a"'), true);
  assert.equal(noneMatchHits("*", '"a"'), true);
  assert.equal(noneMatchHits('"b"', '"a"'), false);
  assert.equal(noneMatchHits("", '"a"'), false);
});

Deno.test("contentTypeFor() goes by the last extension, case-insensitively", () => {
  assert.equal(contentTypeFor("a/b/c.TXT"), "text/plain; charset=utf-8");
  assert.equal(contentTypeFor("x.tar.gz"), "application/gzip");
  assert.equal(contentTypeFor("dir.d/file"), "application/octet-stream");
  assert.equal(contentTypeFor(".yaml"), "application/octet-stream");
  assert.equal(contentTypeFor("a.unknown"), "application/octet-stream");
});
