/**
 * The server's sqlite schema: the shared audit table, the `agents` table that pins each
 * agent's public key and remembers what was last known about it, and the `scripts` table of
 * uploaded signed scripts (server/scripts/store.ts), `cluster_peers`, the servers met
 * (server/cluster/peers.ts), and `mailbox`, commands waiting for offline agents
 * (server/agents/mailbox.ts).
 *
 * @module
 */
import { auditMigration, type Migration } from "../shared/db/mod.ts";
import { mailboxMigration } from "./agents/mailbox.ts";
import { outputChunksMigration, outputsMigration } from "./outputs/outbox.ts";
import { peersMigration } from "./cluster/peers.ts";
import { scriptsMigration } from "./scripts/store.ts";

/**
 * Creates `agents`: one row per agent id ever authenticated. `public_key` (a JWK as JSON)
 * and `kid` are written once, when the key is pinned, and never changed; the other columns
 * describe the latest connection. `server` is the id of the server the agent was last on.
 */
export const agentsMigration: Migration = {
  name: "agents",
  up: `
    CREATE TABLE agents (
      id TEXT PRIMARY KEY,
      public_key TEXT NOT NULL,
      kid TEXT NOT NULL,
      first_seen INTEGER NOT NULL,
      last_seen INTEGER,
      tags TEXT NOT NULL DEFAULT '{}',
      version TEXT,
      address TEXT,
      server TEXT
    );
  `,
};

/**
 * Adds delivery state to `agents`: `stream` (the agent's outbox id from `hello`) and
 * `dseq` (the highest delivery sequence processed from that stream), so replies an agent
 * resends after a reconnect or restart are delivered once.
 */
export const deliveryMigration: Migration = {
  name: "agent delivery state",
  up: `
    ALTER TABLE agents ADD COLUMN stream TEXT;
    ALTER TABLE agents ADD COLUMN dseq INTEGER NOT NULL DEFAULT 0;
  `,
};

/** Every migration of the server database, in order. Append only; never reorder. */
export const serverMigrations: readonly Migration[] = [
  auditMigration,
  agentsMigration,
  deliveryMigration,
  scriptsMigration,
  peersMigration,
  mailboxMigration,
  outputsMigration,
  outputChunksMigration,
];
