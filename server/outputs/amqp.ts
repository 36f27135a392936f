/**
 * The AMQP 0-9-1 output (RabbitMQ): every message is published to one exchange on a
 * confirm channel, and a batch counts as delivered once the broker confirmed every publish
 * of it (for persistent messages routed to durable queues RabbitMQ confirms after writing
 * them to disk).
 *
 * Each message is the item's JSON body as is, with the properties `messageId` (the item's
 * `mid`), `contentType` "application/json", `type` (output, log, alive, setTag, audit),
 * `appId` "jw", `timestamp` (seconds) and delivery mode 2 when `persistent`. Its routing
 * key is the `routingKey` template: the template's own dots separate words, and in the
 * values filled in, characters a routing key should not carry (dots, `*`, `#`, white
 * space, control characters) become `_`, so `jw.{type}.{agent}` always has three words;
 * keys longer than 255 bytes are cut. A message no queue is bound for is dropped by the
 * broker (and still confirmed).
 *
 * The exchange is declared (durable, `exchangeType`) once per connection; `amq.*`
 * exchanges are only checked, and "" (the default exchange) is used as is.
 *
 * @module
 */
import { Buffer } from "node:buffer";
import { connect } from "amqplib";
import type { ChannelModel, ConfirmChannel, Options } from "amqplib";
import type { TimerId } from "../../shared/clock.ts";
import type { AmqpOutputConfig } from "../../shared/config/outputs.ts";
import { JwError } from "../../shared/errors.ts";
import type { Backend, BackendDeps, OutboxItem } from "./backend.ts";
import { checkTemplate, renderTemplate } from "./template.ts";
import { SendOrder, type Turn } from "./turns.ts";

/** What a value filled into a routing key may keep; anything else becomes `_`. */
const ROUTING_KEY_SAFE = /[^\s\p{Cc}.#*]/u;
/** AMQP routing keys are short strings. */
const MAX_ROUTING_KEY_BYTES = 255;
/** RabbitMQ's words when a message is over `max_message_size` (406 PRECONDITION_FAILED). */
const TOO_LARGE = /message size \d+ is larger than configured max size (\d+)/;

/** One connection and (once opened) its confirm channel. */
class Session {
  readonly model: ChannelModel;
  /** Set once the channel is open; a session is handed out only after that. */
  channel: ConfirmChannel | null = null;
  /** The first error or close seen on either, or null while both are healthy. */
  failure: Error | null = null;
  /**
   * Told when the session breaks, or given the error to fail with when the backend closes
   * (each batch in flight listens).
   */
  readonly onFailure = new Set<(err?: JwError) => void>();
  /** True once this side started closing it (its close is then not news). */
  closing = false;
  /** True once the broker stopped answering (a close would not be answered either). */
  stalled = false;

  constructor(model: ChannelModel) {
    this.model = model;
  }
}

/**
 * The routing key of `item`: the template with its values made safe, cut to 255 bytes
 * (never inside a character).
 */
export function amqpRoutingKey(template: string, item: OutboxItem, serverId: string): string {
  const key = renderTemplate(template, item, serverId, ROUTING_KEY_SAFE);
  if (Buffer.byteLength(key) <= MAX_ROUTING_KEY_BYTES) return key;
  let out = "";
  let bytes = 0;
  for (const ch of key) {
    const n = Buffer.byteLength(ch);
    if (bytes + n > MAX_ROUTING_KEY_BYTES) break;
    out += ch;
    bytes += n;
  }
  return out;
}

/** The broker URL without its password, for logs and errors. */
function redactUrl(url: string): string {
  try {
    const parsed = new URL(url);
    if (parsed.password) parsed.password = "***";
    return parsed.toString();
  } catch {
    return "(unparsable URL)";
  }
}

/** Why amqplib failed, as one line without the broker password. */
function describe(err: unknown, password: string): string {
  let text = err instanceof Error
    ? err.message || String((err as { code?: unknown }).code ?? err.name)
    : String(err);
  if (password) text = text.split(password).join("***");
  return text.replace(/\s+/g, " ").trim();
}

/**
 * Closes a connection, waiting at most `ms`; after that (or right away when `ms` is 0)
 * destroys its socket so nothing is left open.
 */
async function shutdown(model: ChannelModel, ms: number, deps: BackendDeps): Promise<void> {
  if (ms > 0) {
    let timer: TimerId | undefined;
    const closed = await Promise.race([
      model.close().then(() => true, () => true),
      new Promise<boolean>((resolve) => timer = deps.clock.setTimeout(() => resolve(false), ms)),
    ]);
    if (timer !== undefined) deps.clock.clearTimeout(timer);
    if (closed) return;
  }
  // amqplib has no abort: destroy the socket under the connection with an error, which
  // amqplib handles like a dropped socket (its timers stop, 'error' and 'close' follow).
  const connection = model.connection as unknown as { stream?: { destroy?(err: Error): void } };
  connection.stream?.destroy?.(new Error("connection abandoned: the broker does not answer"));
}

class AmqpBackend implements Backend, AsyncDisposable {
  readonly name: string;
  readonly #config: AmqpOutputConfig;
  readonly #deps: BackendDeps;
  readonly #url: string;
  readonly #password: string;
  readonly #timeoutMs: number;
  #session: Session | null = null;
  #connecting: Promise<Session> | null = null;
  #closed = false;
  #closing: Promise<void> | null = null;
  /** Connections being opened or closed in the background; close() waits for them. */
  readonly #shutdowns = new Set<Promise<void>>();
  /** The last connection failure logged at warn (repeats go to debug). */
  #lastWarning = "";
  /** Keeps overlapping sends' publishes in order. */
  readonly #order = new SendOrder();
  /**
   * A second batch may be published while the first waits for its confirms, so the broker
   * always has work (publishing stays in queue order).
   */
  readonly window = 2;

  constructor(config: AmqpOutputConfig, deps: BackendDeps) {
    checkTemplate(config.routingKey, `outputs.${config.name}.routingKey`);
    let password = "";
    try {
      password = decodeURIComponent(new URL(config.url).password);
    } catch {
      throw new JwError("config", `outputs.${config.name}.url: not a valid URL`);
    }
    this.name = config.name;
    this.#config = config;
    this.#deps = deps;
    this.#url = redactUrl(config.url);
    this.#password = password;
    this.#timeoutMs = config.timeout ?? 10_000;
  }

  async send(batch: readonly OutboxItem[], after = 0): Promise<void> {
    if (this.#closed) throw this.#closedError();
    if (batch.length === 0) return;
    const turn = this.#order.next(after);
    let session: Session | undefined;
    try {
      if (!await turn.ready()) {
        throw this.#unavailable("not sent: the batch before it failed and goes again first");
      }
      session = await this.#connect();
      await this.#publish(session, batch, turn);
      turn.settle(true);
    } catch (err) {
      turn.settle(false);
      // Whatever went wrong, the next send starts on a fresh connection. A stalled broker
      // may never answer a close, so that one is cut at once.
      if (session) this.#drop(session, !session.stalled);
      throw this.#closed ? this.#closedError() : err;
    }
  }

  close(): Promise<void> {
    this.#closed = true;
    this.#closing ??= (async () => {
      await this.#connecting?.catch(() => {});
      const session = this.#session;
      this.#session = null;
      if (session) {
        // A batch in flight fails now rather than after the goodbye.
        for (const listener of [...session.onFailure]) listener(this.#closedError());
        this.#drop(session, true);
      }
      while (this.#shutdowns.size > 0) await Promise.all(this.#shutdowns);
      this.#deps.logger.info("amqp output closed", { output: this.name });
    })();
    return this.#closing;
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.close();
  }

  #closedError(): JwError {
    return new JwError("closed", `output ${this.name} is closed`);
  }

  #unavailable(what: string, cause?: unknown): JwError {
    const why = cause === undefined ? "" : `: ${describe(cause, this.#password)}`;
    return new JwError("unavailable", `${this.#url}: ${what}${why}`, { cause });
  }

  /**
   * Forgets a session and closes its connection in the background: `graceful` waits up to
   * the timeout for the broker's close-ok, otherwise the socket is cut at once.
   */
  #drop(session: Session, graceful: boolean): void {
    if (this.#session === session) this.#session = null;
    if (session.closing) return;
    session.closing = true;
    const ms = graceful && !session.failure ? this.#timeoutMs : 0;
    this.#track(shutdown(session.model, ms, this.#deps));
  }

  /** Makes close() wait for `work` (which never rejects). */
  #track(work: Promise<void>): void {
    this.#shutdowns.add(work);
    work.finally(() => this.#shutdowns.delete(work));
  }

  /** The healthy session, connecting first when there is none. */
  #connect(): Promise<Session> {
    const current = this.#session;
    if (current && !current.failure) return Promise.resolve(current);
    if (current) this.#drop(current, false);
    this.#connecting ??= this.#open().finally(() => this.#connecting = null);
    return this.#connecting;
  }

  /** Races `promise` against the timeout; on timeout, `onLate` gets its late result. */
  #withTimeout<T>(promise: Promise<T>, what: string, onLate?: (value: T) => void): Promise<T> {
    return new Promise<T>((resolve, reject) => {
      let done = false;
      const timer = this.#deps.clock.setTimeout(() => {
        done = true;
        reject(this.#unavailable(`${what} timed out after ${this.#timeoutMs} ms`));
      }, this.#timeoutMs);
      promise.then((value) => {
        this.#deps.clock.clearTimeout(timer);
        if (done) onLate?.(value);
        else resolve(value);
      }, (err) => {
        this.#deps.clock.clearTimeout(timer);
        if (!done) reject(err);
      });
    });
  }

  async #open(): Promise<Session> {
    const { logger } = this.#deps;
    let model: ChannelModel;
    try {
      const attempt = connect(this.#config.url, {
        // amqplib's own socket timeout ends an attempt this side gave up on (just after).
        timeout: this.#timeoutMs + 1_000,
        clientProperties: { connection_name: `jw-${this.#deps.serverId}-${this.name}` },
      });
      const connected = this.#withTimeout(
        attempt,
        "connect",
        (late) => {
          late.on("error", () => {});
          this.#drop(new Session(late), false);
        },
      );
      this.#track(attempt.then(() => {}, () => {}));
      model = await connected;
    } catch (err) {
      throw this.#connectFailed(err instanceof JwError ? err : this.#unavailable("connect", err));
    }
    const session = new Session(model);
    const fail = (err: Error) => {
      if (!session.failure) {
        session.failure = err;
        if (!session.closing) {
          logger.warn("amqp output disconnected", {
            output: this.name,
            url: this.#url,
            reason: describe(err, this.#password),
          });
        }
      }
      for (const listener of [...session.onFailure]) listener();
    };
    model.on("error", (err: Error) => fail(err));
    model.on("close", (err?: Error) => fail(err ?? new Error("connection closed")));
    model.on("blocked", (reason: string) => {
      logger.warn("amqp broker blocks publishing", { output: this.name, reason });
    });
    model.on("unblocked", () => {
      logger.info("amqp broker unblocked publishing", { output: this.name });
    });
    try {
      const channel = await this.#withTimeout(
        model.createConfirmChannel(),
        "opening a channel",
        (late) => late.on("error", () => {}),
      );
      session.channel = channel;
      channel.on("error", (err: Error) => fail(err));
      channel.on("close", () => fail(new Error("channel closed")));
      const { exchange, exchangeType } = this.#config;
      if (exchange.startsWith("amq.")) {
        await this.#withTimeout(channel.checkExchange(exchange), "checking the exchange");
      } else if (exchange !== "") {
        await this.#withTimeout(
          channel.assertExchange(exchange, exchangeType, { durable: true }),
          "declaring the exchange",
        );
      }
    } catch (err) {
      // A JwError here is a timeout: the broker stopped answering.
      this.#drop(session, !(err instanceof JwError));
      const error = err instanceof JwError
        ? err
        : this.#unavailable(`setting up exchange "${this.#config.exchange}"`, err);
      throw this.#connectFailed(error);
    }
    if (this.#closed) {
      this.#drop(session, true);
      throw this.#closedError();
    }
    this.#lastWarning = "";
    this.#session = session;
    logger.info("amqp output connected", {
      output: this.name,
      url: this.#url,
      exchange: this.#config.exchange,
    });
    return session;
  }

  /** Logs a failed connection attempt (a repeat of the same failure at debug only). */
  #connectFailed(err: JwError): JwError {
    const fields = { output: this.name, reason: err.message };
    if (err.message === this.#lastWarning) {
      this.#deps.logger.debug("amqp output cannot connect", fields);
    } else {
      this.#lastWarning = err.message;
      this.#deps.logger.warn("amqp output cannot connect", fields);
    }
    return err;
  }

  /** Why a batch failed, from what broke the session. */
  #failure(session: Session, batch: readonly OutboxItem[], fallback: string): JwError {
    const err = session.failure;
    if (!err) return this.#unavailable(fallback);
    const tooLarge = TOO_LARGE.exec(err.message);
    if (tooLarge) {
      const max = Number(tooLarge[1]);
      const seqs = batch.filter((item) => Buffer.byteLength(item.body) > max).map((i) => i.seq);
      if (seqs.length > 0) {
        return new JwError(
          "rejected",
          `${this.#url}: the broker refuses messages over ${max} bytes`,
          { cause: err, detail: { seqs } },
        );
      }
    }
    return this.#unavailable("connection lost", err);
  }

  /**
   * Publishes `batch` in order and resolves once the broker confirmed all of it. Waits for
   * 'drain' whenever the socket buffer is full; fails when the broker nacks, the channel or
   * connection breaks, or nothing happens for the timeout.
   */
  #publish(session: Session, batch: readonly OutboxItem[], turn: Turn): Promise<void> {
    const channel = session.channel;
    if (!channel) return Promise.reject(this.#unavailable("no channel"));
    const { clock, serverId } = this.#deps;
    const { exchange, routingKey, persistent } = this.#config;
    const timestamp = Math.floor(clock.now() / 1000);
    return new Promise<void>((resolve, reject) => {
      let next = 0;
      let unconfirmed = batch.length;
      let settled = false;
      let timer: TimerId | undefined;
      /** When the broker last did something for this batch (confirm or drain). */
      let lastProgress = clock.now();
      /** How often publishing paused for the socket buffer to drain. */
      let drainWaits = 0;
      const finish = (err?: JwError) => {
        if (settled) return;
        settled = true;
        if (timer !== undefined) clock.clearTimeout(timer);
        channel.off("drain", onDrain);
        session.onFailure.delete(onFailure);
        if (err) turn.settle(false);
        else turn.published();
        if (drainWaits > 0) {
          this.#deps.logger.debug("amqp output waited for the socket to drain", {
            output: this.name,
            times: drainWaits,
            batch: batch.length,
          });
        }
        if (err) reject(err);
        else resolve();
      };
      // One timer per batch, moved on only when it fires: cheaper than one per confirm.
      const watchdog = () => {
        const idle = clock.now() - lastProgress;
        if (idle < this.#timeoutMs) {
          timer = clock.setTimeout(watchdog, this.#timeoutMs - idle);
          return;
        }
        const at = `${batch.length - unconfirmed}/${batch.length} confirmed`;
        session.stalled = true;
        finish(this.#unavailable(`no confirm from the broker for ${this.#timeoutMs} ms (${at})`));
      };
      const progress = () => lastProgress = clock.now();
      const confirmed = (item: OutboxItem) => (err: unknown) => {
        if (settled) return;
        if (err) {
          if (session.failure) finish(this.#failure(session, batch, "channel closed"));
          else {
            const what = err instanceof Error && err.message === "message nacked"
              ? `the broker nacked message ${item.mid}`
              : "publish failed";
            finish(this.#unavailable(what, err));
          }
          return;
        }
        unconfirmed--;
        if (unconfirmed === 0) finish();
        else progress();
      };
      // Messages of one agent, type and command share their routing key: work it out once.
      const keys = new Map<Readonly<Record<string, string>>, Map<string, string>>();
      const keyOf = (item: OutboxItem) => {
        let byTags = keys.get(item.tags);
        if (!byTags) keys.set(item.tags, byTags = new Map());
        const id = `${item.type}\0${item.agent}\0${item.key}`;
        let key = byTags.get(id);
        if (key === undefined) byTags.set(id, key = amqpRoutingKey(routingKey, item, serverId));
        return key;
      };
      const pump = () => {
        while (next < batch.length && !settled) {
          const item = batch[next++];
          const options: Options.Publish = {
            persistent,
            messageId: item.mid,
            contentType: "application/json",
            type: item.type,
            appId: "jw",
            timestamp,
          };
          let more: boolean;
          try {
            more = channel.publish(
              exchange,
              keyOf(item),
              Buffer.from(item.body, "utf8"),
              options,
              confirmed(item),
            );
          } catch (err) {
            finish(
              session.failure ? this.#failure(session, batch, "publish failed") : (
                this.#unavailable(`publishing message ${item.mid}`, err)
              ),
            );
            return;
          }
          if (!more && next < batch.length) {
            drainWaits++;
            channel.once("drain", onDrain);
            return;
          }
        }
        if (next === batch.length && !settled) turn.published();
      };
      const onDrain = () => {
        progress();
        pump();
      };
      const onFailure = (err?: JwError) =>
        finish(err ?? this.#failure(session, batch, "connection lost"));
      session.onFailure.add(onFailure);
      if (session.failure) return onFailure();
      timer = clock.setTimeout(watchdog, this.#timeoutMs);
      pump();
    });
  }
}

/**
 * An AMQP 0-9-1 (RabbitMQ) output with publisher confirms. Connects on the first `send`
 * and again on the `send` after any failure; never throws from a broker event.
 *
 * `send` rejects with `unavailable` when the broker cannot be reached, refuses the login,
 * nacks a message, drops the connection or makes no progress for `timeout`; with
 * `rejected` (`detail.seqs`) for messages over the broker's `max_message_size`; with
 * `closed` after `close()`.
 *
 * @throws JwError `config` for a bad routing key template or URL.
 */
export function createAmqpBackend(
  config: AmqpOutputConfig,
  deps: BackendDeps,
): Backend & AsyncDisposable {
  return new AmqpBackend(config, deps);
}
