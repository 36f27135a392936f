import assert from "node:assert/strict";
import { openDatabase } from "../../shared/db/mod.ts";
import { createPeerStore, peersMigration } from "./peers.ts";

Deno.test("PeerStore remembers the newest address per server, newest first", () => {
  const db = openDatabase(":memory:", [peersMigration]);
  try {
    const peers = createPeerStore(db);
    peers.remember("s1", "10.0.0.1:7401", 100);
    peers.remember("s2", "10.0.0.2:7401", 200);
    peers.remember("s1", "10.0.0.9:7401", 300);
    peers.remember("s3", "10.0.0.3:7401", 50);
    assert.deepEqual(peers.recent(100), ["10.0.0.9:7401", "10.0.0.2:7401"]);
    assert.deepEqual(peers.recent(0, 1), ["10.0.0.9:7401"]);
  } finally {
    db.close();
  }
});
