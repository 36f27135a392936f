/**
 * The append-only audit log, kept in sqlite on both server and agent. Triggers refuse
 * UPDATE and DELETE, so rows can only be added.
 *
 * @module
 */
import type { DatabaseSync, Migration } from "./sqlite.ts";
import type { Clock } from "../clock.ts";
import { digestJson } from "../crypto/digest.ts";
import type { AuditRecord } from "../protocol/operator.ts";

/** The migration that creates the audit table; include it in a component's list. */
export const auditMigration: Migration = {
  name: "audit log",
  up: `
    CREATE TABLE audit (
      seq INTEGER PRIMARY KEY AUTOINCREMENT,
      ts INTEGER NOT NULL,
      actor TEXT NOT NULL,
      action TEXT NOT NULL,
      target TEXT,
      key TEXT,
      args_digest TEXT,
      outcome TEXT NOT NULL CHECK (outcome IN ('ok', 'denied', 'error')),
      reason TEXT
    );
    CREATE INDEX audit_action ON audit(action, seq);
    CREATE TRIGGER audit_no_update BEFORE UPDATE ON audit
      BEGIN SELECT RAISE(ABORT, 'audit log is append-only'); END;
    CREATE TRIGGER audit_no_delete BEFORE DELETE ON audit
      BEGIN SELECT RAISE(ABORT, 'audit log is append-only'); END;
  `,
};

/** What happened, who did it, to what. */
export interface AuditEvent {
  /** Who acted: `operator:NAME`, `agent:ID`, `server:ID`, or a peer address. */
  actor: string;
  /** What happened, e.g. `command.received`, `handshake.failed`. */
  action: string;
  /** What it was done to: an agent id, a target expression. */
  target?: string;
  /** The command key, when there is one. */
  key?: string;
  /** Command arguments; only their digest is stored. */
  args?: unknown;
  outcome: "ok" | "denied" | "error";
  /** Why, for denials and errors. */
  reason?: string;
}

/** Query options for {@link AuditLog.list}. */
export interface AuditQuery {
  /** Newest N entries (default 100, max 10000). */
  limit?: number;
  /** Only this action. */
  action?: string;
  /** Only entries after this seq. */
  after?: number;
}

/** Appends and reads audit records. Synchronous; safe to call from any handler. */
export class AuditLog {
  readonly #db: DatabaseSync;
  readonly #clock: Clock;
  readonly #listeners = new Set<(event: AuditEvent, ts: number) => void>();
  #insert?: ReturnType<DatabaseSync["prepare"]>;
  #insertTargets?: ReturnType<DatabaseSync["prepare"]>;

  constructor(db: DatabaseSync, clock: Clock) {
    this.#db = db;
    this.#clock = clock;
  }

  /** The INSERT statement, prepared once. */
  #insertStatement(): ReturnType<DatabaseSync["prepare"]> {
    return this.#insert ??= this.#db.prepare(
      "INSERT INTO audit (ts, actor, action, target, key, args_digest, outcome, reason) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
    );
  }

  /**
   * Calls `listener` after each event is recorded (e.g. to send audit records to outputs).
   * A listener must not throw; it is called synchronously. Returns the unsubscribe function.
   */
  onAppend(listener: (event: AuditEvent, ts: number) => void): () => void {
    this.#listeners.add(listener);
    return () => this.#listeners.delete(listener);
  }

  #notify(events: readonly AuditEvent[], ts: number): void {
    if (this.#listeners.size === 0) return;
    for (const listener of this.#listeners) {
      for (const event of events) {
        try {
          listener(event, ts);
        } catch (err) {
          console.error(`audit: a listener failed: ${(err as Error).message}`);
        }
      }
    }
  }

  /** Records one event. Never throws for a bad event: audit failures are reported to stderr. */
  append(event: AuditEvent): void {
    try {
      const ts = this.#clock.now();
      this.#insertStatement().run(
        ts,
        event.actor,
        event.action,
        event.target ?? null,
        event.key ?? null,
        event.args === undefined ? null : digestJson(event.args),
        event.outcome,
        event.reason ?? null,
      );
      this.#notify([event], ts);
    } catch (err) {
      console.error(`audit: failed to record ${event.action}: ${(err as Error).message}`);
    }
  }

  /** The INSERT … SELECT that writes one row per target of a JSON array, prepared once. */
  #insertTargetsStatement(): ReturnType<DatabaseSync["prepare"]> {
    return this.#insertTargets ??= this.#db.prepare(
      `INSERT INTO audit (ts, actor, action, target, key, args_digest, outcome, reason)
       SELECT ?, ?, ?, json_each.value, ?, ?, ?, ? FROM json_each(?) ORDER BY json_each.key`,
    );
  }

  /**
   * Records many events in one transaction (a command fanned out to thousands of agents).
   * Consecutive events that differ only in `target` (same actor, action, key, outcome, reason
   * and the same `args` object) are written by one statement, and events with the same `args`
   * object share one digest computation; order is kept. Like {@link AuditLog.append}, never
   * throws.
   */
  appendMany(events: readonly AuditEvent[]): void {
    if (events.length === 0) return;
    const digests = new Map<unknown, string | null>();
    const digestOf = (args: unknown) => {
      if (args === undefined) return null;
      let d = digests.get(args);
      if (d === undefined) digests.set(args, d = digestJson(args));
      return d;
    };
    const sameButTarget = (a: AuditEvent, b: AuditEvent) =>
      a.actor === b.actor && a.action === b.action && a.key === b.key && a.args === b.args &&
      a.outcome === b.outcome && a.reason === b.reason && b.target !== undefined;
    try {
      const ts = this.#clock.now();
      this.#db.exec("BEGIN");
      try {
        for (let i = 0; i < events.length;) {
          const first = events[i];
          let end = i + 1;
          if (first.target !== undefined) {
            while (end < events.length && sameButTarget(first, events[end])) end++;
          }
          const shared = [
            first.key ?? null,
            digestOf(first.args),
            first.outcome,
            first.reason ?? null,
          ] as const;
          if (end - i === 1) {
            this.#insertStatement().run(
              ts,
              first.actor,
              first.action,
              first.target ?? null,
              ...shared,
            );
          } else {
            const targets = events.slice(i, end).map((e) => e.target);
            this.#insertTargetsStatement().run(
              ts,
              first.actor,
              first.action,
              ...shared,
              JSON.stringify(targets),
            );
          }
          i = end;
        }
        this.#db.exec("COMMIT");
      } catch (err) {
        this.#db.exec("ROLLBACK");
        throw err;
      }
      this.#notify(events, ts);
    } catch (err) {
      console.error(`audit: failed to record ${events.length} events: ${(err as Error).message}`);
    }
  }

  /** Newest entries first. */
  list(query: AuditQuery = {}): AuditRecord[] {
    const limit = Math.min(Math.max(query.limit ?? 100, 1), 10_000);
    const where: string[] = [];
    const params: (string | number)[] = [];
    if (query.action) {
      where.push("action = ?");
      params.push(query.action);
    }
    if (query.after !== undefined) {
      where.push("seq > ?");
      params.push(query.after);
    }
    const sql =
      `SELECT seq, ts, actor, action, target, key, args_digest AS argsDigest, outcome, reason FROM audit
      ${where.length ? "WHERE " + where.join(" AND ") : ""} ORDER BY seq DESC LIMIT ?`;
    return this.#db.prepare(sql).all(...params, limit).map((r) =>
      ({ ...r }) as unknown as AuditRecord
    );
  }
}
