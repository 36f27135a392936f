import assert from "node:assert/strict";
import type { AgentInfo } from "../../shared/protocol/mod.ts";
import type { AgentRecord } from "./state.ts";
import { mergeAgents } from "./view.ts";

const info = (id: string, connected: boolean, lastSeen: number): AgentInfo => ({
  id,
  connected,
  tags: {},
  server: "s1",
  lastSeen,
  firstSeen: 1,
  kid: "k",
  version: "0.1.0",
  address: "127.0.0.1",
});
const record = (id: string, connected: boolean, lastSeen: number): AgentRecord => ({
  id,
  key: { x: "x", kid: "k" },
  server: "s2",
  tags: { role: "web" },
  connected,
  lastSeen,
});

Deno.test("mergeAgents() lists every agent once, the connected or newest view winning", () => {
  const merged = mergeAgents(
    [info("a1", true, 10), info("a2", false, 10), info("a3", false, 50)],
    [
      record("a1", false, 99),
      record("a2", true, 5),
      record("a3", false, 20),
      record("a0", true, 1),
    ],
  );
  assert.deepEqual(merged.map((a) => [a.id, a.server, a.connected]), [
    ["a0", "s2", true],
    ["a1", "s1", true], // connected here beats a newer disconnected record
    ["a2", "s2", true], // connected there beats our stale row
    ["a3", "s1", false], // both disconnected: ours was heard from last
  ]);
  assert.equal(merged.find((a) => a.id === "a2")?.version, "0.1.0", "known details are kept");
  assert.deepEqual(merged.find((a) => a.id === "a0")?.tags, { role: "web" });
});
