/**
 * The `outputs` section of the server config: where every message agents send (output, log,
 * alive, setTag) and every audit record goes besides the live stream. Each entry is one
 * backend with its own filter, optional format script and durable queue:
 *
 * ```yaml
 * outputs:
 *   - { name: all, type: file, path: /var/lib/jw/out.jsonl }
 *   - name: bus
 *     type: amqp
 *     url: amqp://guest:guest@127.0.0.1:5672
 *     routingKey: "jw.{type}.{agent}"
 *     filter: { types: [output, log] }
 * ```
 *
 * Templates (routing keys, topics) take `{type}`, `{agent}`, `{key}` (the command key),
 * `{server}` and `{tag.NAME}`; a missing value becomes `_`.
 *
 * @module
 */
import { z } from "zod";
import { Duration, Size } from "./types.ts";

/** What can leave the server through an output. */
export const OutputMessageType = z.enum(["output", "log", "alive", "setTag", "audit"]);
export type OutputMessageType = z.infer<typeof OutputMessageType>;

/** Which messages an output takes; every given field must match. Default: all. */
export const OutputFilter = z.object({
  /** Message types. */
  types: z.array(OutputMessageType).min(1).optional(),
  /** Agent tags that must all match (agents' current tags). */
  tags: z.record(z.string(), z.string()).optional(),
  /** Agent ids. */
  agents: z.array(z.string().min(1)).min(1).optional(),
  /** Command keys (the `job.key` of a reply), e.g. exec.run. */
  keys: z.array(z.string().min(1)).min(1).optional(),
}).strict();
export type OutputFilter = z.infer<typeof OutputFilter>;

/** A template for routing keys and topics: see the module doc. */
const Template = z.string().min(1).max(512);

/** Fields every output has. */
const common = {
  /** Unique name: lower-case letters, digits, _ and -. Shown by `jw client outputs`. */
  name: z.string().regex(/^[a-z0-9][a-z0-9_-]{0,63}$/, "output names are a-z 0-9 _ - (1-64)"),
  /** Which messages go out here. Default: all. */
  filter: OutputFilter.optional(),
  /**
   * A JavaScript file whose default export `(message) => object | null` reshapes each
   * message (null drops it); it runs in a Worker with no permissions.
   */
  format: z.string().min(1).optional(),
  /** The durable queue in the server's sqlite in front of this backend. */
  queue: z.object({
    /** Most bytes queued; beyond it the oldest are dropped (counted and logged). Default "256MiB". */
    maxBytes: Size.prefault("256MiB"),
    /** Most messages handed to the backend at once. Default 500. */
    batch: z.number().int().min(1).max(10_000).default(500),
    /** Longest wait between retries while the backend is down. Default "30s". */
    retryMax: Duration.prefault("30s"),
  }).strict().prefault({}),
};

/** JSON lines in a file, rotated by size and/or time. */
export const FileOutput = z.object({
  ...common,
  type: z.literal("file"),
  /** The file written; rotated files get a `.N` suffix (`.1` the newest). */
  path: z.string().min(1),
  rotate: z.object({
    /** Rotate when the file reaches this size. Default "100MiB". */
    size: Size.prefault("100MiB"),
    /** Also rotate this often (e.g. "1h"). Default: only by size. */
    every: Duration.optional(),
    /** Rotated files kept. Default 10. */
    keep: z.number().int().min(0).max(1000).default(10),
  }).strict().prefault({}),
  /**
   * When data reaches the disk: `always` (fsync after every batch, before the queue forgets
   * it), `interval` (at most every second), `never` (the OS decides). Default "always".
   */
  fsync: z.enum(["always", "interval", "never"]).default("always"),
}).strict();

/** RabbitMQ (AMQP 0-9-1) with publisher confirms. */
export const AmqpOutput = z.object({
  ...common,
  type: z.literal("amqp"),
  /** Broker URL, e.g. amqp://user:pass@host:5672/vhost. */
  url: z.string().regex(/^amqps?:\/\//, "must be an amqp:// or amqps:// URL"),
  /** Exchange published to (declared durable if missing). Default "jw". */
  exchange: z.string().max(255).default("jw"),
  /** Its type when declared. Default "topic". */
  exchangeType: z.enum(["topic", "direct", "fanout", "headers"]).default("topic"),
  /** Routing key template. Default "jw.{type}.{agent}". */
  routingKey: Template.default("jw.{type}.{agent}"),
  /** Persistent messages (delivery mode 2). Default true. */
  persistent: z.boolean().default(true),
  /**
   * Longest wait for the broker: to connect, and between two confirms of a batch (a batch
   * fails as `unavailable` when the broker makes no progress for this long). Default "10s".
   */
  timeout: Duration.prefault("10s"),
}).strict();

/** An MQTT broker (e.g. Mosquitto), QoS 1. */
export const MqttOutput = z.object({
  ...common,
  type: z.literal("mqtt"),
  /** Broker URL, e.g. mqtt://host:1883 or mqtts://… */
  url: z.string().regex(/^(mqtts?|wss?):\/\//, "must be an mqtt:// (mqtts, ws, wss) URL"),
  /** Topic template. Default "jw/{type}/{agent}". */
  topic: Template.default("jw/{type}/{agent}"),
  /** QoS 0 or 1. Default 1 (QoS 0 cannot confirm delivery). */
  qos: z.union([z.literal(0), z.literal(1)]).default(1),
  /** Client id. Default "jw-SERVERID-NAME". */
  clientId: z.string().min(1).max(128).optional(),
  /** Messages published and not yet acknowledged at once. Default 200. */
  window: z.number().int().min(1).max(10_000).default(200),
  username: z.string().optional(),
  password: z.string().optional(),
  /**
   * Longest wait for the broker: to connect, and for the next acknowledgement while
   * messages are unacknowledged. Default "10s".
   */
  timeout: Duration.prefault("10s"),
  /**
   * MQTT protocol: 4 (3.1.1) or 5. MQTT 3.1.1 messages have no properties, so the message
   * id is only inside the body; with 5 each message also carries the user properties `mid`
   * and `type`. Default 4.
   */
  protocolVersion: z.union([z.literal(4), z.literal(5)]).default(4),
}).strict();

/** nsqd's HTTP API: `/pub` for one message, `/mpub` for a batch. */
export const NsqOutput = z.object({
  ...common,
  type: z.literal("nsq"),
  /** nsqd's HTTP address, e.g. http://127.0.0.1:4151. */
  url: z.string().regex(/^https?:\/\//, "must be nsqd's http:// address"),
  /** Topic template (NSQ topics: . a-z A-Z 0-9 _ -). Default "jw_{type}". */
  topic: Template.default("jw_{type}"),
  /** Longest wait for nsqd. Default "10s". */
  timeout: Duration.prefault("10s"),
}).strict();

/** POSTs batches to a URL. */
export const HttpOutput = z.object({
  ...common,
  type: z.literal("http"),
  url: z.string().regex(/^https?:\/\//, "must be an http(s):// URL"),
  /** `ndjson` (one message per line) or `json` (an array). Default "ndjson". */
  body: z.enum(["ndjson", "json"]).default("ndjson"),
  /** Extra request headers. */
  headers: z.record(z.string(), z.string()).default({}),
  /** `Authorization: Bearer TOKEN`. */
  bearer: z.string().optional(),
  /** HTTP basic credentials. */
  basic: z.object({ user: z.string(), password: z.string() }).strict().optional(),
  /** Longest wait for a response. Default "10s". */
  timeout: Duration.prefault("10s"),
}).strict();

/** One output. */
export const OutputConfig = z.discriminatedUnion("type", [
  FileOutput,
  AmqpOutput,
  MqttOutput,
  NsqOutput,
  HttpOutput,
]);
export type OutputConfig = z.output<typeof OutputConfig>;
export type FileOutputConfig = z.output<typeof FileOutput>;
export type AmqpOutputConfig = z.output<typeof AmqpOutput>;
export type MqttOutputConfig = z.output<typeof MqttOutput>;
export type NsqOutputConfig = z.output<typeof NsqOutput>;
export type HttpOutputConfig = z.output<typeof HttpOutput>;

/** The `outputs` list: names unique. Default []. */
export const OutputsConfig = z.array(OutputConfig).default([]).superRefine((outputs, ctx) => {
  const seen = new Set<string>();
  for (const [i, o] of outputs.entries()) {
    if (seen.has(o.name)) {
      ctx.addIssue({ code: "custom", path: [i, "name"], message: `duplicate output "${o.name}"` });
    }
    seen.add(o.name);
  }
});
