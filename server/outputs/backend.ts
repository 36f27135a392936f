/**
 * What every output backend implements, and what it is given. The pipeline (pipeline.ts)
 * keeps each backend's messages in a durable sqlite queue (outbox.ts) and hands them over in
 * order, in batches; a backend only has to deliver a batch and say how that went.
 *
 * Delivery is at least once: a batch is removed from the queue only after `send` resolves,
 * so a backend must resolve only once the destination has confirmed every message (broker
 * confirms, QoS 1 acks, 2xx, fsync). Each message carries a stable `mid`, so consumers can
 * de-duplicate what a retry resends.
 *
 * @module
 */
import type { Clock } from "../../shared/clock.ts";
import type { OutputMessageType } from "../../shared/config/outputs.ts";
import type { Logger } from "../../shared/log.ts";

/** One queued message as a backend receives it. */
export interface OutboxItem {
  /** Queue position: increasing, never reused. */
  seq: number;
  /** Stable message id (`SERVER-SEQ`), also inside `body` as `mid`. */
  mid: string;
  type: OutputMessageType;
  /** The agent it came from (absent for most audit records). */
  agent: string | null;
  /** The command key of a reply (`job.key`), if any. */
  key: string | null;
  /** The agent's tags when it was queued. */
  tags: Readonly<Record<string, string>>;
  /** The message as JSON text (after the format script): what is published. */
  body: string;
}

/**
 * An output destination. `send` is called again before the previous call settled only when
 * the backend allows it with `window`.
 *
 * `send` resolves once every item of `batch` is confirmed by the destination, in order. It
 * rejects with a JwError:
 * - `unavailable` — the destination is down, slow (timeout) or failed temporarily (5xx): the
 *   whole batch stays queued and is retried later with backoff;
 * - `rejected` — the destination refused some items for good (4xx): `detail.seqs` lists them
 *   (absent = the whole batch); they go to the dead-letter file, the rest are retried.
 */
export interface Backend {
  readonly name: string;
  /**
   * How many sends may be in flight at once (default 1). With more than one, the backend
   * must publish the batches in call order and must not publish a batch that follows one
   * that failed (see turns.ts); the pipeline takes outcomes in order, and after a failure
   * sends every later batch again, starting from the oldest queued message.
   */
  readonly window?: number;
  /**
   * Delivers `batch`. `after` is the queue position of the last message of the batch this
   * one follows, or 0 (the default) when it starts from the oldest queued message.
   */
  send(batch: readonly OutboxItem[], after?: number): Promise<void>;
  /** Closes connections and files. Idempotent. */
  close(): Promise<void>;
}

/** What a backend factory gets besides its own config. */
export interface BackendDeps {
  /** This server's id (templates' `{server}`, client ids). */
  serverId: string;
  clock: Clock;
  logger: Logger;
}
