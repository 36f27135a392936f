/**
 * The cluster's server list as the agent keeps it: the `servers` table of agent.db (the list
 * from the last `servers` frame, so a restarted agent still knows where to go), the ranking
 * of a list for this agent (`rank` in shared/lrw.ts, the same placement the servers compute),
 * and the memory of servers that failed lately (skipped when ranking, named in `hello.avoid`).
 *
 * @module
 */
import type { Clock } from "../shared/clock.ts";
import type { DatabaseSync, Migration } from "../shared/db/mod.ts";
import { JwError } from "../shared/errors.ts";
import { rank } from "../shared/lrw.ts";
import type { ServerEntry } from "../shared/protocol/mod.ts";
import { agentUrl } from "./url.ts";

/** The migration creating `servers`; part of the agent's migration list. */
export const serversMigration: Migration = {
  name: "servers",
  up: `
    CREATE TABLE servers (
      position INTEGER PRIMARY KEY,
      id TEXT NOT NULL UNIQUE,
      url TEXT NOT NULL,
      health INTEGER NOT NULL,
      received_at INTEGER NOT NULL
    );
  `,
};

/** The remembered server list. Synchronous; one agent owns the database. */
export interface ServerStore {
  /** The list last stored, in its order; entries whose URL is no longer usable are left out. */
  load(): ServerEntry[];
  /** Replaces the whole list (one transaction). */
  replace(servers: readonly ServerEntry[]): void;
}

/** Creates the store over the agent's database; `now` stamps each stored list. */
export function createServerStore(db: DatabaseSync, now: () => number = Date.now): ServerStore {
  return {
    load() {
      const rows = db.prepare("SELECT id, url, health FROM servers ORDER BY position").all() as {
        id: string;
        url: string;
        health: number;
      }[];
      return rows
        .filter((r) => usableUrl(r.url))
        .map((r) => ({ id: r.id, url: r.url, health: r.health }));
    },
    replace(servers) {
      const at = now();
      db.exec("BEGIN");
      try {
        db.exec("DELETE FROM servers");
        const insert = db.prepare(
          "INSERT INTO servers (position, id, url, health, received_at) VALUES (?, ?, ?, ?, ?)",
        );
        servers.forEach((s, i) => insert.run(i, s.id, s.url, s.health, at));
        db.exec("COMMIT");
      } catch (err) {
        db.exec("ROLLBACK");
        throw err;
      }
    },
  };
}

function usableUrl(url: string): boolean {
  try {
    agentUrl(url);
    return true;
  } catch {
    return false;
  }
}

/**
 * Checks a server list beyond its schema: every URL must be one the agent can connect to
 * (http(s) or ws(s)) and every id must appear once.
 * @throws JwError `invalid_message` naming the entry.
 */
export function checkServerList(servers: readonly ServerEntry[]): void {
  const ids = new Set<string>();
  servers.forEach((s, i) => {
    if (!usableUrl(s.url)) {
      throw new JwError(
        "invalid_message",
        `servers.${i}.url: ${JSON.stringify(s.url)} is not an http(s) or ws(s) URL`,
        { detail: { path: `servers.${i}.url` } },
      );
    }
    if (ids.has(s.id)) {
      throw new JwError("invalid_message", `servers.${i}.id: server "${s.id}" is listed twice`, {
        detail: { path: `servers.${i}.id` },
      });
    }
    ids.add(s.id);
  });
}

/** A server of the list with its agent endpoint URL (see {@link agentUrl}). */
export interface RankedServer {
  id: string;
  /** The WebSocket URL to connect to. */
  url: string;
}

/**
 * The list ordered for `agentId` by weighted rendezvous hashing (its owner first, then the
 * server it moves to when the owner goes away, …). Entries with an unusable URL are left out.
 */
export function rankServers(agentId: string, servers: readonly ServerEntry[]): RankedServer[] {
  const out: RankedServer[] = [];
  for (const s of rank(agentId, servers)) {
    try {
      out.push({ id: s.id, url: agentUrl(s.url) });
    } catch {
      // unusable URL: not a candidate
    }
  }
  return out;
}

/** Most server ids `hello.avoid` may carry. */
export const MAX_AVOID = 32;

/**
 * Servers that failed lately: a connect that did not reach a welcome or a redirect, or a
 * welcomed connection that was lost. Entries expire `windowMs` after they were noted. Not
 * shared between connections.
 */
export class RecentFailures {
  readonly #clock: Clock;
  readonly #windowMs: number;
  /** Agent URL → when it last failed. */
  readonly #urls = new Map<string, number>();
  /** Server id → when it was last lost or failed. */
  readonly #ids = new Map<string, number>();

  constructor(clock: Clock, windowMs: number) {
    this.#clock = clock;
    this.#windowMs = windowMs;
  }

  /** Notes that `url` (an agent URL), and server `id` when known, failed now. */
  note(url: string, id?: string): void {
    const now = this.#clock.now();
    this.#urls.delete(url);
    this.#urls.set(url, now);
    if (id !== undefined) {
      this.#ids.delete(id);
      this.#ids.set(id, now);
    }
  }

  /** True when `server` (by URL or id) failed within the window. */
  has(server: RankedServer): boolean {
    this.#expire();
    return this.#urls.has(server.url) || this.#ids.has(server.id);
  }

  /**
   * The servers that failed within the window, by id, with when each last failed (epoch ms),
   * most recent first, at most {@link MAX_AVOID}: ids noted directly, and the ids `servers`
   * give the URLs that failed.
   */
  avoid(servers: readonly RankedServer[]): { id: string; at: number }[] {
    this.#expire();
    const when = new Map(this.#ids);
    for (const s of servers) {
      const at = this.#urls.get(s.url);
      if (at !== undefined && at > (when.get(s.id) ?? -Infinity)) when.set(s.id, at);
    }
    return [...when].sort((a, b) => b[1] - a[1]).slice(0, MAX_AVOID).map(([id, at]) => ({
      id,
      at,
    }));
  }

  #expire(): void {
    const oldest = this.#clock.now() - this.#windowMs;
    for (const map of [this.#urls, this.#ids]) {
      for (const [key, at] of map) if (at <= oldest) map.delete(key);
    }
  }
}
