/**
 * The `mqtt` output: publishes every message to an MQTT broker (Mosquitto, EMQX, HiveMQ…)
 * with npm `mqtt` (mqtt.js).
 *
 * - One connection, clean session, client id `config.clientId` or `jw-SERVER-NAME`. It is
 *   opened by the first `send` and kept; when it fails (the broker goes away, refuses us, or
 *   stops answering for `config.timeout`) it is ended at once and the next `send` opens a new
 *   one. mqtt.js's own reconnect loop is off, so nothing runs in the background between
 *   sends except the keepalive of a live connection.
 * - Each message is published to `config.topic` filled in for it (a value's `/`, `+` and `#`
 *   become `_`, so a value is always one topic level and never a wildcard), with
 *   `config.qos`, retain off, the body as UTF-8 payload.
 * - At most `config.window` publishes are unacknowledged at once (fewer if the broker's
 *   MQTT 5 Receive Maximum is lower). `send` resolves when every PUBACK arrived (QoS 1) or
 *   every message was written to the socket (QoS 0, which confirms nothing).
 * - Message ids: MQTT 3.1.1 has no message properties, so the `mid` is only inside the body
 *   (consumers de-duplicate on the body's `mid`). With `protocolVersion: 5` every message
 *   also carries the user properties `mid` and `type`, content type `application/json` and
 *   the UTF-8 payload format indicator.
 * - Failures: a lost connection, a refused connection (bad credentials included) or no
 *   answer within `config.timeout` reject `send` with `unavailable` (the batch is retried
 *   and may be published twice: at least once). A topic longer than MQTT allows, or (MQTT
 *   5 only) a PUBACK refusing a message as not authorized, topic invalid, too large or
 *   payload invalid rejects with `rejected` naming those messages. Under MQTT 3.1.1 a
 *   broker that refuses a publish (an ACL) still acknowledges it and drops the message:
 *   nothing can tell; use MQTT 5 to see such refusals.
 *
 * @module
 */
import mqtt from "mqtt";
import type { IClientOptions, IClientPublishOptions, MqttClient } from "mqtt";
import type { TimerId } from "../../shared/clock.ts";
import type { MqttOutputConfig } from "../../shared/config/outputs.ts";
import { JwError } from "../../shared/errors.ts";
import type { Logger } from "../../shared/log.ts";
import type { Backend, BackendDeps, OutboxItem } from "./backend.ts";
import { checkTemplate, renderTemplate } from "./template.ts";
import { SendOrder, type Turn } from "./turns.ts";

/**
 * Characters a template value keeps in a topic: not the level separator, not the
 * wildcards, not NUL (which MQTT strings must not contain).
 */
// deno-lint-ignore no-control-regex
const TOPIC_VALUE_CHAR = /[^/+#\u0000]/;
/** MQTT strings are at most 65535 bytes (a two-byte length). */
const MAX_TOPIC_BYTES = 65_535;
/**
 * MQTT 5 PUBACK reason codes that refuse a message for good: Not authorized, Topic Name
 * invalid, Packet too large, Payload format invalid. Others (Unspecified error,
 * Implementation specific error, Quota exceeded) are retried.
 */
const REFUSED_FOR_GOOD = new Set([0x87, 0x90, 0x95, 0x99]);

const encoder = new TextEncoder();

/**
 * Creates an MQTT backend. Nothing connects until the first `send`.
 * @throws JwError `config` for a bad URL or a topic template that cannot make a valid
 *   topic name (unknown field, `+`, `#`, a leading `$`).
 */
export function createMqttBackend(
  config: MqttOutputConfig,
  deps: BackendDeps,
): Backend & AsyncDisposable {
  return new MqttBackend(config, deps);
}

/**
 * Checks a topic template: known fields, and literal text that is a valid topic name (so
 * only a value's length can make a topic invalid).
 * @throws JwError `config`.
 */
export function checkMqttTopic(template: string, what: string): void {
  checkTemplate(template, what);
  const literal = template.replace(/\{[^}]*\}/g, "");
  const wildcard = [...literal].find((ch) => ch === "+" || ch === "#" || ch === "\u0000");
  if (wildcard !== undefined) {
    throw new JwError(
      "config",
      `${what}: "${template}" has ${JSON.stringify(wildcard)}, which MQTT topic names ` +
        "cannot contain (wildcards are for subscriptions)",
    );
  }
  if (template.startsWith("$")) {
    throw new JwError(
      "config",
      `${what}: "${template}" starts with $, which brokers keep for themselves ($SYS)`,
    );
  }
}

/** The URL without its password, for logs and errors. */
function redactUrl(url: string): string {
  const u = new URL(url);
  if (u.password) u.password = "***";
  return u.toString();
}

/** The broker's refusal code of a PUBACK error, if it is one. */
function reasonCode(err: Error): number | undefined {
  const code = (err as { code?: unknown }).code;
  return typeof code === "number" ? code : undefined;
}

/** What a batch or a connect in progress is told when the connection fails. */
type Fail = (err: JwError) => void;

class MqttBackend implements Backend, AsyncDisposable {
  readonly name: string;
  readonly #config: MqttOutputConfig;
  readonly #deps: BackendDeps;
  readonly #log: Logger;
  readonly #what: string;
  readonly #url: string;
  readonly #clientId: string;
  /** The current connection (connecting or connected); null after a failure. */
  #client: MqttClient | null = null;
  /** True once the current connection got its CONNACK. */
  #up = false;
  /** False after a failure was logged, until the next successful connect. */
  #healthy = true;
  /** Fail the waits in progress (a connect, the batches in flight). */
  readonly #fails = new Set<Fail>();
  /** Publishes of the current connection not acknowledged yet (all batches together). */
  #unacked = 0;
  /** The batches in flight: each publishes more when an acknowledgement frees the window. */
  readonly #pumps = new Set<() => void>();
  /** Keeps overlapping sends' publishes in order. */
  readonly #order = new SendOrder();
  /**
   * A second batch starts publishing as soon as the first has put its last message on the
   * wire, sharing the window, so the broker never waits for the next batch.
   */
  readonly window = 2;
  /** Connections being ended; close() waits for them. */
  readonly #ending = new Set<Promise<void>>();
  #closed = false;

  constructor(config: MqttOutputConfig, deps: BackendDeps) {
    this.name = config.name;
    this.#config = config;
    this.#deps = deps;
    this.#log = deps.logger.child(`output.${config.name}`);
    this.#what = `outputs ${config.name}`;
    checkMqttTopic(config.topic, `${this.#what}: topic`);
    try {
      this.#url = redactUrl(config.url);
    } catch {
      throw new JwError("config", `${this.#what}: url: not a valid URL`);
    }
    this.#clientId = config.clientId ?? `jw-${deps.serverId}-${config.name}`;
  }

  async send(batch: readonly OutboxItem[], after = 0): Promise<void> {
    if (this.#closed) throw new JwError("closed", `${this.#what}: closed`);
    if (batch.length === 0) return;
    const turn = this.#order.next(after);
    try {
      const topics = this.#topics(batch);
      if (!await turn.ready()) {
        throw new JwError(
          "unavailable",
          `${this.#what}: not sent: the batch before it failed and goes again first`,
        );
      }
      const client = await this.#connect();
      if (this.#closed) throw new JwError("closed", `${this.#what}: closed`);
      await this.#publish(client, batch, topics, turn);
      turn.settle(true);
    } catch (err) {
      turn.settle(false);
      throw err;
    }
  }

  /** Closes the connection (a clean DISCONNECT when it is idle). Idempotent. */
  async close(): Promise<void> {
    if (!this.#closed) {
      this.#closed = true;
      for (const fail of [...this.#fails]) fail(new JwError("closed", `${this.#what}: closed`));
      const client = this.#client;
      this.#client = null;
      if (client) {
        const idle = this.#up && Object.keys(client.outgoing).length === 0;
        this.#end(client, !idle);
        if (this.#up) this.#log.info("mqtt disconnected", { url: this.#url });
        this.#up = false;
      }
    }
    await Promise.all(this.#ending);
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.close();
  }

  /**
   * Each item's topic.
   * @throws JwError `rejected` listing the items whose topic is too long (nothing is sent).
   */
  #topics(batch: readonly OutboxItem[]): string[] {
    const refused: number[] = [];
    // Messages of one agent, type and command share their topic: work it out once.
    const known = new Map<Readonly<Record<string, string>>, Map<string, string>>();
    const topics = batch.map((item) => {
      let byTags = known.get(item.tags);
      if (!byTags) known.set(item.tags, byTags = new Map());
      const id = `${item.type}\0${item.agent}\0${item.key}`;
      let topic = byTags.get(id);
      if (topic === undefined) {
        topic = renderTemplate(this.#config.topic, item, this.#deps.serverId, TOPIC_VALUE_CHAR);
        // A value at the start must not make a $SYS-like topic the broker would refuse.
        if (topic.startsWith("$")) topic = `_${topic.slice(1)}`;
        byTags.set(id, topic);
      }
      if (topic.length > MAX_TOPIC_BYTES / 3 && encoder.encode(topic).length > MAX_TOPIC_BYTES) {
        refused.push(item.seq);
      }
      return topic;
    });
    if (refused.length > 0) {
      throw new JwError(
        "rejected",
        `${this.#what}: ${refused.length} message(s) make a topic longer than MQTT's ` +
          `${MAX_TOPIC_BYTES} bytes`,
        { detail: { seqs: refused } },
      );
    }
    return topics;
  }

  /** The connected client, connecting first if there is none. */
  async #connect(): Promise<MqttClient> {
    if (this.#client && this.#up) return this.#client;
    const options: IClientOptions = {
      clientId: this.#clientId,
      clean: true,
      protocolVersion: this.#config.protocolVersion,
      reconnectPeriod: 0,
      connectTimeout: this.#config.timeout,
      resubscribe: false,
      queueQoSZero: false,
    };
    if (this.#config.username !== undefined) options.username = this.#config.username;
    if (this.#config.password !== undefined) options.password = this.#config.password;
    let client: MqttClient;
    try {
      client = mqtt.connect(this.#config.url, options);
    } catch (err) {
      throw this.#unavailable(`cannot connect to ${this.#url}`, err);
    }
    this.#client = client;
    this.#up = false;
    this.#unacked = 0;
    // Listeners stay for the client's whole life: an `error` event without a listener
    // would throw, and a late one after the client was dropped must be harmless.
    client.on("error", (err) => this.#lost(client, err));
    client.on("close", () => this.#lost(client, new Error("connection closed")));
    client.on("disconnect", (packet) => {
      const code = packet.reasonCode ?? 0;
      this.#lost(client, new Error(`the broker disconnected us (reason code ${code})`));
    });
    await this.#wait((done) => {
      client.once("connect", () => {
        if (this.#client !== client) return;
        this.#up = true;
        this.#healthy = true;
        this.#log.info("mqtt connected", { url: this.#url, clientId: this.#clientId });
        done();
      });
    });
    return client;
  }

  /** Publishes the batch with at most `window` unacknowledged; resolves when all are. */
  #publish(
    client: MqttClient,
    batch: readonly OutboxItem[],
    topics: string[],
    turn: Turn,
  ): Promise<void> {
    const { qos, protocolVersion } = this.#config;
    const receiveMaximum = client.serverProperties?.receiveMaximum;
    const window = qos === 1 && receiveMaximum
      ? Math.min(this.#config.window, receiveMaximum)
      : this.#config.window;
    let pump = () => {};
    return this.#wait((done, rearm) => {
      if (this.#client !== client) {
        return done(this.#unavailable(`connection to ${this.#url} lost`, "before publishing"));
      }
      let next = 0;
      let confirmed = 0;
      let pumping = false;
      const refused: number[] = [];
      const refusals = new Set<string>();
      pump = () => {
        // QoS 0 callbacks can run inside publish(): the outer loop carries on.
        if (pumping) return;
        pumping = true;
        while (this.#client === client && this.#unacked < window && next < batch.length) {
          const item = batch[next];
          const topic = topics[next];
          next++;
          this.#unacked++;
          const options: IClientPublishOptions = { qos, retain: false };
          if (protocolVersion === 5) {
            options.properties = {
              userProperties: { mid: item.mid, type: item.type },
              contentType: "application/json",
              payloadFormatIndicator: true,
            };
          }
          client.publish(topic, item.body, options, (err) => {
            // After a failure or close() the rest is flushed with errors: already reported.
            if (this.#client !== client) return;
            if (err) {
              const code = reasonCode(err);
              if (code === undefined || !REFUSED_FOR_GOOD.has(code)) {
                // Retried: the connection is dropped so the next send starts afresh.
                const failure = this.#unavailable(`${this.#url} did not take a message`, err);
                done(failure);
                this.#lost(client, err);
                return;
              }
              refused.push(item.seq);
              refusals.add(err.message);
            }
            this.#unacked--;
            confirmed++;
            rearm();
            for (const more of this.#pumps) more();
            if (confirmed < batch.length) return;
            if (refused.length === 0) return done();
            done(
              new JwError(
                "rejected",
                `${this.#what}: ${this.#url} refused ${refused.length} message(s): ` +
                  [...refusals].join(", "),
                { detail: { seqs: refused } },
              ),
            );
          });
        }
        pumping = false;
        if (next === batch.length) {
          this.#pumps.delete(pump);
          turn.published();
        }
      };
      this.#pumps.add(pump);
      pump();
    }, () => this.#pumps.delete(pump));
  }

  /**
   * Runs `start` and waits until it calls `done`, the connection fails, close() is called
   * or `config.timeout` passes without `rearm()` (which drops the connection).
   */
  #wait(
    start: (done: (err?: JwError) => void, rearm: () => void) => void,
    cleanup?: () => void,
  ): Promise<void> {
    const { clock } = this.#deps;
    const timeoutMs = this.#config.timeout;
    return new Promise<void>((resolve, reject) => {
      let settled = false;
      // One timer per wait, not one per acknowledgement: rearm() only notes the time.
      let progress = clock.now();
      let timer: TimerId;
      const done = (err?: JwError) => {
        if (settled) return;
        settled = true;
        clock.clearTimeout(timer);
        this.#fails.delete(done);
        cleanup?.();
        if (err) reject(err);
        else resolve();
      };
      const rearm = () => {
        progress = clock.now();
      };
      const check = () => {
        const quiet = clock.now() - progress;
        if (quiet < timeoutMs) {
          timer = clock.setTimeout(check, timeoutMs - quiet);
          return;
        }
        const err = new Error(`no answer within ${timeoutMs} ms`);
        done(this.#unavailable(`${this.#url} did not answer`, err));
        if (this.#client) this.#lost(this.#client, err);
      };
      timer = clock.setTimeout(check, timeoutMs);
      this.#fails.add(done);
      try {
        start(done, rearm);
      } catch (err) {
        done(this.#unavailable(`cannot publish to ${this.#url}`, err));
      }
    });
  }

  /**
   * The current connection failed: drop it (ended at once, never reused), log the change,
   * and fail whatever waits on it. Events of a connection already dropped are ignored.
   */
  #lost(client: MqttClient, cause: unknown): void {
    if (client !== this.#client) return;
    const wasUp = this.#up;
    this.#client = null;
    this.#up = false;
    this.#end(client, true);
    const reason = cause instanceof Error ? cause.message : String(cause);
    if (this.#healthy) {
      this.#healthy = false;
      this.#log.warn(wasUp ? "mqtt connection lost" : "mqtt cannot connect", {
        url: this.#url,
        reason,
      });
    } else {
      this.#log.debug("mqtt cannot connect", { url: this.#url, reason });
    }
    const what = wasUp ? `connection to ${this.#url} lost` : `cannot connect to ${this.#url}`;
    this.#unacked = 0;
    const failure = this.#unavailable(what, cause);
    for (const fail of [...this.#fails]) fail(failure);
  }

  /** Ends `client` (forced: drop the socket; else DISCONNECT first) in the background. */
  #end(client: MqttClient, force: boolean): void {
    const ended = new Promise<void>((resolve) => {
      const timer = this.#deps.clock.setTimeout(() => client.stream?.destroy(), 1000);
      try {
        client.end(force, () => {
          this.#deps.clock.clearTimeout(timer);
          resolve();
        });
      } catch {
        this.#deps.clock.clearTimeout(timer);
        resolve();
      }
    });
    this.#ending.add(ended);
    ended.then(() => this.#ending.delete(ended));
  }

  /** `unavailable`: "outputs NAME: MESSAGE: CAUSE". */
  #unavailable(message: string, cause: unknown): JwError {
    const reason = cause instanceof Error ? cause.message : String(cause);
    return new JwError("unavailable", `${this.#what}: ${message}: ${reason}`, { cause });
  }
}
