import assert from "node:assert/strict";
import { isJwError } from "../../shared/errors.ts";
import { Awareness, DEFAULT_AWARENESS_MAX } from "./awareness.ts";

Deno.test("Awareness.apply() moves the score and clamps it to 0..max-1", () => {
  const a = new Awareness();
  assert.equal(a.score(), 0);
  a.apply(-1);
  assert.equal(a.score(), 0);
  a.apply(3);
  assert.equal(a.score(), 3);
  a.apply(100);
  assert.equal(a.score(), DEFAULT_AWARENESS_MAX - 1);
  a.apply(-2);
  assert.equal(a.score(), DEFAULT_AWARENESS_MAX - 3);
});

Deno.test("Awareness.scale() multiplies by score + 1", () => {
  const a = new Awareness(4);
  assert.equal(a.scale(500), 500);
  a.apply(2);
  assert.equal(a.scale(500), 1500);
  a.apply(5);
  assert.equal(a.score(), 3);
  assert.equal(a.scale(1000), 4000);
});

Deno.test("Awareness rejects a bad max", () => {
  for (const max of [0, -1, 1.5, NaN]) {
    assert.throws(() => new Awareness(max), (e) => isJwError(e, "config"));
  }
  const one = new Awareness(1);
  one.apply(5);
  assert.equal(one.score(), 0);
});
