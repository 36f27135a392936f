/**
 * The persisted side of agents: the `agents` table (see server/db.ts). Pins keys for the
 * handshake ({@link KeyStore}) and remembers tags, version, address, last server and
 * last-seen time across restarts.
 *
 * @module
 */
import type { DatabaseSync } from "../../shared/db/mod.ts";
import type { Clock } from "../../shared/clock.ts";
import type { PublicJwk } from "../../shared/protocol/mod.ts";
import type { KeyStore } from "./handshake.ts";

/** Tag name → value. */
export type TagMap = Record<string, string>;

/** One row of the `agents` table. */
export interface AgentRecord {
  id: string;
  publicKey: PublicJwk;
  kid: string;
  firstSeen: number;
  lastSeen: number | null;
  tags: TagMap;
  version: string | null;
  address: string | null;
  /** The server the agent was last connected to. */
  server: string | null;
}

/** What is known about an agent when it connects. */
export interface ConnectInfo {
  version: string;
  address: string;
  server: string;
  tags: TagMap;
  /** Epoch ms. */
  at: number;
}

/**
 * Reads and writes the `agents` table. Synchronous (node:sqlite); every method is one
 * statement, so calls from concurrent handlers never see half a write. Writes for an id
 * with no row (never pinned) do nothing.
 */
export interface AgentStore extends KeyStore {
  /** The row for `id`, if any. */
  get(id: string): AgentRecord | undefined;
  /** Every row, by id. */
  all(): AgentRecord[];
  /** Number of rows (agents ever pinned). */
  count(): number;
  /** Records a new connection's details. */
  saveConnect(id: string, info: ConnectInfo): void;
  /** Replaces the persisted tags. */
  saveTags(id: string, tags: TagMap): void;
  /** Records the last time the agent was heard from. */
  saveLastSeen(id: string, at: number): void;
  /** Records many last-seen times (`[id, at]`) in one transaction. */
  saveLastSeenMany(entries: readonly [string, number][]): void;
  /** The agent's outbox stream and the highest `dseq` processed from it. */
  delivery(id: string): Delivery;
  /** Records the highest `dseq` processed from `stream`. */
  saveDelivery(id: string, delivery: Delivery): void;
}

/** Where an agent's reply delivery stands (see the `dseq` field of replies). */
export interface Delivery {
  /** The agent's outbox id, or null before the first `hello` that named one. */
  stream: string | null;
  /** Highest `dseq` processed from `stream`; 0 for none. */
  dseq: number;
}

interface Row {
  id: string;
  public_key: string;
  kid: string;
  first_seen: number;
  last_seen: number | null;
  tags: string;
  version: string | null;
  address: string | null;
  server: string | null;
}

function toRecord(row: Row): AgentRecord {
  return {
    id: row.id,
    publicKey: JSON.parse(row.public_key),
    kid: row.kid,
    firstSeen: row.first_seen,
    lastSeen: row.last_seen,
    tags: JSON.parse(row.tags),
    version: row.version,
    address: row.address,
    server: row.server,
  };
}

/** Creates an {@link AgentStore} over a database migrated with `serverMigrations`. */
export function createAgentStore(db: DatabaseSync, clock: Clock): AgentStore {
  const select = db.prepare("SELECT * FROM agents WHERE id = ?");
  const selectAll = db.prepare("SELECT * FROM agents ORDER BY id");
  const countAll = db.prepare("SELECT count(*) AS n FROM agents");
  const insert = db.prepare(
    "INSERT OR IGNORE INTO agents (id, public_key, kid, first_seen, last_seen) VALUES (?, ?, ?, ?, ?)",
  );
  const updateConnect = db.prepare(
    "UPDATE agents SET version = ?, address = ?, server = ?, tags = ?, last_seen = ? WHERE id = ?",
  );
  const updateTags = db.prepare("UPDATE agents SET tags = ? WHERE id = ?");
  const updateLastSeen = db.prepare("UPDATE agents SET last_seen = ? WHERE id = ?");
  const selectDelivery = db.prepare("SELECT stream, dseq FROM agents WHERE id = ?");
  const updateDelivery = db.prepare("UPDATE agents SET stream = ?, dseq = ? WHERE id = ?");
  const get = (id: string) => {
    const row = select.get(id) as Row | undefined;
    return row ? toRecord(row) : undefined;
  };
  return {
    get,
    all: () => (selectAll.all() as unknown as Row[]).map(toRecord),
    count: () => Number((countAll.get() as { n: number }).n),
    pinnedKey: (id) => get(id)?.publicKey,
    pin: (id, key, kid) => {
      const now = clock.now();
      insert.run(id, JSON.stringify({ kty: key.kty, crv: key.crv, x: key.x }), kid, now, now);
    },
    saveConnect: (id, info) => {
      updateConnect.run(
        info.version,
        info.address,
        info.server,
        JSON.stringify(info.tags),
        info.at,
        id,
      );
    },
    saveTags: (id, tags) => {
      updateTags.run(JSON.stringify(tags), id);
    },
    saveLastSeen: (id, at) => {
      updateLastSeen.run(at, id);
    },
    saveLastSeenMany: (entries) => {
      if (entries.length === 0) return;
      db.exec("BEGIN");
      try {
        for (const [id, at] of entries) updateLastSeen.run(at, id);
        db.exec("COMMIT");
      } catch (err) {
        db.exec("ROLLBACK");
        throw err;
      }
    },
    delivery: (id) => {
      const row = selectDelivery.get(id) as { stream: string | null; dseq: number } | undefined;
      return { stream: row?.stream ?? null, dseq: Number(row?.dseq ?? 0) };
    },
    saveDelivery: (id, { stream, dseq }) => {
      updateDelivery.run(stream, dseq, id);
    },
  };
}
