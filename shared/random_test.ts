import assert from "node:assert/strict";
import { Id } from "./protocol/common.ts";
import { randomId, seededRandom } from "./random.ts";

Deno.test("randomId() is always a valid protocol id, even when base64url starts with - or _", () => {
  const random = seededRandom(7);
  let sawSymbolStart = false;
  for (let i = 0; i < 5000; i++) {
    const id = randomId(random);
    assert.ok(Id.safeParse(id).success, id);
    assert.equal(id.length, 16);
    if (/[-_]/.test(id)) sawSymbolStart = true;
  }
  assert.ok(sawSymbolStart, "the sample exercised ids containing symbols");
});
