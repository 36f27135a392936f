/**
 * The state every server of a cluster shares: servers, agents, scripts and operator commands,
 * as records keyed by kind and id, each with a hybrid-logical-clock version. A change made on
 * one server gets a new version and is gossiped; a server applies a record only when its
 * version is newer than the one it holds, so replicas converge whatever order records arrive
 * in, and full-state exchanges (push-pull) repair anything a lost broadcast missed. Deleting
 * leaves a tombstone (a record without a value) that wins over older values and is forgotten
 * after `tombstoneTtlMs`.
 *
 * Versions: `{wall, logical, node}` compared in that order; `node` (the writer's server id)
 * breaks exact ties deterministically. A record stamped more than `maxDriftMs` ahead of this
 * server's clock is refused (counted) so one server with a wrong clock cannot pin a record
 * forever.
 *
 * @module
 */
import { decode, encode } from "@msgpack/msgpack";
import { deflateRawSync, inflateRawSync } from "node:zlib";
import { z } from "zod";
import type { Clock } from "../../shared/clock.ts";
import { JwError } from "../../shared/errors.ts";
import { describeIssues, Id, Tags } from "../../shared/protocol/mod.ts";

/** A hybrid logical clock stamp. */
export interface Hlc {
  /** Physical part, ms since the epoch. */
  wall: number;
  /** Counter for events within the same `wall` ms. */
  logical: number;
  /** The server that wrote it. */
  node: string;
}

/** Orders two stamps: negative when `a` is older. */
export function compareHlc(a: Hlc, b: Hlc): number {
  if (a.wall !== b.wall) return a.wall - b.wall;
  if (a.logical !== b.logical) return a.logical - b.logical;
  return a.node < b.node ? -1 : a.node > b.node ? 1 : 0;
}

const HlcSchema = z.object({
  wall: z.number().int().nonnegative(),
  logical: z.number().int().nonnegative().max(2 ** 31),
  node: z.string().min(1).max(64),
}).strict();

/** A server of the cluster as the others see it. */
export const ServerRecord = z.object({
  id: z.string().min(1).max(64),
  /** Gossip "host:port". */
  gossip: z.string().max(300),
  /** Base URL for agents and operators. */
  url: z.string().max(2048),
  /** Lifeguard health score, 0 = healthy. */
  health: z.number().int().min(0).max(1000),
  /**
   * The health score agent placement uses: `health` after hysteresis (a change counts once
   * it has lasted a while), so a flickering score does not move agents. Absent: `health`.
   */
  settled: z.number().int().min(0).max(1000).optional(),
}).strict();
export type ServerRecord = z.infer<typeof ServerRecord>;

/** An agent known to the cluster. */
export const AgentRecord = z.object({
  id: Id,
  /** Its pinned public key's x (Ed25519) and key id. */
  key: z.object({ x: z.string().max(64), kid: z.string().max(64) }).strict(),
  /** The server it is connected to, or was last. */
  server: z.string().max(64),
  tags: Tags,
  connected: z.boolean(),
  /** ms since the epoch. */
  lastSeen: z.number().int().nonnegative(),
}).strict();
export type AgentRecord = z.infer<typeof AgentRecord>;

/** A script some server holds; its content is fetched over HTTP from `holder`. */
export const ScriptRecord = z.object({
  name: z.string().max(64),
  version: z.number().int().min(1),
  sha256: z.string().max(80),
  signer: z.string().max(128),
  /** Base URL of a server that holds the file. */
  holder: z.string().max(2048),
}).strict();
export type ScriptRecord = z.infer<typeof ScriptRecord>;

/** An operator command given to one server, for every server to deliver to its agents. */
export const CommandRecord = z.object({
  /** Envelope id. */
  id: Id,
  target: z.string().max(512),
  job: z.record(z.string(), z.unknown()),
  meta: z.record(z.string(), z.unknown()).optional(),
  /** Operator who gave it, as audited (`operator:NAME`). */
  actor: z.string().max(128),
  /** The server it was given to. */
  origin: z.string().max(64),
  /** When it stops being delivered (ms since the epoch). */
  expires: z.number().int().nonnegative(),
  /** How long it may wait in a mailbox for an offline agent (ms); absent or 0: it does not. */
  ttl: z.number().int().nonnegative().optional(),
}).strict();
export type CommandRecord = z.infer<typeof CommandRecord>;

/** Value schemas by kind. */
export const RECORD_KINDS = {
  server: ServerRecord,
  agent: AgentRecord,
  script: ScriptRecord,
  command: CommandRecord,
} as const;
export type RecordKind = keyof typeof RECORD_KINDS;
/** The value type of a kind. */
export type ValueOf<K extends RecordKind> = z.infer<(typeof RECORD_KINDS)[K]>;

/** One replicated record; `value` null is a tombstone. */
export interface StateRecord<K extends RecordKind = RecordKind> {
  kind: K;
  id: string;
  value: ValueOf<K> | null;
  version: Hlc;
}

const RecordSchema = z.object({
  kind: z.enum(Object.keys(RECORD_KINDS) as [RecordKind, ...RecordKind[]]),
  id: z.string().min(1).max(512),
  value: z.unknown(),
  version: HlcSchema,
}).strict();

/** What changed, for listeners. */
export interface StateChange<K extends RecordKind = RecordKind> {
  kind: K;
  id: string;
  /** The new value, or null when deleted. */
  value: ValueOf<K> | null;
  /** The value before, or null when there was none (or a tombstone). */
  previous: ValueOf<K> | null;
  /** True when it came from another server. */
  remote: boolean;
}

/** Options for {@link ReplicatedState}. */
export interface ReplicatedStateOptions {
  /** This server's id (the `node` of its stamps). */
  node: string;
  clock: Clock;
  /** Refuse records stamped further ahead of our clock than this. Default 60 s. */
  maxDriftMs?: number;
  /** How long a tombstone is kept. Default 24 h. */
  tombstoneTtlMs?: number;
}

/** Counters. */
export interface StateStats {
  records: number;
  tombstones: number;
  applied: number;
  stale: number;
  refusedDrift: number;
  invalid: number;
}

/** The replicated records of one server. Synchronous; call from one event loop. */
export class ReplicatedState {
  readonly #node: string;
  readonly #clock: Clock;
  readonly #maxDrift: number;
  readonly #tombstoneTtl: number;
  readonly #records = new Map<string, StateRecord>();
  readonly #listeners = new Set<(change: StateChange) => void>();
  #last: Hlc;
  #stats = { applied: 0, stale: 0, refusedDrift: 0, invalid: 0 };

  constructor(options: ReplicatedStateOptions) {
    this.#node = options.node;
    this.#clock = options.clock;
    this.#maxDrift = options.maxDriftMs ?? 60_000;
    this.#tombstoneTtl = options.tombstoneTtlMs ?? 24 * 3600_000;
    this.#last = { wall: 0, logical: 0, node: this.#node };
  }

  /** A new stamp, later than every stamp this server has made or seen. */
  #tick(): Hlc {
    const now = this.#clock.now();
    this.#last = now > this.#last.wall
      ? { wall: now, logical: 0, node: this.#node }
      : { wall: this.#last.wall, logical: this.#last.logical + 1, node: this.#node };
    return this.#last;
  }

  /** Moves the clock past a stamp seen from another server. */
  #observe(seen: Hlc): void {
    if (
      seen.wall > this.#last.wall ||
      (seen.wall === this.#last.wall && seen.logical > this.#last.logical)
    ) {
      this.#last = { wall: seen.wall, logical: seen.logical, node: this.#node };
    }
  }

  /**
   * Writes a value (or, with `null`, a tombstone) under a new version and returns the record
   * to gossip.
   * @throws JwError `invalid_message` when the value fails its kind's schema.
   */
  set<K extends RecordKind>(kind: K, id: string, value: ValueOf<K> | null): StateRecord<K> {
    if (value !== null) {
      const checked = RECORD_KINDS[kind].safeParse(value);
      if (!checked.success) {
        throw new JwError(
          "invalid_message",
          `bad ${kind} record ${id}: ${describeIssues(checked.error)}`,
        );
      }
    }
    const record: StateRecord<K> = { kind, id, value, version: this.#tick() };
    this.#store(record, false);
    return record;
  }

  /** The value under `kind`/`id`, or undefined (also for a tombstone). */
  get<K extends RecordKind>(kind: K, id: string): ValueOf<K> | undefined {
    const r = this.#records.get(keyOf(kind, id));
    return (r?.value ?? undefined) as ValueOf<K> | undefined;
  }

  /** Every live value of a kind, by id. */
  list<K extends RecordKind>(kind: K): ValueOf<K>[] {
    const out: ValueOf<K>[] = [];
    for (const r of this.#records.values()) {
      if (r.kind === kind && r.value !== null) out.push(r.value as ValueOf<K>);
    }
    return out;
  }

  /**
   * Applies a record from another server when it is newer than ours.
   * @returns true when applied.
   */
  merge(record: StateRecord): boolean {
    if (record.version.wall > this.#clock.now() + this.#maxDrift) {
      this.#stats.refusedDrift++;
      return false;
    }
    if (record.value !== null) {
      const checked = RECORD_KINDS[record.kind].safeParse(record.value);
      if (!checked.success) {
        this.#stats.invalid++;
        return false;
      }
    }
    this.#observe(record.version);
    const held = this.#records.get(keyOf(record.kind, record.id));
    if (held && compareHlc(record.version, held.version) <= 0) {
      this.#stats.stale++;
      return false;
    }
    this.#store(record, true);
    this.#stats.applied++;
    return true;
  }

  /**
   * Drops a record here only, without a tombstone and without telling anyone (for records
   * that expire by themselves everywhere, like commands). A copy merged again later is
   * accepted as new.
   */
  forget(kind: RecordKind, id: string): void {
    this.#records.delete(keyOf(kind, id));
  }

  /** Every record, tombstones included (for a full-state exchange). */
  snapshot(): StateRecord[] {
    this.#purge();
    return [...this.#records.values()];
  }

  /** Merges a full state; returns how many records were applied. */
  mergeAll(records: readonly StateRecord[]): number {
    let applied = 0;
    for (const r of records) if (this.merge(r)) applied++;
    return applied;
  }

  /** Calls `listener` for every applied change (local or remote); returns an unsubscribe. */
  onChange(listener: (change: StateChange) => void): () => void {
    this.#listeners.add(listener);
    return () => this.#listeners.delete(listener);
  }

  /** Counters. */
  stats(): StateStats {
    let tombstones = 0;
    for (const r of this.#records.values()) if (r.value === null) tombstones++;
    return { records: this.#records.size - tombstones, tombstones, ...this.#stats };
  }

  #store(record: StateRecord, remote: boolean): void {
    const key = keyOf(record.kind, record.id);
    const previous = this.#records.get(key)?.value ?? null;
    this.#records.set(key, record);
    const change: StateChange = {
      kind: record.kind,
      id: record.id,
      value: record.value,
      previous,
      remote,
    };
    for (const listener of this.#listeners) listener(change);
  }

  /** Forgets tombstones older than the TTL. */
  #purge(): void {
    const cutoff = this.#clock.now() - this.#tombstoneTtl;
    for (const [key, r] of this.#records) {
      if (r.value === null && r.version.wall < cutoff) this.#records.delete(key);
    }
  }
}

function keyOf(kind: RecordKind, id: string): string {
  return `${kind}\u0000${id}`;
}

/** Most bytes a packed state may inflate to (refuses compression bombs). */
export const MAX_STATE_BYTES = 64 * 1024 * 1024;

/**
 * Encodes the whole state for a push-pull: msgpack, deflated (the records repeat their field
 * names, so this is several times smaller), after a format byte.
 */
export function packState(records: readonly StateRecord[]): Uint8Array {
  const deflated = deflateRawSync(encodeRecords(records));
  const out = new Uint8Array(deflated.length + 1);
  out[0] = PACKED_DEFLATE;
  out.set(deflated, 1);
  return out;
}

/**
 * Decodes what {@link packState} made.
 * @throws JwError `invalid_message` for an unknown format, a bad deflate stream, more than
 *   {@link MAX_STATE_BYTES} once inflated, or bad records.
 */
export function unpackState(bytes: Uint8Array): StateRecord[] {
  if (bytes[0] !== PACKED_DEFLATE) {
    throw new JwError("invalid_message", `unknown state format ${bytes[0]}`);
  }
  let raw: Uint8Array;
  try {
    raw = inflateRawSync(bytes.subarray(1), { maxOutputLength: MAX_STATE_BYTES });
  } catch (err) {
    throw new JwError("invalid_message", `state does not inflate: ${(err as Error).message}`);
  }
  return decodeRecords(raw);
}

const PACKED_DEFLATE = 1;

/** Encodes records for gossip (one broadcast) or push-pull (the whole state). */
export function encodeRecords(records: readonly StateRecord[]): Uint8Array {
  return encode(records);
}

/**
 * Decodes records, checking each one's envelope (kind, id, version); values are checked
 * against their kind's schema by {@link ReplicatedState.merge}.
 * @throws JwError `invalid_message` on anything malformed.
 */
export function decodeRecords(bytes: Uint8Array): StateRecord[] {
  let raw: unknown;
  try {
    raw = decode(bytes);
  } catch (err) {
    throw new JwError("invalid_message", `state is not msgpack: ${(err as Error).message}`);
  }
  const parsed = z.array(RecordSchema).safeParse(raw);
  if (!parsed.success) {
    throw new JwError("invalid_message", `bad state records: ${describeIssues(parsed.error)}`);
  }
  return parsed.data as StateRecord[];
}
