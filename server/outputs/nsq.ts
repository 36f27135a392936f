/**
 * The `nsq` output: publishes through nsqd's HTTP API.
 *
 * What nsqd expects, from its documentation (nsq.io/components/nsqd.html, "HTTP API") and
 * its handlers (nsqd/http.go `doPUB`, `doMPUB`; nsqd/protocol_v2.go `readMPUB`;
 * internal/http_api/api_response.go):
 * - `POST /pub?topic=T`, the body is the message, as is. An empty body is refused
 *   (400 MSG_EMPTY).
 * - `POST /mpub?topic=T`, the body is the messages separated by "\n" (empty lines are
 *   silently skipped, so a message must be neither empty nor contain "\n").
 * - `POST /mpub?topic=T&binary=true`, the body is binary: a 4-byte big-endian message
 *   count, then per message a 4-byte big-endian size and that many bytes (count > 0,
 *   sizes > 0, network byte order as everywhere in NSQ).
 * - Topic names are 1-64 characters of `[.a-zA-Z0-9_-]`, optionally ending in
 *   `#ephemeral` (nsq.io/clients/tcp_protocol_spec.html); we never publish to ephemeral
 *   topics, whose messages nsqd drops when nobody listens.
 * - The answer is 200 with body "OK". With `Accept: application/vnd.nsq; version=1.0`
 *   errors come with their real status and `{"message":"CODE"}` (400 INVALID_TOPIC,
 *   413 MSG_TOO_BIG / BODY_TOO_BIG, 503 EXITING); without it nsqd before 1.0 answers every
 *   error with 500, so we always send that header.
 * - Limits: `--max-msg-size` (default 1 MiB) per message, `--max-body-size` (default
 *   5 MiB) per /mpub body. We keep each /mpub body under 1 MiB by splitting a group.
 *
 * Consecutive messages with the same topic go in one request; requests are sent one after
 * another, in order. Statuses are classified as for the `http` output; a 4xx refuses the
 * messages of that request (`rejected` with their seqs), a message whose topic cannot be
 * valid is refused before anything is sent.
 *
 * @module
 */
import type { NsqOutputConfig } from "../../shared/config/outputs.ts";
import { JwError } from "../../shared/errors.ts";
import type { Backend, BackendDeps, OutboxItem } from "./backend.ts";
import { answerError, HttpPoster, redactUrl, splitCredentials } from "./http.ts";
import { checkTemplate, renderTemplate } from "./template.ts";

/** Characters nsqd allows in a topic name. */
const TOPIC_CHAR = /[.a-zA-Z0-9_-]/;
const TOPIC = /^[.a-zA-Z0-9_-]{1,64}$/;
/** Largest /mpub body we send; a bigger group is split. */
const MPUB_MAX_BYTES = 1024 * 1024;
/** nsqd's versioned-response content type: real error statuses. */
const NSQ_ACCEPT = "application/vnd.nsq; version=1.0";

const encoder = new TextEncoder();

/** One request to nsqd. */
interface Publish {
  topic: string;
  items: OutboxItem[];
  /** Encoded bodies, in order. */
  bodies: Uint8Array<ArrayBuffer>[];
  /** Size of the binary /mpub body (4 + per message 4 + size). */
  bytes: number;
  /** Some body contains "\n": /mpub must use the binary format. */
  binary: boolean;
}

/**
 * Creates an NSQ backend publishing to nsqd at `config.url`.
 * @throws JwError `config` for a bad URL or a topic template that cannot make a valid topic.
 */
export function createNsqBackend(
  config: NsqOutputConfig,
  deps: BackendDeps,
): Backend & AsyncDisposable {
  return new NsqBackend(config, deps);
}

/**
 * Checks a topic template: known fields, and literal text nsqd accepts (so that only a
 * value from a message can make a topic invalid, by its length).
 * @throws JwError `config`.
 */
export function checkNsqTopic(template: string, what: string): void {
  checkTemplate(template, what);
  const literal = template.replace(/\{[^}]*\}/g, "");
  const bad = [...literal].find((ch) => !TOPIC_CHAR.test(ch));
  if (bad !== undefined) {
    throw new JwError(
      "config",
      `${what}: NSQ topics are . a-z A-Z 0-9 _ - only; "${template}" has ${JSON.stringify(bad)}` +
        (bad === "#" ? " (#ephemeral topics are not allowed: they drop messages)" : ""),
    );
  }
  if (literal.length > 64) {
    throw new JwError("config", `${what}: "${template}" is longer than NSQ's 64 characters`);
  }
}

class NsqBackend implements Backend, AsyncDisposable {
  readonly name: string;
  #config: NsqOutputConfig;
  #deps: BackendDeps;
  #base: string;
  #headers: Headers;
  #poster: HttpPoster;

  constructor(config: NsqOutputConfig, deps: BackendDeps) {
    this.name = config.name;
    this.#config = config;
    this.#deps = deps;
    const what = `outputs ${config.name}`;
    checkNsqTopic(config.topic, `${what}: topic`);
    let split: { url: string; authorization: string | null };
    try {
      split = splitCredentials(config.url);
    } catch {
      throw new JwError("config", `${what}: url: not a valid URL`);
    }
    const u = new URL(split.url);
    if (u.search || u.hash) {
      throw new JwError("config", `${what}: url: give nsqd's address without ?query or #hash`);
    }
    this.#base = split.url.replace(/\/+$/, "");
    this.#headers = new Headers({ accept: NSQ_ACCEPT });
    if (split.authorization) this.#headers.set("authorization", split.authorization);
    this.#poster = new HttpPoster({
      name: config.name,
      timeoutMs: config.timeout,
      clock: deps.clock,
      logger: deps.logger,
    });
  }

  async send(batch: readonly OutboxItem[]): Promise<void> {
    const publishes = this.#plan(batch);
    for (const p of publishes) await this.#publish(p);
  }

  /** Groups consecutive items by topic into requests, refusing items that cannot be sent. */
  #plan(batch: readonly OutboxItem[]): Publish[] {
    const out: Publish[] = [];
    const refused: number[] = [];
    const reasons = new Set<string>();
    for (const item of batch) {
      const topic = renderTemplate(this.#config.topic, item, this.#deps.serverId, TOPIC_CHAR);
      if (!TOPIC.test(topic)) {
        refused.push(item.seq);
        reasons.add(`topic "${topic.slice(0, 80)}" is longer than 64 characters`);
        continue;
      }
      if (item.body.length === 0) {
        refused.push(item.seq);
        reasons.add("empty message");
        continue;
      }
      const body = encoder.encode(item.body);
      const binary = item.body.includes("\n");
      const last = out.at(-1);
      // `bytes` counts the binary framing: an upper bound of the newline format's size too.
      if (last && last.topic === topic && last.bytes + 4 + body.length <= MPUB_MAX_BYTES) {
        last.items.push(item);
        last.bodies.push(body);
        last.bytes += 4 + body.length;
        last.binary ||= binary;
      } else {
        out.push({ topic, items: [item], bodies: [body], bytes: 8 + body.length, binary });
      }
    }
    if (refused.length > 0) {
      throw new JwError(
        "rejected",
        `output ${this.name}: ${[...reasons].join("; ")} (seq ${refused.join(", ")})`,
        { detail: { seqs: refused } },
      );
    }
    return out;
  }

  async #publish(p: Publish): Promise<void> {
    const topic = encodeURIComponent(p.topic);
    let url: string;
    let body: Uint8Array<ArrayBuffer>;
    if (p.items.length === 1) {
      url = `${this.#base}/pub?topic=${topic}`;
      body = p.bodies[0];
    } else if (p.binary) {
      url = `${this.#base}/mpub?topic=${topic}&binary=true`;
      body = encodeBinaryMpub(p.bodies);
    } else {
      url = `${this.#base}/mpub?topic=${topic}`;
      body = joinLines(p.bodies);
    }
    const answer = await this.#poster.post(url, body, this.#headers);
    const err = answerError(
      answer,
      `output ${this.name}: ${redactUrl(url)}`,
      p.items.map((i) => i.seq),
    );
    if (err) throw err;
  }

  close(): Promise<void> {
    this.#poster.close();
    return Promise.resolve();
  }

  [Symbol.asyncDispose](): Promise<void> {
    return this.close();
  }
}

/** Bodies separated by "\n" (nsqd's default /mpub format). */
function joinLines(bodies: readonly Uint8Array[]): Uint8Array<ArrayBuffer> {
  let size = bodies.length - 1;
  for (const b of bodies) size += b.length;
  const out = new Uint8Array(size);
  let at = 0;
  for (const [i, b] of bodies.entries()) {
    if (i > 0) out[at++] = 0x0a;
    out.set(b, at);
    at += b.length;
  }
  return out;
}

/**
 * nsqd's binary /mpub body: `[4-byte count]` then per message `[4-byte size][bytes]`, all
 * integers big-endian.
 */
export function encodeBinaryMpub(bodies: readonly Uint8Array[]): Uint8Array<ArrayBuffer> {
  let size = 4;
  for (const b of bodies) size += 4 + b.length;
  const out = new Uint8Array(size);
  const view = new DataView(out.buffer);
  view.setUint32(0, bodies.length);
  let at = 4;
  for (const b of bodies) {
    view.setUint32(at, b.length);
    out.set(b, at + 4);
    at += 4 + b.length;
  }
  return out;
}
