import assert from "node:assert/strict";
import { isJwError } from "../errors.ts";
import { agentToServer, serverToAgent } from "./agent.ts";
import { decodeFrame, encodeFrame } from "./codec.ts";

const output = {
  v: 1,
  id: "env-1",
  type: "output",
  meta: { ticket: 42, nested: { a: [1, 2] } },
  job: { id: "j-1", key: "exec.run" },
  seq: 0,
  ts: 1,
  stream: "stdout",
  text: "hi",
};

function rejects(data: string, code: string, pattern?: RegExp) {
  try {
    decodeFrame(data, agentToServer, 256);
  } catch (err) {
    assert.ok(isJwError(err), `not a JwError: ${err}`);
    assert.equal(err.code, code);
    if (pattern) assert.match(err.message, pattern);
    return err;
  }
  assert.fail(`expected ${code}`);
}

Deno.test("decodeFrame() round-trips a valid output frame with meta untouched", () => {
  const got = decodeFrame(encodeFrame(output), agentToServer);
  assert.deepEqual(got, output);
});

Deno.test("decodeFrame() rejects bad frames with stable codes", async (t) => {
  await t.step(
    "oversized",
    () => void rejects("x".repeat(300), "frame_too_large", /300 bytes exceeds the 256-byte/),
  );
  await t.step("malformed JSON", () => void rejects("{nope", "bad_json"));
  await t.step("top-level array", () => void rejects("[1,2]", "invalid_message"));
  await t.step(
    "no type",
    () => void rejects('{"v":1,"id":"a"}', "invalid_message", /no string "type"/),
  );
  await t.step("unknown type, ref kept", () => {
    const err = rejects('{"v":1,"id":"abc","type":"launch"}', "unknown_type", /launch/);
    assert.deepEqual(err.detail, { ref: "abc" });
  });
  await t.step(
    "prototype key is not a type",
    () => void rejects('{"v":1,"id":"a","type":"constructor"}', "unknown_type"),
  );
  await t.step("schema failure names the path", () => {
    rejects(
      JSON.stringify({ ...output, job: { id: "j", key: "nodots" }, meta: undefined }),
      "invalid_message",
      /job\.key/,
    );
  });
  await t.step(
    "extra field",
    () =>
      void rejects(
        '{"v":1,"id":"a","type":"alive","ts":1,"uptimeMs":1,"running":0,"x":1}',
        "invalid_message",
      ),
  );
});

Deno.test("decodeFrame() applies the server-to-agent schemas", () => {
  const cmd = decodeFrame(
    encodeFrame({ v: 1, id: "e1", type: "command", job: { key: "exec.run" } }),
    serverToAgent,
  );
  assert.equal(cmd.type, "command");
  if (cmd.type === "command") assert.deepEqual(cmd.job.args, {});
});
