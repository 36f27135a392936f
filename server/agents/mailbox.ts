/**
 * The mailbox: commands for agents that are offline, kept in sqlite on the server that owns
 * the agent until it connects (then sent, oldest first) or until the command's time to live
 * runs out (then expired). Survives restarts.
 *
 * @module
 */
import type { StatementSync } from "node:sqlite";
import type { DatabaseSync, Migration } from "../../shared/db/mod.ts";

/** Creates `mailbox`: one row per (agent, command) waiting. */
export const mailboxMigration: Migration = {
  name: "mailbox",
  up: `
    CREATE TABLE mailbox (
      seq INTEGER PRIMARY KEY AUTOINCREMENT,
      agent TEXT NOT NULL,
      command TEXT NOT NULL,
      frame TEXT NOT NULL,
      actor TEXT NOT NULL,
      key TEXT NOT NULL,
      created INTEGER NOT NULL,
      expires INTEGER NOT NULL,
      UNIQUE (agent, command)
    );
    CREATE INDEX mailbox_expires ON mailbox (expires);
  `,
};

/** A command waiting for an agent. */
export interface Letter {
  agent: string;
  /** The command's envelope id. */
  command: string;
  /** The `command` frame, encoded. */
  frame: string;
  /** Who gave it, as audited. */
  actor: string;
  /** Its command key. */
  key: string;
  created: number;
  expires: number;
}

/** The mailbox table. Synchronous. */
export interface Mailbox {
  /**
   * Keeps `letter` until its agent connects or it expires. A second letter for the same
   * agent and command is ignored.
   * @returns false when it was already there.
   */
  put(letter: Letter): boolean;
  /**
   * Removes and returns the letters for `agent` that have not expired at `now`, oldest
   * first (expired ones stay for {@link Mailbox.expire}).
   */
  take(agent: string, now: number): Letter[];
  /** Removes and returns every letter expired at `now`. */
  expire(now: number): Letter[];
  /** Letters waiting (all agents). */
  readonly size: number;
}

interface Row {
  agent: string;
  command: string;
  frame: string;
  actor: string;
  key: string;
  created: number;
  expires: number;
}

/** The mailbox on `db` (which must have {@link mailboxMigration} applied). */
export function createMailbox(db: DatabaseSync): Mailbox {
  const insert: StatementSync = db.prepare(
    `INSERT OR IGNORE INTO mailbox (agent, command, frame, actor, key, created, expires)
     VALUES (?, ?, ?, ?, ?, ?, ?)`,
  );
  const forAgent = db.prepare(
    `DELETE FROM mailbox WHERE agent = ? AND expires > ? RETURNING agent, command, frame, actor, key, created,
     expires, seq`,
  );
  const expired = db.prepare(
    `DELETE FROM mailbox WHERE expires <= ? RETURNING agent, command, frame, actor, key, created,
     expires, seq`,
  );
  const count = db.prepare(`SELECT count(*) AS n FROM mailbox`);
  const letters = (rows: unknown[]): Letter[] =>
    (rows as (Row & { seq: number })[])
      .sort((a, b) => a.seq - b.seq)
      .map(({ agent, command, frame, actor, key, created, expires }) => ({
        agent,
        command,
        frame,
        actor,
        key,
        created,
        expires,
      }));
  return {
    put(l) {
      const r = insert.run(l.agent, l.command, l.frame, l.actor, l.key, l.created, l.expires);
      return Number(r.changes) > 0;
    },
    take(agent, now) {
      return letters(forAgent.all(agent, now));
    },
    expire(now) {
      return letters(expired.all(now));
    },
    get size() {
      return Number((count.get() as { n: number }).n);
    },
  };
}
