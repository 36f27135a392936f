import assert from "node:assert/strict";
import { isJwError } from "../shared/errors.ts";
import { agentUrl } from "./url.ts";

Deno.test("agentUrl() maps http(s) to ws(s) and adds /v1/agent only when there is no path", async (t) => {
  const cases: [string, string][] = [
    ["http://127.0.0.1:7400", "ws://127.0.0.1:7400/v1/agent"],
    ["http://127.0.0.1:7400/", "ws://127.0.0.1:7400/v1/agent"],
    ["https://jw.example.com", "wss://jw.example.com/v1/agent"],
    ["ws://h:1", "ws://h:1/v1/agent"],
    ["wss://h/custom/path", "wss://h/custom/path"],
    ["http://h:80/jw/v1/agent?x=1", "ws://h/jw/v1/agent?x=1"],
  ];
  for (const [input, want] of cases) {
    await t.step(input, () => assert.equal(agentUrl(input), want));
  }
});

Deno.test("agentUrl() rejects other schemes and non-URLs", () => {
  for (const bad of ["ftp://h", "h:7400", "not a url"]) {
    assert.throws(() => agentUrl(bad), (e) => isJwError(e, "config"), bad);
  }
});
