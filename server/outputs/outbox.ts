/**
 * The outputs' durable queue, in the server's sqlite: one ordered queue per output, bounded
 * by bytes (when full, the oldest messages are dropped and the drop counted), and each
 * output's counters (delivered, failed attempts, dropped, dead-lettered, last error), so
 * they survive restarts too. Message ids (`mid`) come from a persistent counter, reserved in
 * blocks, so an id is never reused.
 *
 * Messages are stored in chunks: one row holds up to a batch of one output's messages (their
 * ids, types, agents, keys and tags as JSON, the bodies joined by U+0001, which JSON text
 * never contains). A write of a thousand messages is then a row or two rather than a
 * thousand, and a delivered batch is forgotten by deleting its rows. Each message keeps its
 * own queue position (`seq`), increasing across chunks.
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

/**
 * Replaces the queue of one row per message with chunks of messages (see the module doc);
 * messages already queued become chunks of one.
 */
export const outputChunksMigration: Migration = {
  name: "output chunks",
  up: `
    CREATE TABLE output_chunks (
      id INTEGER PRIMARY KEY AUTOINCREMENT,
      output TEXT NOT NULL,
      last_seq INTEGER NOT NULL,
      count INTEGER NOT NULL,
      bytes INTEGER NOT NULL,
      meta TEXT NOT NULL,
      bodies TEXT NOT NULL
    );
    CREATE INDEX output_chunks_by_output ON output_chunks (output, last_seq);
    INSERT INTO output_chunks (output, last_seq, count, bytes, meta, bodies)
      SELECT output, seq, 1, bytes,
        json_array(json_array(json(tags)), json_array(json_array(seq, mid, type, agent, key, 0))),
        body
      FROM output_queue ORDER BY seq;
    DROP TABLE output_queue;
  `,
};

/** A message to queue (the queue assigns `seq`). */
export type NewItem = Omit<OutboxItem, "seq">;

/** One output's counters (the wire form adds name, type and state). */
export type OutputCounters = Omit<OutputInfo, "name" | "type" | "state">;

/** Ids reserved per counter write. */
const ID_BLOCK = 1000;
/** Messages per chunk unless the caller says otherwise. */
const DEFAULT_CHUNK = 500;
/** Between two bodies of a chunk: a character JSON text cannot contain. */
const SEP = "\u0001";

/** A message's fields besides its body: seq, mid, type, agent, key, index into the tags. */
type ItemMeta = [number, string, OutputMessageType, string | null, string | null, number];
/** A chunk's `meta` column: the distinct tags, then each message's fields. */
type ChunkMeta = [Record<string, string>[], ItemMeta[]];

interface ChunkRow {
  id: number;
  last_seq: number;
  count: number;
  bytes: number;
  meta: string;
  bodies: string;
}

/** The queues of every output. Synchronous. */
export class OutputQueue {
  readonly #db: DatabaseSync;
  readonly #serverId: string;
  readonly #insert: StatementSync;
  readonly #after: StatementSync;
  readonly #removeUpTo: StatementSync;
  readonly #removeChunk: StatementSync;
  readonly #rewrite: StatementSync;
  readonly #oldest: StatementSync;
  readonly #state: StatementSync;
  readonly #bytes = new Map<string, { bytes: number; count: number }>();
  /** The last queue position given out. */
  #seq: number;
  #nextId = 0;
  #reservedUntil = 0;

  constructor(db: DatabaseSync, serverId: string) {
    this.#db = db;
    this.#serverId = serverId;
    this.#insert = db.prepare(
      `INSERT INTO output_chunks (output, last_seq, count, bytes, meta, bodies)
       VALUES (?, ?, ?, ?, ?, ?)`,
    );
    this.#after = db.prepare(
      `SELECT id, last_seq, count, bytes, meta, bodies FROM output_chunks
       WHERE output = ? AND last_seq > ? ORDER BY last_seq LIMIT ?`,
    );
    this.#removeUpTo = db.prepare(
      `DELETE FROM output_chunks WHERE output = ? AND last_seq <= ? RETURNING count, bytes`,
    );
    this.#removeChunk = db.prepare(`DELETE FROM output_chunks WHERE id = ?`);
    this.#rewrite = db.prepare(
      `UPDATE output_chunks SET last_seq = ?, count = ?, bytes = ?, meta = ?, bodies = ?
       WHERE id = ?`,
    );
    this.#oldest = db.prepare(
      `SELECT id, last_seq, count, bytes, meta, bodies FROM output_chunks
       WHERE output = ? ORDER BY last_seq LIMIT 1`,
    );
    this.#state = db.prepare(`SELECT * FROM output_state WHERE output = ?`);
    for (
      const r of db.prepare(
        `SELECT output, sum(count) AS count, sum(bytes) AS bytes
         FROM output_chunks GROUP BY output`,
      ).all() as { output: string; count: number; bytes: number }[]
    ) this.#bytes.set(r.output, { bytes: Number(r.bytes), count: Number(r.count) });
    const top = db.prepare(`SELECT max(last_seq) AS seq FROM output_chunks`).get() as {
      seq: number | null;
    };
    this.#seq = Number(top.seq ?? 0);
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
   * Queues `items` for `output` in one transaction, in chunks of at most `chunk` messages
   * (the output's batch size, so a batch is a chunk), then drops the oldest messages of
   * that output until it is within `maxBytes`.
   * @returns how many old messages were dropped.
   */
  put(output: string, items: readonly NewItem[], maxBytes: number, chunk = DEFAULT_CHUNK): number {
    if (items.length === 0) return 0;
    const held = this.#held(output);
    const size = Math.max(1, chunk);
    return this.#transaction(output, () => {
      for (let at = 0; at < items.length; at += size) {
        const tags: Record<string, string>[] = [];
        const tagIndex = new Map<Readonly<Record<string, string>>, number>();
        const meta: ItemMeta[] = [];
        const bodies: string[] = [];
        let bytes = 0;
        for (let n = at; n < items.length && n < at + size; n++) {
          const i = items[n];
          let t = tagIndex.get(i.tags);
          if (t === undefined) {
            tagIndex.set(i.tags, t = tags.length);
            tags.push(i.tags);
          }
          meta.push([++this.#seq, i.mid, i.type, i.agent, i.key, t]);
          // Only text that is not valid JSON holds a raw U+0001: written as its escape.
          const body = i.body.includes(SEP) ? i.body.replaceAll(SEP, "\\u0001") : i.body;
          bodies.push(body);
          bytes += body.length;
        }
        this.#insert.run(
          output,
          this.#seq,
          meta.length,
          bytes,
          JSON.stringify([tags, meta]),
          bodies.join(SEP),
        );
        held.bytes += bytes;
        held.count += meta.length;
      }
      const dropped = this.#dropOldest(output, maxBytes);
      if (dropped) this.#count(output, "dropped", dropped);
      return dropped;
    });
  }

  /**
   * `output`'s oldest messages after queue position `afterSeq`, in whole chunks: as many as
   * fit in `limit`, and at least the first chunk (which may hold more than `limit` if the
   * batch size was lowered since it was written).
   */
  peek(output: string, limit: number, afterSeq = 0): OutboxItem[] {
    const out: OutboxItem[] = [];
    let after = afterSeq;
    for (;;) {
      const rows = this.#after.all(output, after, 16) as unknown as ChunkRow[];
      for (const row of rows) {
        if (out.length > 0 && out.length + Number(row.count) > limit) return out;
        for (const item of decode(row)) out.push(item);
        after = Number(row.last_seq);
      }
      if (rows.length < 16 || out.length >= limit) return out;
    }
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
    this.#transaction(output, () => {
      for (const r of this.#removeUpTo.all(output, seq) as { count: number; bytes: number }[]) {
        held.bytes -= Number(r.bytes);
        held.count -= Number(r.count);
      }
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
    });
  }

  /** Forgets the messages `seqs` of `output` (dead-lettered), counting them as `dead`. */
  forget(output: string, seqs: readonly number[], counts: { dead: number }): void {
    const held = this.#held(output);
    const gone = new Set(seqs);
    this.#transaction(output, () => {
      let after = Math.min(...seqs) - 1;
      const last = Math.max(...seqs);
      while (gone.size > 0 && after < last) {
        const row = (this.#after.all(output, after, 1) as unknown as ChunkRow[])[0];
        if (!row) break;
        after = Number(row.last_seq);
        const items = decode(row);
        const kept = items.filter((i) => !gone.has(i.seq));
        if (kept.length === items.length) continue;
        const removed = items.filter((i) => gone.has(i.seq));
        for (const i of removed) {
          held.bytes -= i.body.length;
          held.count--;
        }
        this.#replace(row, kept);
      }
      this.#ensureState(output);
      this.#db.prepare(`UPDATE output_state SET dead = dead + ? WHERE output = ?`).run(
        counts.dead,
        output,
      );
    });
  }

  /**
   * Runs `fn` in one transaction. If it throws, the transaction is rolled back and the
   * in-memory count of `output`'s queued messages is taken again from the table.
   */
  #transaction<T>(output: string, fn: () => T): T {
    this.#db.exec("BEGIN");
    try {
      const result = fn();
      this.#db.exec("COMMIT");
      return result;
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

  /** Drops `output`'s oldest messages until it holds at most `maxBytes`; how many went. */
  #dropOldest(output: string, maxBytes: number): number {
    const held = this.#held(output);
    let dropped = 0;
    while (held.bytes > maxBytes && held.count > 0) {
      const row = this.#oldest.get(output) as unknown as ChunkRow | undefined;
      if (!row) break;
      if (held.bytes - Number(row.bytes) >= maxBytes) {
        // All of this chunk must go (and maybe more).
        this.#removeChunk.run(row.id);
        held.bytes -= Number(row.bytes);
        held.count -= Number(row.count);
        dropped += Number(row.count);
        continue;
      }
      const items = decode(row);
      let n = 0;
      while (n < items.length && held.bytes > maxBytes) {
        held.bytes -= items[n].body.length;
        held.count--;
        n++;
      }
      dropped += n;
      this.#replace(row, items.slice(n));
    }
    return dropped;
  }

  /** Writes a chunk again with only `kept` (deletes it when nothing is left). */
  #replace(row: ChunkRow, kept: readonly OutboxItem[]): void {
    if (kept.length === 0) {
      this.#removeChunk.run(row.id);
      return;
    }
    const { meta, bodies } = encode(kept);
    let bytes = 0;
    for (const i of kept) bytes += i.body.length;
    this.#rewrite.run(kept[kept.length - 1].seq, kept.length, bytes, meta, bodies, row.id);
  }

  #held(output: string): { bytes: number; count: number } {
    let held = this.#bytes.get(output);
    if (!held) this.#bytes.set(output, held = { bytes: 0, count: 0 });
    return held;
  }

  #recount(output: string): void {
    const r = this.#db.prepare(
      `SELECT coalesce(sum(count), 0) AS count, coalesce(sum(bytes), 0) AS bytes
       FROM output_chunks WHERE output = ?`,
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

/** A chunk's messages. */
function decode(row: ChunkRow): OutboxItem[] {
  const [tags, meta] = JSON.parse(row.meta) as ChunkMeta;
  const bodies = meta.length === 1 ? [row.bodies] : row.bodies.split(SEP);
  return meta.map(([seq, mid, type, agent, key, t], n) => ({
    seq,
    mid,
    type,
    agent,
    key,
    tags: tags[t],
    body: bodies[n],
  }));
}

/** The `meta` and `bodies` columns of a chunk holding `items` (already queued). */
function encode(items: readonly OutboxItem[]): { meta: string; bodies: string } {
  const tags: Record<string, string>[] = [];
  const tagIndex = new Map<Readonly<Record<string, string>>, number>();
  const meta: ItemMeta[] = items.map((i) => {
    let t = tagIndex.get(i.tags);
    if (t === undefined) {
      tagIndex.set(i.tags, t = tags.length);
      tags.push(i.tags);
    }
    return [i.seq, i.mid, i.type, i.agent, i.key, t];
  });
  return { meta: JSON.stringify([tags, meta]), bodies: items.map((i) => i.body).join(SEP) };
}
