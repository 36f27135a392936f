/**
 * The durable, acknowledged outbox. Every reply is written to the `outbox` table of
 * agent.db before it is sent, carrying its row number as `dseq`; the server acknowledges
 * (`ack {upTo}`) what it has processed and only then is the row deleted. After every
 * welcome the agent resends what is still unacknowledged, oldest first, so replies made
 * while disconnected, or sent into a connection that died silently, or waiting when the
 * agent stopped, are delivered — in order, and once (the server drops a `dseq` it has
 * already processed).
 *
 * Bounded: beyond `maxFrames` rows, or `maxSize` bytes of stored JSON, the oldest are
 * dropped and counted; the next drain first
 * sends a `warn` log saying how many.
 *
 * @module
 */
import type { Clock } from "../shared/clock.ts";
import type { DatabaseSync, Migration } from "../shared/db/mod.ts";
import { JwError, toJwError } from "../shared/errors.ts";
import type { Logger } from "../shared/log.ts";
import {
  type AgentFrame,
  type Log,
  PROTOCOL_VERSION,
  type Reply,
  utf8Length,
} from "../shared/protocol/mod.ts";
import { type Random, randomId } from "../shared/random.ts";

/** The migration creating the outbox tables; part of the agent's migration list. */
export const outboxMigration: Migration = {
  name: "outbox",
  up: `
    CREATE TABLE outbox (seq INTEGER PRIMARY KEY AUTOINCREMENT, frame TEXT NOT NULL);
    CREATE TABLE outbox_state (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
  `,
};

/** The job the drop warning claims to come from (the id "agent" is reserved for it). */
export const OUTBOX_JOB = { id: "agent", key: "agent.outbox" } as const;

/** Bytes a `dseq` field adds to a stored frame when it is sent. */
const DSEQ_ROOM = 32;

/** Frames sent per drain chunk (one read, then a yield to the event loop). */
export const DEFAULT_DRAIN_CHUNK = 500;

/** Options for {@link createOutbox}. */
export interface OutboxOptions {
  /** agent.db, with {@link outboxMigration} applied. */
  db: DatabaseSync;
  /** Most frames kept (config `outbox.maxFrames`); the oldest are dropped beyond it. */
  maxFrames: number;
  /**
   * Most bytes (UTF-8) of stored frame JSON (config `outbox.maxSize`); the oldest frames
   * are dropped beyond it. Default unbounded.
   */
  maxSize?: number;
  /** Hands a frame to the socket; false when there is no connection (nothing sent). */
  send(frame: AgentFrame): boolean;
  clock: Clock;
  random: Random;
  logger: Logger;
  /** Frames per drain chunk. Default {@link DEFAULT_DRAIN_CHUNK}. */
  chunk?: number;
}

/**
 * The outbox. Synchronous except for {@link Outbox.drain}, which yields to the event loop
 * (a 0 ms Clock timer) between chunks; used from one event loop.
 *
 * Order: a reply goes straight to the socket only while the outbox is "live" — after a
 * drain has sent every older row on this connection; otherwise it waits in the table and
 * the running drain picks it up. So replies reach the server in the order they were made.
 */
export interface Outbox {
  /** Stores `frame` durably and, while live, sends it at once with its `dseq`. */
  deliver(frame: Reply): void;
  /** The server has processed every frame up to `upTo`: delete those rows. */
  ack(upTo: number): void;
  /**
   * After a welcome: sends the drop warning if frames were dropped, then every stored
   * (unacknowledged) frame oldest first, in chunks, then turns live. Stops early when the
   * socket refuses a frame or on close. Resolves with the number of stored frames sent. A
   * call while a drain is going joins it.
   */
  drain(): Promise<number>;
  /** The connection ended: stop sending until the next {@link Outbox.drain}. */
  disconnected(): void;
  /**
   * The largest frame the server accepts (from its welcome). Replies that cannot fit are
   * dropped and counted instead of being stored, and stored ones are dropped at the next
   * drain, so one oversized reply cannot block delivery of everything behind it.
   */
  limitFrames(bytes: number): void;
  /**
   * Identifies this outbox's `dseq` numbering (sent in `hello`); a new database gets a new
   * one, so the server does not mistake its numbers for ones already seen.
   */
  readonly stream: string;
  /** Frames stored and not yet acknowledged. */
  readonly size: number;
  /** Frames dropped and not yet reported by a drain. */
  readonly dropped: number;
  /** Stops draining and sending; stored frames stay for the next start. Idempotent. */
  close(): void;
}

/** Opens the outbox on `options.db`; frames and the drop count from a previous run remain. */
export function createOutbox(options: OutboxOptions): Outbox {
  return new DurableOutbox(options);
}

class DurableOutbox implements Outbox {
  readonly stream: string;
  readonly #o: OutboxOptions;
  readonly #chunk: number;
  readonly #insert;
  readonly #dropFirst;
  readonly #readAfter;
  readonly #deleteUpTo;
  readonly #deleteSeq;
  readonly #setState;
  #size: number;
  /** Bytes (UTF-8) of JSON stored. */
  #chars: number;
  #dropped: number;
  /** True once a drain has caught up on this connection: new frames go straight out. */
  #live = false;
  /** The server's frame limit minus room for `dseq`; Infinity until a welcome says. */
  #frameLimit = Infinity;
  /** Bumped by every drain; an older drain stops when it sees a newer generation. */
  #generation = 0;
  #wake: (() => void) | undefined;
  #closed = false;

  constructor(options: OutboxOptions) {
    this.#o = options;
    this.#chunk = Math.max(1, options.chunk ?? DEFAULT_DRAIN_CHUNK);
    const { db } = options;
    this.#insert = db.prepare("INSERT INTO outbox (frame) VALUES (?)");
    this.#dropFirst = db.prepare(
      "DELETE FROM outbox WHERE seq = (SELECT MIN(seq) FROM outbox) RETURNING LENGTH(CAST(frame AS BLOB)) AS n",
    );
    this.#readAfter = db.prepare(
      "SELECT seq, frame FROM outbox WHERE seq > ? ORDER BY seq LIMIT ?",
    );
    this.#deleteSeq = db.prepare(
      "DELETE FROM outbox WHERE seq = ? RETURNING LENGTH(CAST(frame AS BLOB)) AS n",
    );
    this.#deleteUpTo = db.prepare(
      "DELETE FROM outbox WHERE seq <= ? RETURNING LENGTH(CAST(frame AS BLOB)) AS n",
    );
    this.#setState = db.prepare("INSERT OR REPLACE INTO outbox_state (name, value) VALUES (?, ?)");
    const count = db.prepare(
      "SELECT COUNT(*) AS n, COALESCE(SUM(LENGTH(CAST(frame AS BLOB))), 0) AS chars FROM outbox",
    ).get() as { n: number; chars: number };
    this.#size = Number(count.n);
    this.#chars = Number(count.chars);
    const state = (name: string) =>
      (db.prepare("SELECT value FROM outbox_state WHERE name = ?").get(name) as
        | { value: number }
        | undefined)?.value;
    this.#dropped = Number(state("dropped") ?? 0);
    let stream = state("stream");
    if (stream === undefined) {
      stream = Math.floor(options.random.float() * 2 ** 48);
      this.#setState.run("stream", stream);
    }
    this.stream = `o${Number(stream).toString(36)}`;
  }

  get size(): number {
    return this.#size;
  }

  get dropped(): number {
    return this.#dropped;
  }

  deliver(frame: Reply): void {
    if (this.#closed) {
      this.#o.logger.debug("outbox closed: dropping a reply", { id: frame.id });
      return;
    }
    let seq: number;
    try {
      seq = this.#store(frame);
    } catch (err) {
      const e = toJwError(err);
      if (e.code === "frame_too_large") {
        this.#o.logger.warn("dropping a reply too large to deliver", {
          id: frame.id,
          error: e.message,
        });
        return;
      }
      this.#o.logger.error("cannot store a reply in the outbox", {
        id: frame.id,
        error: e.message,
      });
      // Still try to deliver it now rather than lose it silently.
      if (this.#live) this.#o.send(frame);
      return;
    }
    if (this.#live && !this.#o.send({ ...frame, dseq: seq })) this.#live = false;
  }

  ack(upTo: number): void {
    try {
      const removed = this.#deleteUpTo.all(upTo) as { n: number }[];
      this.#size = Math.max(0, this.#size - removed.length);
      for (const row of removed) this.#chars -= Number(row.n);
      if (this.#size === 0) this.#chars = 0;
    } catch (err) {
      this.#o.logger.error("cannot forget acknowledged replies", {
        upTo,
        error: toJwError(err).message,
      });
    }
  }

  drain(): Promise<number> {
    // A drain still going belongs to an earlier connection: stop it and start over from the
    // oldest row on this one (the server only acks what reached it on this connection).
    const generation = ++this.#generation;
    this.#wake?.();
    return this.#drain(generation);
  }

  disconnected(): void {
    this.#live = false;
  }

  limitFrames(bytes: number): void {
    this.#frameLimit = bytes;
  }

  close(): void {
    this.#closed = true;
    this.#live = false;
    this.#wake?.();
  }

  /** Inserts `frame`, dropping the oldest rows beyond the bound; returns its seq. */
  #store(frame: Reply): number {
    const { maxFrames } = this.#o;
    const maxSize = this.#o.maxSize ?? Infinity;
    const text = JSON.stringify(frame);
    const bytes = utf8Length(text);
    if (bytes + DSEQ_ROOM > this.#frameLimit) {
      this.#countDropped(1);
      throw new JwError(
        "frame_too_large",
        `reply of ${bytes} bytes exceeds the server's frame limit`,
      );
    }
    if (bytes > maxSize) {
      // Storing it would push out everything else and still not fit: drop it alone.
      this.#countDropped(1);
      throw new JwError("frame_too_large", `reply of ${bytes} bytes exceeds outbox.maxSize`);
    }
    let dropped = 0;
    while (this.#size > 0 && (this.#size + 1 > maxFrames || this.#chars + bytes > maxSize)) {
      const row = this.#dropFirst.get() as { n: number } | undefined;
      if (!row) break;
      this.#size--;
      this.#chars -= Number(row.n);
      dropped++;
    }
    if (dropped > 0) this.#countDropped(dropped);
    const seq = Number(this.#insert.run(text).lastInsertRowid);
    this.#size++;
    this.#chars += bytes;
    return seq;
  }

  /** Deletes one stored frame (not an acknowledgement: older rows stay). */
  #deleteOne(seq: number): void {
    const row = this.#deleteSeq.get(seq) as { n: number } | undefined;
    if (!row) return;
    this.#size--;
    this.#chars -= Number(row.n);
  }

  #countDropped(n: number): void {
    if (this.#dropped === 0) {
      this.#o.logger.warn("outbox full: dropping the oldest unacknowledged replies", {
        maxFrames: this.#o.maxFrames,
        maxSize: this.#o.maxSize,
      });
    }
    this.#dropped += n;
    this.#setState.run("dropped", this.#dropped);
  }

  async #drain(generation: number): Promise<number> {
    this.#live = false;
    let sent = 0;
    try {
      if (this.#dropped > 0) {
        if (!this.#o.send(this.#dropWarning())) return sent;
        this.#o.logger.warn("replies were dropped while they could not be delivered", {
          dropped: this.#dropped,
        });
        this.#dropped = 0;
        this.#setState.run("dropped", 0);
      }
      let after = 0;
      while (!this.#closed && generation === this.#generation) {
        const rows = this.#readAfter.all(after, this.#chunk) as { seq: number; frame: string }[];
        if (rows.length === 0) {
          // Caught up: nothing older is unsent on this connection, so go live. No await
          // between the empty read and this line, so no delivery slips in between.
          this.#live = true;
          return sent;
        }
        for (const row of rows) {
          after = row.seq;
          if (utf8Length(row.frame) + DSEQ_ROOM > this.#frameLimit) {
            // Stored before this server said its limit; it would be refused on every resend.
            this.#deleteOne(row.seq);
            this.#countDropped(1);
            continue;
          }
          const frame = JSON.parse(row.frame) as Reply;
          if (!this.#o.send({ ...frame, dseq: row.seq })) return sent;
          sent++;
        }
        // A full chunk may have more behind it: let the event loop run before reading on.
        if (rows.length === this.#chunk) await this.#yield();
      }
      return sent;
    } catch (err) {
      this.#o.logger.error("outbox drain failed", { error: toJwError(err).message });
      return sent;
    }
  }

  /** Lets the event loop run (sockets, timers, new replies) between chunks. */
  #yield(): Promise<void> {
    return new Promise((resolve) => {
      const { clock } = this.#o;
      const timer = clock.setTimeout(() => wake(), 0);
      const wake = () => {
        clock.clearTimeout(timer);
        if (this.#wake === wake) this.#wake = undefined;
        resolve();
      };
      this.#wake = wake;
    });
  }

  #dropWarning(): Log {
    const { maxFrames, clock, random } = this.#o;
    const dropped = this.#dropped;
    return {
      v: PROTOCOL_VERSION,
      id: `o-${randomId(random)}`,
      type: "log",
      job: { ...OUTBOX_JOB },
      seq: 0,
      ts: clock.now(),
      level: "warn",
      message: `${dropped} ${
        dropped === 1 ? "reply was" : "replies were"
      } dropped before the server acknowledged them: the outbox keeps at most ${maxFrames} frames (outbox.maxFrames) and ${
        this.#o.maxSize ?? "unbounded"
      } characters (outbox.maxSize)`,
      fields: { dropped, maxFrames },
    };
  }
}
