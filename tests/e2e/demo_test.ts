/**
 * End to end: `jw demo --once` runs its sample command on both demo agents.
 */
import assert from "node:assert/strict";
import { runJw } from "../helpers/mod.ts";

Deno.test("jw demo --once starts a fleet, runs the sample and cleans up", async () => {
  const r = await runJw(["demo", "--once", "--http", "127.0.0.1:0"]);
  assert.equal(r.code, 0, r.stdout + r.stderr);
  assert.match(r.stdout, /agents +demo-1, demo-2 connected/);
  assert.match(r.stdout, /\[demo-1\] done/);
  assert.match(r.stdout, /\[demo-2\] done/);
  assert.match(r.stdout, /2 agents: 2 ok, 0 failed/);
  assert.match(r.stdout, /task jw client --server http:\/\/127\.0\.0\.1:\d+ --user admin agents/);
  const dir = /data in (\S+)\)/.exec(r.stdout)?.[1];
  assert.ok(dir, "demo prints its data dir");
  await assert.rejects(Deno.stat(dir), Deno.errors.NotFound, "temp data removed on exit");
});
