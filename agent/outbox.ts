/**
 * The durable outbox: replies that cannot be sent (no connection) wait in the `outbox` table
 * of agent.db, bounded, and are sent oldest first after the next welcome — also after an
 * agent restart, since the rows are on disk. When full, the oldest frames are dropped and
 * counted; the next drain first sends a `warn` log saying how many.
 *
 * @module
 */
import type { Clock, TimerId } from "../shared/clock.ts";
import type { DatabaseSync, Migration } from "../shared/db/mod.ts";
import { toJwError } from "../shared/errors.ts";
import type { Logger } from "../shared/log.ts";
import { type AgentFrame, type Log, PROTOCOL_VERSION, type Reply } from "../shared/protocol/mod.ts";
import { type Random, randomId } from "../shared/random.ts";

/** The migration creating the outbox tables; part of the agent's migration list. */
export const outboxMigration: Migration = {
  name: "outbox",
  up: `
    CREATE TABLE outbox (seq INTEGER PRIMARY KEY AUTOINCREMENT, frame TEXT NOT NULL);
    CREATE TABLE outbox_state (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
  `,
};

/** The job the drop warning claims to come from. */
export const OUTBOX_JOB = { id: "agent", key: "agent.outbox" } as const;

/** Frames sent per drain chunk (one read, one delete transaction, then a yield). */
export const DEFAULT_DRAIN_CHUNK = 500;

/** Options for {@link createOutbox}. */
export interface OutboxOptions {
  /** agent.db, with {@link outboxMigration} applied. */
  db: DatabaseSync;
  /** Most frames kept (config `outbox.maxFrames`); the oldest are dropped beyond it. */
  maxFrames: number;
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
 * Order: a reply is sent directly only when nothing is waiting; otherwise it is stored
 * behind the waiting frames, so replies reach the socket in the order they were delivered,
 * each once (a row is deleted in the same tick it is handed to the socket).
 */
export interface Outbox {
  /** Sends `frame` now if nothing is waiting and the socket takes it; else stores it. */
  deliver(frame: Reply): void;
  /**
   * Sends what is waiting, oldest first: first the drop warning if frames were dropped, then
   * the stored frames in chunks, each chunk's rows deleted in one transaction. Stops when
   * the outbox is empty, the socket refuses a frame (it stays stored), or on close. Resolves
   * with the number of stored frames sent. A call while a drain is going joins it.
   */
  drain(): Promise<number>;
  /** Frames waiting. */
  readonly size: number;
  /** Frames dropped and not yet reported by a drain. */
  readonly dropped: number;
  /** Stops draining; later deliveries are sent if possible and otherwise dropped. Idempotent. */
  close(): void;
}

/** Opens the outbox on `options.db`; frames and the drop count from a previous run remain. */
export function createOutbox(options: OutboxOptions): Outbox {
  return new DurableOutbox(options);
}

class DurableOutbox implements Outbox {
  readonly #o: OutboxOptions;
  readonly #chunk: number;
  readonly #insert;
  readonly #dropOldest;
  readonly #readChunk;
  readonly #deleteUpTo;
  readonly #first;
  readonly #setDropped;
  #size: number;
  #dropped: number;
  #draining: Promise<number> | undefined;
  #busy = false;
  #yieldTimer: TimerId | undefined;
  #wake: (() => void) | undefined;
  #closed = false;

  constructor(options: OutboxOptions) {
    this.#o = options;
    this.#chunk = Math.max(1, options.chunk ?? DEFAULT_DRAIN_CHUNK);
    const { db } = options;
    this.#insert = db.prepare("INSERT INTO outbox (frame) VALUES (?)");
    this.#dropOldest = db.prepare(
      "DELETE FROM outbox WHERE seq IN (SELECT seq FROM outbox ORDER BY seq LIMIT ?)",
    );
    this.#readChunk = db.prepare("SELECT seq, frame FROM outbox ORDER BY seq LIMIT ?");
    this.#deleteUpTo = db.prepare("DELETE FROM outbox WHERE seq <= ?");
    this.#first = db.prepare("SELECT frame FROM outbox ORDER BY seq LIMIT 1");
    this.#setDropped = db.prepare(
      "INSERT OR REPLACE INTO outbox_state (name, value) VALUES ('dropped', ?)",
    );
    const count = db.prepare("SELECT COUNT(*) AS n FROM outbox").get() as { n: number };
    this.#size = Number(count.n);
    const dropped = db.prepare("SELECT value FROM outbox_state WHERE name = 'dropped'").get() as
      | { value: number }
      | undefined;
    this.#dropped = Number(dropped?.value ?? 0);
  }

  get size(): number {
    return this.#size;
  }

  get dropped(): number {
    return this.#dropped;
  }

  deliver(frame: Reply): void {
    if (this.#size === 0 && this.#o.send(frame)) return;
    if (this.#closed) {
      this.#o.logger.debug("outbox closed: dropping a reply", { id: frame.id });
      return;
    }
    try {
      this.#store(frame);
    } catch (err) {
      this.#o.logger.error("cannot store a reply in the outbox", {
        id: frame.id,
        error: toJwError(err).message,
      });
    }
  }

  drain(): Promise<number> {
    if (this.#draining) return this.#draining;
    const drained = this.#drain();
    // A drain that finished synchronously has already cleared #busy: do not keep it.
    if (this.#busy) this.#draining = drained;
    return drained;
  }

  close(): void {
    this.#closed = true;
    if (this.#yieldTimer !== undefined) this.#o.clock.clearTimeout(this.#yieldTimer);
    this.#yieldTimer = undefined;
    this.#wake?.();
  }

  #store(frame: Reply): void {
    const { db, maxFrames, logger } = this.#o;
    db.exec("BEGIN IMMEDIATE");
    try {
      const excess = this.#size + 1 - maxFrames;
      let dropped = 0;
      if (excess > 0) {
        dropped = Number(this.#dropOldest.run(excess).changes);
        this.#setDropped.run(this.#dropped + dropped);
      }
      this.#insert.run(JSON.stringify(frame));
      db.exec("COMMIT");
      if (dropped > 0) {
        if (this.#dropped === 0) {
          logger.warn("outbox full while disconnected: dropping the oldest replies", {
            maxFrames,
          });
        }
        this.#dropped += dropped;
        this.#size -= dropped;
      }
      this.#size++;
    } catch (err) {
      db.exec("ROLLBACK");
      throw err;
    }
  }

  async #drain(): Promise<number> {
    let sent = 0;
    this.#busy = true;
    try {
      if (this.#dropped > 0) {
        if (!this.#o.send(this.#dropWarning())) return sent;
        this.#o.logger.warn("replies were dropped while disconnected", {
          dropped: this.#dropped,
        });
        this.#setDropped.run(0);
        this.#dropped = 0;
      }
      while (!this.#closed && this.#size > 0) {
        const rows = this.#readChunk.all(this.#chunk) as { seq: number; frame: string }[];
        if (rows.length === 0) {
          this.#size = 0;
          break;
        }
        let last = -1;
        let n = 0;
        let refused = false;
        for (const row of rows) {
          if (!this.#o.send(JSON.parse(row.frame))) {
            refused = true;
            break;
          }
          last = row.seq;
          n++;
        }
        if (n > 0) this.#deleteThrough(last, n);
        sent += n;
        if (refused) break;
        if (this.#size > 0) await this.#yield();
      }
      return sent;
    } catch (err) {
      this.#o.logger.error("outbox drain failed", { error: toJwError(err).message });
      return sent;
    } finally {
      // Cleared before the promise settles, so a welcome right after always starts a drain.
      this.#busy = false;
      this.#draining = undefined;
    }
  }

  /** Deletes rows up to `seq` (the `n` rows just sent) in one transaction. */
  #deleteThrough(seq: number, n: number): void {
    const { db } = this.#o;
    db.exec("BEGIN IMMEDIATE");
    try {
      this.#deleteUpTo.run(seq);
      db.exec("COMMIT");
    } catch (err) {
      db.exec("ROLLBACK");
      throw err;
    }
    this.#size -= n;
  }

  /** Lets the event loop run (sockets, timers, new replies) between chunks. */
  #yield(): Promise<void> {
    return new Promise((resolve) => {
      this.#wake = () => {
        this.#wake = undefined;
        resolve();
      };
      this.#yieldTimer = this.#o.clock.setTimeout(() => {
        this.#yieldTimer = undefined;
        this.#wake?.();
      }, 0);
    });
  }

  #dropWarning(): Log {
    const { maxFrames, clock, random } = this.#o;
    let id: string | undefined;
    const first = this.#first.get() as { frame: string } | undefined;
    if (first) id = (JSON.parse(first.frame) as { id?: string }).id;
    const dropped = this.#dropped;
    return {
      v: PROTOCOL_VERSION,
      id: id ?? `o-${randomId(random)}`,
      type: "log",
      job: { ...OUTBOX_JOB },
      seq: 0,
      ts: clock.now(),
      level: "warn",
      message: `${dropped} ${
        dropped === 1 ? "reply was" : "replies were"
      } dropped while disconnected: the outbox keeps at most ${maxFrames} frames (outbox.maxFrames)`,
      fields: { dropped, maxFrames },
    };
  }
}
