/**
 * The `http` output: each batch is one POST to a URL, as NDJSON (one message per line,
 * `application/x-ndjson`) or a JSON array (`application/json`). The request carries the
 * configured headers, bearer or basic credentials, and `X-Jw-Batch: FIRSTMID-LASTMID`
 * (the mids of the first and last message) so a receiver can log and de-duplicate retries.
 *
 * Answers: 2xx = delivered; 5xx, 408, 429, a redirect, a network error or no answer within
 * `timeout` = `unavailable` (the batch is retried); any other 4xx = `rejected`, the whole
 * batch, with the status and the start of the response body in the message.
 *
 * {@link HttpPoster} is the request machinery, shared with the NSQ output.
 *
 * @module
 */
import type { HttpOutputConfig } from "../../shared/config/outputs.ts";
import { JwError } from "../../shared/errors.ts";
import type { Clock } from "../../shared/clock.ts";
import type { Logger } from "../../shared/log.ts";
import type { Backend, BackendDeps, OutboxItem } from "./backend.ts";

/** Most characters of a response body quoted in an error. */
const EXCERPT_CHARS = 200;
/** Most bytes of a response body read (the rest is discarded). */
const READ_LIMIT = 64 * 1024;

/** What a destination answered. */
export interface PostAnswer {
  status: number;
  /** The start of the response body (at most 200 characters, whitespace collapsed). */
  excerpt: string;
  /** The `Location` header of a redirect. */
  location: string | null;
}

/** Options for {@link HttpPoster}. */
export interface HttpPosterOptions {
  /** The output's name, for messages. */
  name: string;
  /** Longest wait for the whole exchange (connect, send, answer, body). */
  timeoutMs: number;
  clock: Clock;
  logger: Logger;
}

/**
 * POSTs with a deadline on the Clock through its own connection pool. A network error or a
 * timeout becomes JwError `unavailable` and drops the pool, so the next post connects
 * afresh. Any status comes back as a {@link PostAnswer}; {@link answerError} classifies it.
 * Not for concurrent use: one post at a time.
 */
export class HttpPoster {
  #opts: HttpPosterOptions;
  #client: Deno.HttpClient | null = null;
  /** Whether the last post reached the destination (null before the first). */
  #up: boolean | null = null;
  #closed = false;
  #inflight: AbortController | null = null;

  constructor(opts: HttpPosterOptions) {
    this.#opts = opts;
  }

  /**
   * Sends `body` to `url` (whose credentials, if any, must already be stripped) and reads
   * the start of the answer.
   * @throws JwError `unavailable` on a network error or timeout; `closed` after close().
   */
  async post(url: string, body: BodyInit, headers: Headers): Promise<PostAnswer> {
    const { name, timeoutMs, clock, logger } = this.#opts;
    if (this.#closed) throw new JwError("closed", `output ${name}: closed`);
    this.#client ??= Deno.createHttpClient({});
    const abort = new AbortController();
    this.#inflight = abort;
    let timedOut = false;
    const timer = clock.setTimeout(() => {
      timedOut = true;
      abort.abort();
    }, timeoutMs);
    try {
      const res = await fetch(url, {
        method: "POST",
        body,
        headers,
        redirect: "manual",
        signal: abort.signal,
        client: this.#client,
      });
      const excerpt = await readExcerpt(res);
      if (this.#up !== true) {
        this.#up = true;
        logger.info("output connected", { output: name, url: redactUrl(url) });
      }
      return { status: res.status, excerpt, location: res.headers.get("location") };
    } catch (err) {
      if (this.#closed) throw new JwError("closed", `output ${name}: closed`, { cause: err });
      const reason = timedOut ? `no answer within ${timeoutMs} ms` : errorText(err);
      this.#dropClient();
      if (this.#up !== false) {
        logger.warn(this.#up ? "output disconnected" : "output unreachable", {
          output: name,
          url: redactUrl(url),
          error: reason,
        });
        this.#up = false;
      }
      throw new JwError("unavailable", `output ${name}: ${redactUrl(url)}: ${reason}`, {
        cause: err,
      });
    } finally {
      clock.clearTimeout(timer);
      this.#inflight = null;
    }
  }

  #dropClient(): void {
    try {
      this.#client?.close();
    } catch {
      // already closed
    }
    this.#client = null;
  }

  /** Aborts a post in flight and closes the pool. Idempotent. */
  close(): void {
    this.#closed = true;
    this.#inflight?.abort();
    this.#dropClient();
  }
}

/**
 * Classifies an answer: null for 2xx; `unavailable` for 5xx, 408, 429 and redirects;
 * `rejected` (with `seqs` in the detail when given) for other 4xx and anything else.
 */
export function answerError(
  answer: PostAnswer,
  what: string,
  seqs?: readonly number[],
): JwError | null {
  const { status, excerpt } = answer;
  if (status >= 200 && status < 300) return null;
  const said = excerpt ? `: ${excerpt}` : "";
  if (status >= 500 || status === 408 || status === 429) {
    return new JwError("unavailable", `${what}: HTTP ${status}${said}`, {
      detail: { status },
    });
  }
  if (status >= 300 && status < 400) {
    const to = answer.location ? ` to ${redactUrl(answer.location)}` : "";
    return new JwError(
      "unavailable",
      `${what}: HTTP ${status} redirect${to} (configure the final URL)`,
      { detail: { status } },
    );
  }
  return new JwError("rejected", `${what}: HTTP ${status}${said}`, {
    detail: seqs ? { status, seqs: [...seqs] } : { status },
  });
}

/** A URL without its password (for logs and messages). */
export function redactUrl(url: string): string {
  try {
    const u = new URL(url);
    if (u.password) u.password = "***";
    return u.toString();
  } catch {
    return "(bad URL)";
  }
}

/**
 * Splits credentials out of a URL: `{url}` without user and password, and the basic
 * `Authorization` value they make (or null).
 */
export function splitCredentials(url: string): { url: string; authorization: string | null } {
  const u = new URL(url);
  if (!u.username && !u.password) return { url: u.toString(), authorization: null };
  const authorization = basicAuth(decodeURIComponent(u.username), decodeURIComponent(u.password));
  u.username = "";
  u.password = "";
  return { url: u.toString(), authorization };
}

/** `Basic base64(user:password)`, UTF-8. */
export function basicAuth(user: string, password: string): string {
  const bytes = new TextEncoder().encode(`${user}:${password}`);
  let bin = "";
  for (const b of bytes) bin += String.fromCharCode(b);
  return `Basic ${btoa(bin)}`;
}

/** The first characters of a response body, whitespace collapsed; reads at most 64 KiB. */
async function readExcerpt(res: Response): Promise<string> {
  if (!res.body) return "";
  const reader = res.body.getReader();
  const chunks: Uint8Array[] = [];
  let read = 0;
  try {
    while (read < READ_LIMIT) {
      const { done, value } = await reader.read();
      if (done) break;
      chunks.push(value);
      read += value.length;
    }
  } finally {
    if (read >= READ_LIMIT) await reader.cancel().catch(() => {});
    reader.releaseLock();
  }
  const bytes = new Uint8Array(read);
  let at = 0;
  for (const c of chunks) {
    bytes.set(c, at);
    at += c.length;
  }
  const text = new TextDecoder().decode(bytes.subarray(0, EXCERPT_CHARS * 4));
  const flat = text.replace(/\s+/g, " ").trim();
  return flat.length > EXCERPT_CHARS ? `${flat.slice(0, EXCERPT_CHARS)}…` : flat;
}

/** An error's message without Deno's "(os error N)" noise. */
export function errorText(err: unknown): string {
  if (!(err instanceof Error)) return String(err);
  let msg = err.message.replace(/ \(os error \d+\)/g, "");
  if (err.cause instanceof Error && !msg.includes(err.cause.message)) {
    msg += `: ${err.cause.message.replace(/ \(os error \d+\)/g, "")}`;
  }
  return msg;
}

/**
 * Creates an HTTP backend for `config`.
 * @throws JwError `config` for a bad URL or header, or both `bearer` and `basic` set.
 */
export function createHttpBackend(
  config: HttpOutputConfig,
  deps: BackendDeps,
): Backend & AsyncDisposable {
  return new HttpBackend(config, deps);
}

class HttpBackend implements Backend, AsyncDisposable {
  readonly name: string;
  #config: HttpOutputConfig;
  #url: string;
  #headers: Headers;
  #poster: HttpPoster;

  constructor(config: HttpOutputConfig, deps: BackendDeps) {
    this.name = config.name;
    this.#config = config;
    const what = `outputs ${config.name}`;
    let split: { url: string; authorization: string | null };
    try {
      split = splitCredentials(config.url);
    } catch {
      throw new JwError("config", `${what}: url: not a valid URL`);
    }
    this.#url = split.url;
    if (config.bearer !== undefined && config.basic !== undefined) {
      throw new JwError("config", `${what}: give bearer or basic, not both`);
    }
    try {
      this.#headers = new Headers(config.headers);
    } catch (err) {
      throw new JwError("config", `${what}: headers: ${errorText(err)}`);
    }
    this.#headers.set(
      "content-type",
      config.body === "json" ? "application/json" : "application/x-ndjson",
    );
    let authorization = split.authorization;
    if (config.bearer !== undefined) authorization = `Bearer ${config.bearer}`;
    if (config.basic) authorization = basicAuth(config.basic.user, config.basic.password);
    try {
      if (authorization) this.#headers.set("authorization", authorization);
    } catch {
      throw new JwError("config", `${what}: the credentials are not valid in a header`);
    }
    this.#poster = new HttpPoster({
      name: config.name,
      timeoutMs: config.timeout,
      clock: deps.clock,
      logger: deps.logger,
    });
  }

  async send(batch: readonly OutboxItem[]): Promise<void> {
    if (batch.length === 0) return;
    let body: string;
    if (this.#config.body === "json") {
      body = "[";
      for (let i = 0; i < batch.length; i++) body += (i ? "," : "") + batch[i].body;
      body += "]";
    } else {
      body = "";
      for (const item of batch) body += item.body + "\n";
    }
    const headers = new Headers(this.#headers);
    headers.set("x-jw-batch", `${batch[0].mid}-${batch[batch.length - 1].mid}`);
    const answer = await this.#poster.post(this.#url, body, headers);
    const err = answerError(answer, `output ${this.name}: ${redactUrl(this.#url)}`);
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
