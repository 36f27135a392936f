/**
 * The outputs' durable queue, in the server's sqlite: one ordered queue per output, bounded
 * by bytes (when full, the oldest messages are dropped and the drop counted), and each
 * output's counters (delivered, failed attempts, dropped, dead-lettered, last error), so
 * they survive restarts too. Message ids (`mid`) come from a persistent counter, reserved in
 * blocks, so an id is never reused.
 *
 * @module
 */
import type { StatementSync } from "node:sqlite";
import type { DatabaseSync, Migration } from "../../shared/db/mod.ts";
import type { OutputMessageType } from "../../shared/config/outputs.ts";
import type { OutputInfo } from "../../shared/protocol/operator.ts";
import type { OutboxItem } from "./backend.ts";

/** Creates the queue, the counters and the id counter. */
export const outputsMigration: Migration = {
  name: "outputs",
  up: `
    CREATE TABLE output_queue (
      seq INTEGER PRIMARY KEY AUTOINCREMENT,
      output TEXT NOT NULL,
      mid TEXT NOT NULL,
      type TEXT NOT NULL,
      agent TEXT,
      key TEXT,
      tags TEXT NOT NULL,
      body TEXT NOT NULL,
      bytes INTEGER NOT NULL
    );
    CREATE INDEX output_queue_by_output ON output_queue (output, seq);
    CREATE TABLE output_state (
      output TEXT PRIMARY KEY,
      delivered INTEGER NOT NULL DEFAULT 0,
      failed INTEGER NOT NULL DEFAULT 0,
      dropped INTEGER NOT NULL DEFAULT 0,
      dead INTEGER NOT NULL DEFAULT 0,
      filtered INTEGER NOT NULL DEFAULT 0,
      last_error TEXT,
      last_error_at INTEGER,
      last_delivered_at INTEGER
    );
    CREATE TABLE output_ids (id INTEGER PRIMARY KEY CHECK (id = 1), next INTEGER NOT NULL);
    INSERT INTO output_ids (id, next) VALUES (1, 1);
  `,
};

/** A message to queue (the queue assigns `seq`). */
export type NewItem = Omit<OutboxItem, "seq">;

/** One output's counters (the wire form adds name, type and state). */
export type OutputCounters = Omit<OutputInfo, "name" | "type" | "state">;

/** Ids reserved per counter write. */
const ID_BLOCK = 1000;
/** Rows per multi-row INSERT (one statement for many rows costs less than a row each). */
const INSERT_ROWS = 50;

interface Row {
  seq: number;
  mid: string;
  type: OutputMessageType;
  agent: string | null;
  key: string | null;
  tags: string;
  body: string;
}

/** The queues of every output. Synchronous. */
export class OutputQueue {
  readonly #db: DatabaseSync;
  readonly #serverId: string;
  readonly #insert: StatementSync;
  readonly #insertMany: StatementSync;
  readonly #peek: StatementSync;
  readonly #remove: StatementSync;
  readonly #sizeUpTo: StatementSync;
  readonly #removeOne: StatementSync;
  readonly #oldest: StatementSync;
  readonly #state: StatementSync;
  readonly #bytes = new Map<string, { bytes: number; count: number }>();
  #nextId = 0;
  #reservedUntil = 0;

  constructor(db: DatabaseSync, serverId: string) {
    this.#db = db;
    this.#serverId = serverId;
    const insert = (rows: number) =>
      db.prepare(
        `INSERT INTO output_queue (output, mid, type, agent, key, tags, body, bytes) VALUES ` +
          Array(rows).fill("(?, ?, ?, ?, ?, ?, ?, ?)").join(", "),
      );
    this.#insert = insert(1);
    this.#insertMany = insert(INSERT_ROWS);
    this.#peek = db.prepare(
      `SELECT seq, mid, type, agent, key, tags, body FROM output_queue
       WHERE output = ? AND seq > ? ORDER BY seq LIMIT ?`,
    );
    this.#remove = db.prepare(`DELETE FROM output_queue WHERE output = ? AND seq <= ?`);
    this.#sizeUpTo = db.prepare(
      `SELECT count(*) AS count, coalesce(sum(bytes), 0) AS bytes FROM output_queue
       WHERE output = ? AND seq <= ?`,
    );
    this.#removeOne = db.prepare(
      `DELETE FROM output_queue WHERE output = ? AND seq = ? RETURNING bytes AS n`,
    );
    this.#oldest = db.prepare(
      `SELECT seq, bytes AS n FROM output_queue WHERE output = ? ORDER BY seq LIMIT ?`,
    );
    this.#state = db.prepare(`SELECT * FROM output_state WHERE output = ?`);
    for (
      const r of db.prepare(
        `SELECT output, count(*) AS count, coalesce(sum(bytes), 0) AS bytes
         FROM output_queue GROUP BY output`,
      ).all() as { output: string; count: number; bytes: number }[]
    ) this.#bytes.set(r.output, { bytes: Number(r.bytes), count: Number(r.count) });
  }

  /** A fresh message id: `SERVER-N`, N never reused on this server. */
  newMid(): string {
    if (this.#nextId >= this.#reservedUntil) {
      const row = this.#db.prepare(
        `UPDATE output_ids SET next = next + ? WHERE id = 1 RETURNING next`,
      ).get(ID_BLOCK) as { next: number };
      this.#reservedUntil = Number(row.next);
      this.#nextId = this.#reservedUntil - ID_BLOCK;
    }
    return `${this.#serverId}-${this.#nextId++}`;
  }

  /**
   * Queues `items` for `output` in one transaction, then drops the oldest of that output
   * until it is within `maxBytes`.
   * @returns how many old messages were dropped.
   */
  put(output: string, items: readonly NewItem[], maxBytes: number): number {
    if (items.length === 0) return 0;
    const held = this.#held(output);
    this.#db.exec("BEGIN");
    try {
      const tagText = new Map<Readonly<Record<string, string>>, string>();
      // Whole groups of INSERT_ROWS in one statement each, the rest a row at a time.
      const grouped = items.length - (items.length % INSERT_ROWS);
      const values: (string | number | null)[] = [];
      for (let n = 0; n < items.length; n++) {
        const i = items[n];
        let text = tagText.get(i.tags);
        if (text === undefined) tagText.set(i.tags, text = JSON.stringify(i.tags));
        values.push(output, i.mid, i.type, i.agent, i.key, text, i.body, i.body.length);
        held.bytes += i.body.length;
        held.count++;
        if (n >= grouped) this.#insert.run(...values);
        else if (values.length < INSERT_ROWS * 8) continue;
        else this.#insertMany.run(...values);
        values.length = 0;
      }
      let dropped = 0;
      while (held.bytes > maxBytes && held.count > 0) {
        const oldest = this.#oldest.all(output, 500) as { seq: number; n: number }[];
        if (oldest.length === 0) break;
        for (const o of oldest) {
          if (held.bytes <= maxBytes) break;
          this.#removeOne.all(output, o.seq);
          held.bytes -= Number(o.n);
          held.count--;
          dropped++;
        }
      }
      if (dropped) this.#count(output, "dropped", dropped);
      this.#db.exec("COMMIT");
      return dropped;
    } catch (err) {
      this.#db.exec("ROLLBACK");
      this.#recount(output);
      throw err;
    }
  }

  /** Up to `limit` messages of `output` after `afterSeq`, oldest first. */
  peek(output: string, limit: number, afterSeq = 0): OutboxItem[] {
    // Messages of one agent share their tags' text: parse each text once per batch.
    const tags = new Map<string, Record<string, string>>();
    return (this.#peek.all(output, afterSeq, limit) as unknown as Row[]).map((r) => {
      let t = tags.get(r.tags);
      if (!t) tags.set(r.tags, t = JSON.parse(r.tags) as Record<string, string>);
      return {
        seq: Number(r.seq),
        mid: r.mid,
        type: r.type,
        agent: r.agent,
        key: r.key,
        tags: t,
        body: r.body,
      };
    });
  }

  /**
   * Forgets `output`'s messages up to `seq` and records the outcome: `delivered` of them
   * were confirmed, `dead` dead-lettered, `filtered` dropped by the format script.
   */
  done(
    output: string,
    seq: number,
    counts: { delivered?: number; dead?: number; filtered?: number },
    now: number,
  ): void {
    const held = this.#held(output);
    this.#db.exec("BEGIN");
    try {
      const gone = this.#sizeUpTo.get(output, seq) as { count: number; bytes: number };
      this.#remove.run(output, seq);
      held.bytes -= Number(gone.bytes);
      held.count -= Number(gone.count);
      this.#ensureState(output);
      this.#db.prepare(
        `UPDATE output_state SET delivered = delivered + ?, dead = dead + ?,
         filtered = filtered + ?, last_delivered_at = coalesce(?, last_delivered_at)
         WHERE output = ?`,
      ).run(
        counts.delivered ?? 0,
        counts.dead ?? 0,
        counts.filtered ?? 0,
        counts.delivered ? now : null,
        output,
      );
      this.#db.exec("COMMIT");
    } catch (err) {
      this.#db.exec("ROLLBACK");
      this.#recount(output);
      throw err;
    }
  }

  /** Forgets the messages `seqs` of `output` (dead-lettered), counting them as `dead`. */
  forget(output: string, seqs: readonly number[], counts: { dead: number }): void {
    const held = this.#held(output);
    this.#db.exec("BEGIN");
    try {
      for (const seq of seqs) {
        for (const r of this.#removeOne.all(output, seq) as { n: number }[]) {
          held.bytes -= Number(r.n);
          held.count--;
        }
      }
      this.#ensureState(output);
      this.#db.prepare(`UPDATE output_state SET dead = dead + ? WHERE output = ?`).run(
        counts.dead,
        output,
      );
      this.#db.exec("COMMIT");
    } catch (err) {
      this.#db.exec("ROLLBACK");
      this.#recount(output);
      throw err;
    }
  }

  /** Records a failed delivery attempt. */
  failed(output: string, error: string, now: number): void {
    this.#ensureState(output);
    this.#db.prepare(
      `UPDATE output_state SET failed = failed + 1, last_error = ?, last_error_at = ?
       WHERE output = ?`,
    ).run(error.slice(0, 1000), now, output);
  }

  /** `output`'s counters. */
  counters(output: string): OutputCounters {
    const held = this.#held(output);
    const s = this.#state.get(output) as Record<string, number | string | null> | undefined;
    const n = (k: string) => Number(s?.[k] ?? 0);
    return {
      queued: held.count,
      bytes: held.bytes,
      delivered: n("delivered"),
      failed: n("failed"),
      dropped: n("dropped"),
      dead: n("dead"),
      filtered: n("filtered"),
      lastError: (s?.last_error as string | null) ?? null,
      lastErrorAt: s?.last_error_at == null ? null : Number(s.last_error_at),
      lastDeliveredAt: s?.last_delivered_at == null ? null : Number(s.last_delivered_at),
    };
  }

  #held(output: string): { bytes: number; count: number } {
    let held = this.#bytes.get(output);
    if (!held) this.#bytes.set(output, held = { bytes: 0, count: 0 });
    return held;
  }

  #recount(output: string): void {
    const r = this.#db.prepare(
      `SELECT count(*) AS count, coalesce(sum(bytes), 0) AS bytes FROM output_queue
       WHERE output = ?`,
    ).get(output) as { count: number; bytes: number };
    this.#bytes.set(output, { count: Number(r.count), bytes: Number(r.bytes) });
  }

  #ensureState(output: string): void {
    this.#db.prepare(`INSERT OR IGNORE INTO output_state (output) VALUES (?)`).run(output);
  }

  #count(output: string, field: "dropped", n: number): void {
    this.#ensureState(output);
    this.#db.prepare(`UPDATE output_state SET ${field} = ${field} + ? WHERE output = ?`).run(
      n,
      output,
    );
  }
}
