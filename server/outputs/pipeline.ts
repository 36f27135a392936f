/**
 * The outputs pipeline: every message agents send (output, log, setTag from the reply bus,
 * `alive` from the connections) and every audit record becomes one JSON message with a stable
 * `mid`, is matched against each output's filter, and is queued in that output's durable
 * sqlite queue (outbox.ts). One drain loop per output takes batches in order, runs the output's
 * format script (format.ts) if it has one, hands the batch to the backend and forgets it only
 * once the backend confirmed it. A backend that is down is retried with backoff while messages
 * keep accumulating on disk (bounded; the oldest dropped and counted). A message the
 * destination refuses for good, or the format script fails on, goes to the output's
 * dead-letter file (`DATA/outputs/NAME.dead.jsonl`) unformatted, and is counted.
 *
 * Messages are buffered in memory for at most a few milliseconds and written in one
 * transaction; {@link Outputs.flush} writes them at once (the agent connections call it before
 * acknowledging replies, so an acknowledged reply is on disk).
 *
 * @module
 */
import { appendFile, mkdir } from "node:fs/promises";
import { join } from "node:path";
import type { Clock, TimerId } from "../../shared/clock.ts";
import type { OutputConfig, OutputMessageType } from "../../shared/config/outputs.ts";
import type { AuditEvent } from "../../shared/db/mod.ts";
import { JwError, toJwError } from "../../shared/errors.ts";
import { type Logger, silentLogger } from "../../shared/log.ts";
import type { Random } from "../../shared/random.ts";
import type { Alive, RelayedReply } from "../../shared/protocol/mod.ts";
import { relayedJson } from "../delegate/bus.ts";
import type { Backend, OutboxItem } from "./backend.ts";
import type { Formatter } from "./format.ts";
import type { OutputInfo } from "../../shared/protocol/operator.ts";
import type { NewItem, OutputQueue } from "./outbox.ts";

/** How long messages wait in memory before they are written, ms. */
export const FLUSH_MS = 5;
/** Messages buffered before a write regardless of time. */
export const FLUSH_COUNT = 1000;

/** One output's state as `GET /v1/outputs` shows it. */
export type OutputStatus = OutputInfo;

/** Options for {@link startOutputs}. */
export interface OutputsOptions {
  serverId: string;
  outputs: readonly OutputConfig[];
  queue: OutputQueue;
  /** Makes each output's backend. */
  backend: (config: OutputConfig) => Backend;
  /** Loads a format script (see format.ts). */
  formatter?: (path: string) => Promise<Formatter>;
  /** Where dead-letter files go (`DIR/NAME.dead.jsonl`). */
  deadLetterDir: string;
  clock: Clock;
  random: Random;
  logger?: Logger;
}

/** The running pipeline. */
export interface Outputs {
  /**
   * A reply relayed from an agent (output, log, setTag), with the agent's current tags. Tags
   * objects are never changed in place (the registry makes a new one at each change): their
   * JSON is kept per object.
   */
  reply(reply: RelayedReply, tags: Readonly<Record<string, string>>): void;
  /** An agent's heartbeat. */
  alive(agentId: string, frame: Alive, tags: Readonly<Record<string, string>>): void;
  /** An audit record, as written. */
  audit(event: AuditEvent, ts: number): void;
  /** Writes buffered messages to the queues now. */
  flush(): void;
  /** Every output's state. */
  status(): OutputStatus[];
  /** Writes what is buffered, stops the drain loops (a batch in flight is retried after a restart) and closes the backends. */
  close(): Promise<void>;
}

/** What became of a batch handed to a backend. */
type Outcome = Delivered | { ok: false; error: unknown };
interface Delivered {
  ok: true;
  delivered: number;
  dead: { item: OutboxItem; reason: string }[];
  filtered: number;
}

/** A batch handed to a backend. */
interface Flight {
  batch: OutboxItem[];
  /** Its last message's queue position. */
  last: number;
  outcome: Promise<Outcome>;
  /** Set as soon as it failed (before anyone awaited the outcome). */
  failed: boolean;
}

interface Lane {
  config: OutputConfig;
  backend: Backend;
  formatter?: Formatter;
  buffer: NewItem[];
  state: OutputStatus["state"];
  wake?: () => void;
  loop?: Promise<void>;
  failures: number;
}

/**
 * Starts the pipeline: a backend and drain loop per output (format scripts are loaded
 * first).
 * @throws JwError `config` when a format script cannot be loaded.
 */
export async function startOutputs(options: OutputsOptions): Promise<Outputs> {
  const { queue, clock, random, serverId } = options;
  const logger = options.logger ?? silentLogger;
  const lanes: Lane[] = [];
  for (const config of options.outputs) {
    const formatter = config.format && options.formatter
      ? await options.formatter(config.format)
      : undefined;
    lanes.push({
      config,
      backend: options.backend(config),
      formatter,
      buffer: [],
      state: "idle",
      failures: 0,
    });
  }
  let closed = false;
  let flushTimer: TimerId | undefined;
  let buffered = 0;

  const flush = () => {
    if (flushTimer !== undefined) {
      clock.clearTimeout(flushTimer);
      flushTimer = undefined;
    }
    buffered = 0;
    for (const lane of lanes) {
      if (lane.buffer.length === 0) continue;
      const items = lane.buffer;
      lane.buffer = [];
      try {
        const { maxBytes, batch } = lane.config.queue;
        const dropped = queue.put(lane.config.name, items, maxBytes, batch);
        if (dropped > 0) {
          logger.warn("output queue full: dropped the oldest messages", {
            output: lane.config.name,
            dropped,
          });
        }
      } catch (err) {
        logger.error("cannot queue messages for an output", {
          output: lane.config.name,
          messages: items.length,
          error: String(err),
        });
      }
      lane.wake?.();
    }
  };

  const enqueue = (item: Omit<NewItem, "mid" | "body">, body: (mid: string) => string) => {
    if (closed || lanes.length === 0) return;
    let mid: string | undefined;
    let text: string | undefined;
    for (const lane of lanes) {
      if (!matches(lane.config, item)) continue;
      mid ??= queue.newMid();
      text ??= body(mid);
      const { type, agent, key, tags } = item;
      lane.buffer.push({ type, agent, key, tags, mid, body: text });
      buffered++;
    }
    if (buffered >= FLUSH_COUNT) flush();
    else if (buffered > 0 && flushTimer === undefined) {
      flushTimer = clock.setTimeout(flush, FLUSH_MS);
    }
  };

  // Most of every message's JSON repeats: the server, the type, the agent, its tags.
  const serverJson = JSON.stringify(serverId);
  const quoted = new Map<string, string>();
  const quote = (text: string): string => {
    let json = quoted.get(text);
    if (json === undefined) {
      if (quoted.size >= 100_000) quoted.clear();
      quoted.set(text, json = JSON.stringify(text));
    }
    return json;
  };
  const tagsJson = new WeakMap<Readonly<Record<string, string>>, string>();
  const tagsOf = (tags: Readonly<Record<string, string>>): string => {
    let json = tagsJson.get(tags);
    if (json === undefined) tagsJson.set(tags, json = JSON.stringify(tags));
    return json;
  };
  const prefix = (mid: string, type: string, extra: string) =>
    `{"mid":${JSON.stringify(mid)},"server":${serverJson},"type":${quote(type)}${extra}`;

  for (const lane of lanes) lane.loop = drain(lane);

  /**
   * Formats `batch` and hands it to the backend (`after`: the last message of the batch it
   * follows, 0 when it starts from the oldest); the outcome never rejects.
   */
  function launch(lane: Lane, batch: OutboxItem[], after: number): Flight {
    const flight = { batch, last: batch[batch.length - 1].seq, failed: false } as Flight;
    flight.outcome = (async (): Promise<Outcome> => {
      try {
        const { send, dead, filtered } = await prepare(lane, batch);
        if (send.length > 0) await lane.backend.send(send, after);
        return { ok: true, delivered: send.length, dead, filtered };
      } catch (error) {
        flight.failed = true;
        return { ok: false, error };
      }
    })();
    return flight;
  }

  /** Forgets a delivered batch (after writing what the format script failed on). */
  async function record(lane: Lane, flight: Flight, outcome: Delivered): Promise<void> {
    const name = lane.config.name;
    await deadLetter(lane, outcome.dead);
    queue.done(
      name,
      flight.last,
      { delivered: outcome.delivered, dead: outcome.dead.length, filtered: outcome.filtered },
      clock.now(),
    );
    if (lane.failures > 0) {
      logger.info("output delivering again", { output: name, after: lane.failures });
    }
    lane.failures = 0;
    lane.state = "sending";
  }

  /**
   * One output's drain loop: hands out up to the backend's `window` batches at once, takes
   * their outcomes in queue order, and after a failure waits for the rest and starts again
   * from the oldest message still queued.
   */
  async function drain(lane: Lane): Promise<void> {
    const name = lane.config.name;
    const window = Math.max(1, lane.backend.window ?? 1);
    const inflight: Flight[] = [];
    /** The last queued message handed out (0: start from the oldest). */
    let after = 0;
    while (!closed) {
      if (!inflight.some((f) => f.failed)) {
        while (inflight.length < window) {
          const batch = queue.peek(name, lane.config.queue.batch, after);
          if (batch.length === 0) break;
          inflight.push(launch(lane, batch, after));
          after = batch[batch.length - 1].seq;
        }
      }
      if (inflight.length === 0) {
        lane.state = "idle";
        await new Promise<void>((resolve) => (lane.wake = resolve));
        lane.wake = undefined;
        continue;
      }
      if (lane.state !== "retrying") lane.state = "sending";
      const head = inflight[0];
      if (inflight.length < window && !head.failed) {
        // Room for another batch: send it as soon as one is queued.
        const woke = await Promise.race([
          head.outcome.then(() => false),
          new Promise<boolean>((resolve) => (lane.wake = () => resolve(true))),
        ]);
        lane.wake = undefined;
        if (woke) continue;
      }
      inflight.shift();
      let outcome = await head.outcome;
      if (outcome.ok) {
        try {
          await record(lane, head, outcome);
          continue;
        } catch (error) {
          outcome = { ok: false, error };
        }
      }
      // Whatever was sent after it goes again, after it.
      for (const f of inflight) await f.outcome;
      inflight.length = 0;
      after = 0;
      if (closed) return;
      const e = toJwError(outcome.error);
      if (e.code === "rejected") {
        // Refused for good: those (or all) to the dead-letter file; the rest are retried.
        const seqs = new Set(
          Array.isArray(e.detail?.seqs) ? e.detail.seqs as number[] : head.batch.map((i) => i.seq),
        );
        const refused = head.batch.filter((i) => seqs.has(i.seq));
        try {
          await deadLetter(lane, refused.map((item) => ({ item, reason: e.message })));
        } catch (err) {
          await retryLater(lane, toJwError(err));
          continue;
        }
        // Forget the refused ones only; the others go again.
        queue.forget(name, refused.map((i) => i.seq), { dead: refused.length });
        queue.failed(name, `${e.code}: ${e.message}`, clock.now());
        logger.warn("output refused messages: dead-lettered", {
          output: name,
          messages: refused.length,
          error: e.message,
        });
        continue;
      }
      await retryLater(lane, e);
    }
    // Closing: what is still in flight finishes first, and what was delivered is forgotten.
    for (const f of inflight) {
      const outcome = await f.outcome;
      if (!outcome.ok) break;
      await record(lane, f, outcome).catch(() => {});
    }
  }

  /** Counts a failed attempt and waits (with backoff) before the next one. */
  async function retryLater(lane: Lane, e: JwError): Promise<void> {
    const name = lane.config.name;
    lane.failures++;
    lane.state = "retrying";
    queue.failed(name, `${e.code}: ${e.message}`, clock.now());
    const delay = backoff(lane.failures, lane.config.queue.retryMax, random);
    if (lane.failures === 1 || lane.failures % 10 === 0) {
      logger.warn("output cannot deliver; retrying", {
        output: name,
        error: e.message,
        attempt: lane.failures,
        inMs: Math.round(delay),
      });
    }
    await new Promise<void>((resolve) => {
      const t = clock.setTimeout(resolve, delay);
      lane.wake = () => {
        if (closed) {
          clock.clearTimeout(t);
          resolve();
        }
      };
    });
    lane.wake = undefined;
  }

  /** Runs the format script over a batch. */
  async function prepare(lane: Lane, batch: OutboxItem[]): Promise<{
    send: OutboxItem[];
    dead: { item: OutboxItem; reason: string }[];
    filtered: number;
  }> {
    if (!lane.formatter) return { send: batch, dead: [], filtered: 0 };
    const results = await lane.formatter.apply(batch.map((i) => i.body));
    const send: OutboxItem[] = [];
    const dead: { item: OutboxItem; reason: string }[] = [];
    let filtered = 0;
    batch.forEach((item, i) => {
      const r = results[i];
      if (!r) dead.push({ item, reason: "the format script gave no result" });
      else if (!r.ok) dead.push({ item, reason: `format script: ${r.error}` });
      else if (r.value === null) filtered++;
      else send.push({ ...item, body: withMid(r.value, item.mid) });
    });
    if (dead.length) {
      logger.warn("format script failed on messages: dead-lettered unformatted", {
        output: lane.config.name,
        messages: dead.length,
        error: dead[0].reason,
      });
    }
    return { send, dead, filtered };
  }

  async function deadLetter(
    lane: Lane,
    dead: readonly { item: OutboxItem; reason: string }[],
  ): Promise<void> {
    if (dead.length === 0) return;
    const path = join(options.deadLetterDir, `${lane.config.name}.dead.jsonl`);
    const lines =
      dead.map(({ item, reason }) =>
        JSON.stringify({ mid: item.mid, at: clock.now(), reason, message: JSON.parse(item.body) })
      ).join("\n") + "\n";
    try {
      await mkdir(options.deadLetterDir, { recursive: true });
      await appendFile(path, lines, { mode: 0o640 });
    } catch (err) {
      throw new JwError("unavailable", `cannot write the dead-letter file ${path}: ${err}`);
    }
  }

  return {
    reply(reply, tags) {
      const key = reply.job?.key ?? null;
      enqueue(
        { type: reply.type, agent: reply.agent, key, tags },
        (mid) =>
          prefix(
            mid,
            reply.type,
            `,"agent":${quote(reply.agent)},"tags":${tagsOf(tags)},"message":${
              relayedJson(reply)
            }}`,
          ),
      );
    },
    alive(agentId, frame, tags) {
      enqueue(
        { type: "alive", agent: agentId, key: null, tags },
        (mid) =>
          prefix(
            mid,
            "alive",
            `,"agent":${quote(agentId)},"tags":${tagsOf(tags)},"message":${JSON.stringify(frame)}}`,
          ),
      );
    },
    audit(event, ts) {
      const record = {
        ts,
        actor: event.actor,
        action: event.action,
        target: event.target ?? null,
        key: event.key ?? null,
        outcome: event.outcome,
        reason: event.reason ?? null,
      };
      enqueue(
        { type: "audit", agent: null, key: event.key ?? null, tags: {} },
        (mid) => prefix(mid, "audit", `,"message":${JSON.stringify(record)}}`),
      );
    },
    flush,
    status() {
      return lanes.map((lane) => ({
        name: lane.config.name,
        type: lane.config.type,
        state: lane.state,
        ...queue.counters(lane.config.name),
      }));
    },
    async close() {
      if (closed) return;
      flush();
      closed = true;
      for (const lane of lanes) lane.wake?.();
      await Promise.race([
        Promise.all(lanes.map((l) => l.loop)),
        new Promise((r) => setTimeout(r, 5_000)),
      ]);
      for (const lane of lanes) {
        lane.formatter?.close();
        try {
          await lane.backend.close();
        } catch (err) {
          logger.warn("closing an output failed", { output: lane.config.name, error: String(err) });
        }
      }
    },
  };
}

/** The format script's output with `mid` added when it dropped it (consumers de-duplicate on it). */
function withMid(json: string, mid: string): string {
  if (json.includes(`"mid":`)) return json;
  return json === "{}"
    ? `{"mid":${JSON.stringify(mid)}}`
    : `{"mid":${JSON.stringify(mid)},${json.slice(1)}`;
}

/** Whether `item` passes `config`'s filter. */
export function matches(
  config: Pick<OutputConfig, "filter">,
  item: {
    type: OutputMessageType;
    agent: string | null;
    key: string | null;
    tags: Readonly<Record<string, string>>;
  },
): boolean {
  const f = config.filter;
  if (!f) return true;
  if (f.types && !f.types.includes(item.type)) return false;
  if (f.agents && (item.agent === null || !f.agents.includes(item.agent))) return false;
  if (f.keys && (item.key === null || !f.keys.includes(item.key))) return false;
  if (f.tags) {
    for (const [name, value] of Object.entries(f.tags)) {
      if (!Object.hasOwn(item.tags, name) || item.tags[name] !== value) return false;
    }
  }
  return true;
}

/** Retry delay after `failures` failed attempts: 250 ms doubling up to `max`, with jitter. */
function backoff(failures: number, max: number, random: Random): number {
  const cap = Math.min(max, 250 * 2 ** Math.min(failures - 1, 20));
  return cap / 2 + random.float() * (cap / 2);
}
