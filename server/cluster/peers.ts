/**
 * The servers this server has met, kept in its database so that after a restart it can
 * rejoin the cluster even when its configured seeds are gone or it was the seed itself.
 *
 * @module
 */
import type { DatabaseSync, Migration } from "../../shared/db/mod.ts";

/** The `cluster_peers` table: last known gossip address of each server met. */
export const peersMigration: Migration = {
  name: "cluster peers",
  up: `
    CREATE TABLE cluster_peers (
      name TEXT PRIMARY KEY,
      address TEXT NOT NULL,
      seen_at INTEGER NOT NULL
    );
  `,
};

/** Remembered peers. */
export interface PeerStore {
  /** Records (or refreshes) a server's address. */
  remember(name: string, address: string, at: number): void;
  /** Addresses of servers seen since `since` (ms), newest first, at most `limit`. */
  recent(since: number, limit?: number): string[];
}

/** Creates the store over the server's database. */
export function createPeerStore(db: DatabaseSync): PeerStore {
  const upsert = db.prepare(
    `INSERT INTO cluster_peers (name, address, seen_at) VALUES (?, ?, ?)
     ON CONFLICT(name) DO UPDATE SET address = excluded.address, seen_at = excluded.seen_at`,
  );
  const select = db.prepare(
    "SELECT address FROM cluster_peers WHERE seen_at >= ? ORDER BY seen_at DESC LIMIT ?",
  );
  return {
    remember: (name, address, at) => void upsert.run(name, address, at),
    recent: (since, limit = 16) =>
      (select.all(since, limit) as { address: string }[]).map((r) => r.address),
  };
}
