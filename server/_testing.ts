/**
 * Test fixtures for the server's unit tests: an in-memory database, recording fake
 * sockets and sessions. Not part of the public surface.
 *
 * @module
 */
import { FakeClock } from "../shared/clock.ts";
import { AuditLog, type DatabaseSync, openDatabase } from "../shared/db/mod.ts";
import { seededRandom } from "../shared/random.ts";
import type { ServerFrame } from "../shared/protocol/mod.ts";
import { type AgentStore, createAgentStore } from "./agents/agent_store.ts";
import type { AgentSocket } from "./agents/connection.ts";
import { createRegistry, type Registry } from "./agents/registry.ts";
import { createReplyBus, type ReplyBus } from "./delegate/bus.ts";
import { serverMigrations } from "./db.ts";

/** The shared pieces most tests need, on a fake clock and an in-memory database. */
export interface Fixture extends Disposable {
  clock: FakeClock;
  db: DatabaseSync;
  audit: AuditLog;
  store: AgentStore;
  registry: Registry;
  bus: ReplyBus;
}

/** Creates a {@link Fixture}; dispose it to close the database. */
export function createFixture(serverId = "s1"): Fixture {
  const clock = new FakeClock();
  const db = openDatabase(":memory:", serverMigrations);
  const audit = new AuditLog(db, clock);
  const store = createAgentStore(db, clock);
  const registry = createRegistry({ serverId, store, clock });
  const bus = createReplyBus();
  return {
    clock,
    db,
    audit,
    store,
    registry,
    bus,
    [Symbol.dispose]: () => {
      bus.close();
      db.close();
    },
  };
}

/** A deterministic Random for tests. */
export const testRandom = seededRandom(42);

/** A socket that records what the server sends and how it closed. */
export class FakeSocket implements AgentSocket {
  /** Frames sent, parsed. */
  readonly sent: Record<string, unknown>[] = [];
  /** The close, once closed. */
  closedWith?: { code: number; reason: string };
  /** Make `send` throw (socket gone). */
  broken = false;

  send(text: string): void {
    if (this.broken || this.closedWith) throw new Error("socket is closed");
    this.sent.push(JSON.parse(text));
  }

  close(code: number, reason: string): void {
    if (this.closedWith) throw new Error("socket already closed");
    this.closedWith = { code, reason };
  }

  /** The last frame sent. */
  get last(): Record<string, unknown> | undefined {
    return this.sent[this.sent.length - 1];
  }

  /** Sent frames of one type. */
  ofType(type: string): Record<string, unknown>[] {
    return this.sent.filter((f) => f.type === type);
  }
}

/** A recording session for `Registry.attach`. */
export function fakeSession(agentId: string, tags: Record<string, string> = {}) {
  const sent: ServerFrame[] = [];
  const closes: { code: number; reason: string }[] = [];
  return {
    sent,
    closes,
    session: {
      agentId,
      version: "0.1.0",
      address: "127.0.0.1:5000",
      tags,
      send: (frame: ServerFrame) => {
        if (closes.length) throw new Error("socket is closed");
        sent.push(frame);
      },
      sendEncoded: (text: string) => {
        if (closes.length) throw new Error("socket is closed");
        sent.push(JSON.parse(text));
      },
      close: (code: number, reason: string) => {
        closes.push({ code, reason });
      },
    },
  };
}

/** Pins a made-up key for `agentId` so the store has a row (registry tests). */
export function pinFake(store: AgentStore, agentId: string): void {
  store.pin(agentId, { kty: "OKP", crv: "Ed25519", x: "A".repeat(43) }, `kid-${agentId}`);
}
