/**
 * Outputs: the whole outputs pipeline (server/outputs/) against real brokers on this machine.
 *
 * - **Throughput**: `outputs.reply()` of N `output` replies of about 200 bytes each (as
 *   published), fed in chunks of 1,000 with a turn of the event loop between them, through the
 *   durable sqlite queue and the real backend, to a consumer in this process that counts
 *   them: `file` (`fsync: interval`; the consumer is the file: every line there and the queue
 *   empty), `amqp` (persistent, publisher confirms; a consumer on a queue bound to the
 *   exchange), `mqtt` (QoS 1, window 200; a QoS 1 subscriber). Side by side in the same run,
 *   the raw clients' own limit to the same brokers and consumers: amqplib on a confirm
 *   channel publishing persistent messages of the same size in batches of 500
 *   (`waitForConfirms` after each), and mqtt.js at QoS 1 with at most 200 unacknowledged.
 *   Every path gets an untimed warm-up of 1,000 messages first (connections, JIT).
 * - **Latency**: replies at a fixed rate (2,000/s for 5 s) each carrying the time of its
 *   `reply()` call; the consumer takes the difference on arrival (for `file`: when the batch
 *   holding it was written, i.e. `send` resolved). p50, p99 and max per backend.
 * - **Stall**: the MQTT broker is stopped and replies keep coming at a fixed rate (60 s); this
 *   process's RSS and V8 heap are sampled every second. The queue is on disk, so memory
 *   should stay flat.
 *
 * Targets: AMQP and MQTT at least 0.8 × the raw client, file at least 50,000 msg/s, and RSS
 * growing less than 20 MiB during the stall. {@link runOutputs} runs everything (bench/main.ts
 * calls it).
 *
 * @module
 */
import { Buffer } from "node:buffer";
import { connect as amqpConnect } from "amqplib";
import type { ChannelModel } from "amqplib";
import mqtt from "mqtt";
import type { MqttClient } from "mqtt";
import { realClock } from "../shared/clock.ts";
import { OutputConfig } from "../shared/config/outputs.ts";
import { openDatabase } from "../shared/db/mod.ts";
import { silentLogger } from "../shared/log.ts";
import type { RelayedReply } from "../shared/protocol/mod.ts";
import { RELAYED_JSON, type RelayedWithJson, withAgent } from "../server/delegate/bus.ts";
import { seededRandom } from "../shared/random.ts";
import { serverMigrations } from "../server/db.ts";
import type { Backend, OutboxItem } from "../server/outputs/backend.ts";
import { createBackend } from "../server/outputs/backends.ts";
import { OutputQueue } from "../server/outputs/outbox.ts";
import { type Outputs, startOutputs } from "../server/outputs/pipeline.ts";
import { startMosquitto } from "../tests/helpers/mosquitto.ts";
import { startRabbitMq } from "../tests/helpers/rabbitmq.ts";
import { readProcFile } from "./_proc.ts";
import { type MachineInfo, table } from "./_report.ts";
import { percentile } from "./_stats.ts";

/** Where the outputs benchmark's generated block starts and ends in docs/benchmarks.md. */
export const OUTPUTS_BEGIN_MARK =
  "<!-- bench:outputs:begin (bench/main.ts rewrites this block when the outputs bench runs) -->";
export const OUTPUTS_END_MARK = "<!-- bench:outputs:end -->";

/** Targets. */
export const RAW_RATIO_TARGET = 0.8;
export const FILE_TARGET_PER_S = 50_000;
export const STALL_GROWTH_BUDGET = 20 * 2 ** 20;

const SERVER_ID = "bench";
const AGENT = "agent-000001";
const TAGS: Readonly<Record<string, string>> = { role: "web" };
const EXCHANGE = "jw";
const ROUTING_KEY = `jw.output.${AGENT}`;
const TOPIC = `jw/output/${AGENT}`;
/** Raw AMQP publishes between two `waitForConfirms`. */
const RAW_AMQP_BATCH = 500;
/** Raw MQTT unacknowledged publishes at most. */
const RAW_MQTT_WINDOW = 200;
const WARMUP = 1000;
const CHUNK = 1000;
/**
 * Rounds of each broker path, raw client and pipeline alternating: one run alone moves by
 * ±15% with what the broker and the machine do meanwhile; the medians are compared.
 */
export const ROUNDS = 5;

/** Options of {@link runOutputs}. */
export interface OutputsBenchOptions {
  /** Messages per throughput measurement. Default 20,000. */
  messages?: number;
  /** Size of a published message, bytes (the pipeline's JSON body; the raw payload). Default 200. */
  bodyBytes?: number;
  /** Replies per second in the latency runs. Default 2,000. */
  latencyRate?: number;
  /** Length of a latency run, ms. Default 5,000. */
  latencyMs?: number;
  /** Replies per second while the broker is stopped. Default 2,000. */
  stallRate?: number;
  /** Length of the stall, ms. Default 60,000. */
  stallMs?: number;
  /** Scratch directory (sqlite files, the file output). */
  dir: string;
  /** Progress lines. */
  log?: (line: string) => void;
}

/** One throughput measurement. */
export interface ThroughputRow {
  /** `file`, `amqp`, `mqtt` (the pipeline) or `amqplib`, `mqtt.js` (the raw clients). */
  path: string;
  backend: "none" | "file" | "amqp" | "mqtt";
  raw: boolean;
  messages: number;
  /** Mean size of a published message, bytes. */
  bytes: number;
  /** Messages per second until the publisher had every confirm. */
  confirmedPerS: number;
  /** Messages per second until the consumer had every message (the figure the targets use). */
  receivedPerS: number;
  /**
   * Each round's received msg/s when the path ran more than once (the broker paths run
   * {@link ROUNDS} times, raw and pipeline alternating); the rates above are the medians.
   */
  rounds?: number[];
}

/** One latency run. */
export interface LatencyRow {
  backend: "file" | "amqp" | "mqtt";
  rate: number;
  messages: number;
  p50Ms: number;
  p99Ms: number;
  maxMs: number;
}

/** One memory sample. */
export interface MemorySample {
  /** Seconds since the stall began. */
  s: number;
  rss: number;
  heapUsed: number;
}

/** The stall. */
export interface StallResult {
  backend: "mqtt";
  rate: number;
  ms: number;
  /** Replies made during the stall. */
  messages: number;
  /** Messages in the on-disk queue when it ended. */
  queuedAtEnd: number;
  samples: MemorySample[];
}

/** Start, max and end of a series. */
export interface Spread {
  start: number;
  max: number;
  end: number;
}

/** Everything the outputs benchmark measured. */
export interface OutputsResults {
  /** /proc/loadavg (1, 5, 15 min) when it started. */
  load: string;
  rabbitmq: string;
  mosquitto: string;
  throughput: ThroughputRow[];
  latency: LatencyRow[];
  stall: StallResult;
}

// ---------------------------------------------------------------------------------------------
// Pure helpers

/** How many of `rate` per second are due `elapsedMs` into a paced run, minus those `sent`. */
export function dueNow(elapsedMs: number, rate: number, sent: number): number {
  return Math.max(0, Math.floor((elapsedMs * rate) / 1000) - sent);
}

/** The reply text that carries `stamp` (ms) and pads the message to its size. */
export function stampedText(stamp: number, length: number): string {
  const head = `${stamp.toFixed(3)}|`;
  return head + "x".repeat(Math.max(0, length - head.length));
}

/** The stamp inside a message body made from {@link stampedText}; NaN when there is none. */
export function stampOf(body: string): number {
  const m = /"text":"(\d+\.\d+)\|/.exec(body);
  return m ? Number(m[1]) : NaN;
}

/** Start, max and end of `values` (NaN for none). */
export function spreadOf(values: readonly number[]): Spread {
  if (values.length === 0) return { start: NaN, max: NaN, end: NaN };
  return { start: values[0], max: Math.max(...values), end: values[values.length - 1] };
}

/** A target and whether this run met it. */
export interface OutputsVerdict {
  target: string;
  met: boolean;
  detail: string;
}

const perS = (v: number) => Number.isFinite(v) ? Math.round(v).toLocaleString("en-US") : "–";
const mib = (bytes: number) => (bytes / 2 ** 20).toFixed(1);

/** The targets against this run. */
export function outputsVerdicts(r: Pick<OutputsResults, "throughput" | "stall">): OutputsVerdict[] {
  const find = (path: string) => r.throughput.find((t) => t.path === path);
  const verdicts: OutputsVerdict[] = [];
  for (const [backend, raw] of [["amqp", "amqplib"], ["mqtt", "mqtt.js"]] as const) {
    const p = find(backend);
    const c = find(raw);
    const ratio = p && c && c.receivedPerS > 0 ? p.receivedPerS / c.receivedPerS : NaN;
    verdicts.push({
      target: `${backend} output ≥ ${RAW_RATIO_TARGET} × ${raw} alone`,
      met: Number.isFinite(ratio) && ratio >= RAW_RATIO_TARGET,
      detail: `${perS(p?.receivedPerS ?? NaN)} against ${perS(c?.receivedPerS ?? NaN)} msg/s ` +
        `(${Number.isFinite(ratio) ? ratio.toFixed(2) : "–"}×)`,
    });
  }
  const file = find("file");
  verdicts.push({
    target: `file output ≥ ${FILE_TARGET_PER_S.toLocaleString("en-US")} msg/s`,
    met: (file?.receivedPerS ?? 0) >= FILE_TARGET_PER_S,
    detail: `${perS(file?.receivedPerS ?? NaN)} msg/s`,
  });
  const rss = spreadOf(r.stall.samples.map((s) => s.rss));
  verdicts.push({
    target: `Memory flat while the ${r.stall.backend} broker is down (RSS max − start < ${
      mib(STALL_GROWTH_BUDGET)
    } MiB)`,
    met: rss.max - rss.start < STALL_GROWTH_BUDGET,
    detail: `RSS ${mib(rss.start)} → max ${mib(rss.max)} → end ${mib(rss.end)} MiB over ${
      r.stall.ms / 1000
    } s, ${r.stall.messages.toLocaleString("en-US")} messages queued on disk`,
  });
  return verdicts;
}

// ---------------------------------------------------------------------------------------------
// Consumers and the pipeline under test

/** Counts messages and, when asked, how long each took since its stamp. */
class Counter {
  count = 0;
  latencies: number[] | null = null;
  bytes = 0;
  #waiters: { n: number; reached: () => void }[] = [];

  receive(body: string): void {
    this.count++;
    this.bytes += Buffer.byteLength(body);
    if (this.latencies) this.latencies.push(performance.now() - stampOf(body));
    if (this.#waiters.length > 0) {
      for (const w of this.#waiters.filter((w) => this.count >= w.n)) w.reached();
    }
  }

  reset(latency = false): void {
    this.count = 0;
    this.bytes = 0;
    this.latencies = latency ? [] : null;
  }

  /** Resolves with the time the count reached `n`; rejects after `timeoutMs`. */
  until(n: number, timeoutMs: number, what: string): Promise<number> {
    if (this.count >= n) return Promise.resolve(performance.now());
    return new Promise((resolve, reject) => {
      const waiter = {
        n,
        reached: () => {
          clearTimeout(timer);
          this.#waiters = this.#waiters.filter((w) => w !== waiter);
          resolve(performance.now());
        },
      };
      const timer = setTimeout(() => {
        this.#waiters = this.#waiters.filter((w) => w !== waiter);
        reject(new Error(`${what}: ${this.count} of ${n} messages after ${timeoutMs} ms`));
      }, timeoutMs);
      this.#waiters.push(waiter);
    });
  }
}

/** A backend that counts what its inner backend confirmed (and stamps, for `file`). */
function counting(inner: Backend, confirmed: Counter): Backend {
  return {
    name: inner.name,
    async send(batch: readonly OutboxItem[]) {
      await inner.send(batch);
      for (const item of batch) confirmed.receive(item.body);
    },
    close: () => inner.close(),
  };
}

/** A running pipeline with one output, on its own sqlite file. */
interface Pipeline {
  outputs: Outputs;
  confirmed: Counter;
  queued(): number;
  close(): Promise<void>;
}

async function startPipeline(
  dir: string,
  config: Record<string, unknown>,
  inner?: (name: string) => Backend,
): Promise<Pipeline> {
  const name = config.name as string;
  const db = openDatabase(`${dir}/${name}.sqlite`, serverMigrations);
  const queue = new OutputQueue(db, SERVER_ID);
  const confirmed = new Counter();
  const outputs = await startOutputs({
    serverId: SERVER_ID,
    outputs: [OutputConfig.parse(config)],
    queue,
    backend: (c) =>
      counting(
        inner?.(c.name) ??
          createBackend(c, { serverId: SERVER_ID, clock: realClock, logger: silentLogger }),
        confirmed,
      ),
    deadLetterDir: `${dir}/dead`,
    clock: realClock,
    random: seededRandom(1),
  });
  return {
    outputs,
    confirmed,
    queued: () => queue.counters(name).queued,
    async close() {
      await outputs.close();
      db.close();
    },
  };
}

/** The reply fed to the pipeline. */
function reply(text: string): RelayedReply {
  return {
    v: 1,
    id: "cmd-bench",
    type: "output",
    job: { id: "job-bench", key: "exec.run" },
    seq: 0,
    ts: 1,
    text,
    agent: AGENT,
  } as RelayedReply;
}

/**
 * The reply as the server's agent connection hands it on: carrying the text of the frame it
 * arrived in (the agent's JSON with `agent` added), which the pipeline uses instead of
 * serialising the reply again.
 */
function received(text: string): RelayedReply {
  const r = reply(text) as RelayedWithJson;
  const { agent: _, ...frame } = r;
  r[RELAYED_JSON] = withAgent(JSON.stringify(frame), AGENT);
  return r;
}

/** Shortest reply text: room for a latency stamp. */
const MIN_TEXT = 16;

/**
 * The pipeline's JSON body for a reply with `text` as published (mids of 5 digits), the
 * length the raw clients' payloads get too.
 */
export function bodyLength(text: string): number {
  return JSON.stringify({
    mid: `${SERVER_ID}-10000`,
    server: SERVER_ID,
    type: "output",
    agent: AGENT,
    tags: TAGS,
    message: reply(text),
  }).length;
}

/** Reply text length that makes the body `bodyBytes` long, or the shortest body possible. */
export function textLength(bodyBytes: number): number {
  return Math.max(MIN_TEXT, bodyBytes - bodyLength(""));
}

const turn = () => new Promise<void>((resolve) => setTimeout(resolve, 0));

/** Feeds `n` replies as fast as the pipeline takes them, a chunk per event-loop turn. */
async function feed(outputs: Outputs, n: number, text: string): Promise<void> {
  const one = received(text);
  for (let sent = 0; sent < n;) {
    const upto = Math.min(n, sent + CHUNK);
    // Every message is the same reply: received once, handed on n times.
    for (; sent < upto; sent++) outputs.reply(one, TAGS);
    await turn();
  }
}

/** Feeds replies at `rate` per second for `ms`, each stamped; returns how many. */
async function feedPaced(
  outputs: Outputs,
  rate: number,
  ms: number,
  length: number,
  onTick?: (elapsedMs: number) => void,
): Promise<number> {
  const start = performance.now();
  let sent = 0;
  for (;;) {
    const elapsed = performance.now() - start;
    if (elapsed >= ms) break;
    const due = dueNow(elapsed, rate, sent);
    for (let i = 0; i < due; i++) {
      outputs.reply(received(stampedText(performance.now(), length)), TAGS);
    }
    sent += due;
    onTick?.(elapsed);
    await new Promise((resolve) => setTimeout(resolve, 2));
  }
  return sent;
}

/**
 * Runs `a` then `b`, {@link ROUNDS} times; each result is the median round (by received
 * msg/s, confirmed msg/s likewise) with every round's rate in `rounds`.
 */
async function alternate(
  a: () => Promise<ThroughputRow>,
  b: () => Promise<ThroughputRow>,
): Promise<[ThroughputRow, ThroughputRow]> {
  const as: ThroughputRow[] = [];
  const bs: ThroughputRow[] = [];
  for (let i = 0; i < ROUNDS; i++) {
    as.push(await a());
    bs.push(await b());
  }
  return [medianRow(as), medianRow(bs)];
}

/** One row of medians from several rounds of the same path. */
function medianRow(rows: readonly ThroughputRow[]): ThroughputRow {
  const median = (xs: number[]) => [...xs].sort((x, y) => x - y)[Math.floor(xs.length / 2)];
  return {
    ...rows[0],
    bytes: median(rows.map((r) => r.bytes)),
    confirmedPerS: median(rows.map((r) => r.confirmedPerS)),
    receivedPerS: median(rows.map((r) => r.receivedPerS)),
    rounds: rows.map((r) => r.receivedPerS),
  };
}

/** The time allowed for `n` messages to arrive. */
const allow = (n: number) => 30_000 + n;

/**
 * Times a raw client: a warm-up of {@link WARMUP} messages, then `messages`, counted once
 * `run` has them confirmed and once the consumer (`received`) has them all.
 */
async function timeRaw(
  path: string,
  backend: ThroughputRow["backend"],
  run: (n: number) => Promise<void>,
  received: Counter,
  messages: number,
): Promise<ThroughputRow> {
  received.reset();
  await run(WARMUP);
  await received.until(WARMUP, allow(WARMUP), `${path} warm-up`);
  received.reset();
  const start = performance.now();
  const arrived = received.until(messages, allow(messages), `${path} consumer`);
  await run(messages);
  const confirmedAt = performance.now();
  const receivedAt = await arrived;
  return {
    path,
    backend,
    raw: true,
    messages,
    bytes: received.bytes / received.count,
    confirmedPerS: (messages * 1000) / (confirmedAt - start),
    receivedPerS: (messages * 1000) / (receivedAt - start),
  };
}

/** Runs the pipeline's throughput measurement (after a warm-up) for one backend. */
async function pipelineThroughput(
  p: Pipeline,
  received: Counter,
  backend: ThroughputRow["backend"],
  messages: number,
  length: number,
): Promise<ThroughputRow> {
  const text = "x".repeat(length);
  p.confirmed.reset();
  received.reset();
  await feed(p.outputs, WARMUP, text);
  await received.until(WARMUP, allow(WARMUP), `${backend} warm-up`);
  p.confirmed.reset();
  received.reset();
  const start = performance.now();
  const done = p.confirmed.until(messages, allow(messages), `${backend} confirms`);
  const arrived = received.until(messages, allow(messages), `${backend} consumer`);
  await feed(p.outputs, messages, text);
  const [confirmedAt, receivedAt] = await Promise.all([done, arrived]);
  return {
    path: backend,
    backend,
    raw: false,
    messages,
    bytes: received.bytes / received.count,
    confirmedPerS: (messages * 1000) / (confirmedAt - start),
    receivedPerS: (messages * 1000) / (receivedAt - start),
  };
}

/** Stamped replies at a fixed rate; latency from `reply()` to `received`. */
async function pipelineLatency(
  p: Pipeline,
  received: Counter,
  backend: LatencyRow["backend"],
  rate: number,
  ms: number,
  length: number,
): Promise<LatencyRow> {
  received.reset(true);
  const sent = await feedPaced(p.outputs, rate, ms, length);
  await received.until(sent, allow(sent), `${backend} latency`);
  const l = received.latencies ?? [];
  received.reset();
  return {
    backend,
    rate,
    messages: sent,
    p50Ms: percentile(l, 50),
    p99Ms: percentile(l, 99),
    maxMs: Math.max(...l),
  };
}

/** A consumer on a server-named queue bound to the exchange. */
async function amqpConsumer(url: string, into: Counter): Promise<ChannelModel> {
  const model = await amqpConnect(url);
  const ch = await model.createChannel();
  await ch.assertExchange(EXCHANGE, "topic", { durable: true });
  const q = await ch.assertQueue("", { exclusive: true, autoDelete: true });
  await ch.bindQueue(q.queue, EXCHANGE, "jw.#");
  await ch.prefetch(0);
  await ch.consume(q.queue, (msg) => {
    if (msg) into.receive(msg.content.toString("utf8"));
  }, { noAck: true });
  return model;
}

/** amqplib alone: persistent, confirm channel, batches of 500 with `waitForConfirms`. */
async function rawAmqp(
  url: string,
  received: Counter,
  messages: number,
  bytes: number,
): Promise<ThroughputRow> {
  const model = await amqpConnect(url);
  try {
    const ch = await model.createConfirmChannel();
    await ch.assertExchange(EXCHANGE, "topic", { durable: true });
    const payload = Buffer.from("x".repeat(bytes));
    const run = async (n: number) => {
      for (let sent = 0; sent < n;) {
        const upto = Math.min(n, sent + RAW_AMQP_BATCH);
        for (; sent < upto; sent++) {
          if (!ch.publish(EXCHANGE, ROUTING_KEY, payload, { persistent: true })) {
            await new Promise((resolve) => ch.once("drain", resolve));
          }
        }
        await ch.waitForConfirms();
      }
    };
    return await timeRaw("amqplib", "amqp", run, received, messages);
  } finally {
    await model.close().catch(() => {});
  }
}

/** Connects an mqtt.js client and waits for its CONNACK. */
function mqttClient(url: string, clientId: string): Promise<MqttClient> {
  return new Promise((resolve, reject) => {
    const client = mqtt.connect(url, { clientId, clean: true, reconnectPeriod: 0 });
    client.once("connect", () => resolve(client));
    client.once("error", reject);
  });
}

/** A QoS 1 subscriber to every jw topic. */
async function mqttConsumer(url: string, into: Counter): Promise<MqttClient> {
  const client = await mqttClient(url, "bench-consumer");
  client.on("error", () => {});
  client.on("message", (_topic, payload) => into.receive(payload.toString("utf8")));
  await client.subscribeAsync("jw/#", { qos: 1 });
  return client;
}

/** mqtt.js alone: QoS 1 with at most 200 unacknowledged. */
async function rawMqtt(
  url: string,
  received: Counter,
  messages: number,
  bytes: number,
): Promise<ThroughputRow> {
  const client = await mqttClient(url, "bench-raw");
  const payload = "x".repeat(bytes);
  const run = (n: number) =>
    new Promise<void>((resolve, reject) => {
      let next = 0;
      let unacked = 0;
      let acked = 0;
      const pump = () => {
        while (unacked < RAW_MQTT_WINDOW && next < n) {
          next++;
          unacked++;
          client.publish(TOPIC, payload, { qos: 1 }, (err) => {
            if (err) return reject(err);
            unacked--;
            if (++acked === n) resolve();
            else pump();
          });
        }
      };
      pump();
    });
  try {
    return await timeRaw("mqtt.js", "mqtt", run, received, messages);
  } finally {
    await client.endAsync().catch(() => {});
  }
}

/** Counts the lines of a file. */
async function lineCount(path: string): Promise<number> {
  const data = await Deno.readFile(path);
  let n = 0;
  for (const b of data) if (b === 10) n++;
  return n;
}

/** The version a broker's package reports, or "unknown". */
async function packageVersion(name: string): Promise<string> {
  try {
    const out = await new Deno.Command("dpkg-query", {
      args: ["-W", "-f=${Version}", name],
      stdout: "piped",
      stderr: "null",
    }).output();
    return out.success ? new TextDecoder().decode(out.stdout).trim() : "unknown";
  } catch {
    return "unknown";
  }
}

// ---------------------------------------------------------------------------------------------
// The run

/** Runs every section (see the module doc); starts and stops its own brokers. */
export async function runOutputs(options: OutputsBenchOptions): Promise<OutputsResults> {
  const messages = options.messages ?? 20_000;
  const bodyBytes = options.bodyBytes ?? 200;
  const latencyRate = options.latencyRate ?? 2000;
  const latencyMs = options.latencyMs ?? 5000;
  const stallRate = options.stallRate ?? 2000;
  const stallMs = options.stallMs ?? 60_000;
  const log = options.log ?? (() => {});
  const dir = `${options.dir}/outputs`;
  await Deno.mkdir(dir, { recursive: true });
  const length = textLength(bodyBytes);
  const rawBytes = bodyLength("x".repeat(length));
  const load = await readProcFile("/proc/loadavg")
    .then((text) => text.split(" ").slice(0, 3).join(" "))
    .catch(() => "unknown");
  const throughput: ThroughputRow[] = [];
  const latency: LatencyRow[] = [];
  const row = (r: ThroughputRow) => {
    throughput.push(r);
    log(`outputs: ${r.path}: ${perS(r.receivedPerS)} msg/s received`);
  };
  const lat = (r: LatencyRow) => {
    latency.push(r);
    log(`outputs: ${r.backend} latency p50 ${r.p50Ms.toFixed(1)} ms, p99 ${r.p99Ms.toFixed(1)} ms`);
  };

  // The pipeline alone: a backend that confirms at once (the sqlite queue's own limit).
  {
    const none = (name: string): Backend => ({
      name,
      send: () => Promise.resolve(),
      close: () => Promise.resolve(),
    });
    const p = await startPipeline(dir, { name: "none", type: "http", url: "http://x" }, none);
    try {
      row(await pipelineThroughput(p, p.confirmed, "none", messages, length));
    } finally {
      await p.close();
    }
  }

  // file: the consumer is the file itself (what the backend confirmed, checked after).
  {
    const path = `${dir}/out.jsonl`;
    const p = await startPipeline(dir, { name: "file", type: "file", path, fsync: "interval" });
    try {
      row(await pipelineThroughput(p, p.confirmed, "file", messages, length));
      const lines = await lineCount(path);
      if (p.queued() !== 0 || lines !== messages + WARMUP) {
        throw new Error(`file output: ${lines} lines and ${p.queued()} still queued`);
      }
      lat(await pipelineLatency(p, p.confirmed, "file", latencyRate, latencyMs, length));
    } finally {
      await p.close();
    }
  }

  log("outputs: starting rabbitmq-server and mosquitto");
  const [rabbit, mosquitto] = await Promise.all([
    startRabbitMq(),
    // As docs/outputs.md recommends: without it Nagle holds back each batch's last PUBACK.
    startMosquitto({ extraConfig: ["set_tcp_nodelay true"] }),
  ]);
  try {
    // amqp
    {
      const received = new Counter();
      const consumer = await amqpConsumer(rabbit.url, received);
      try {
        const p = await startPipeline(dir, { name: "amqp", type: "amqp", url: rabbit.url });
        try {
          const [raw, piped] = await alternate(
            () => rawAmqp(rabbit.url, received, messages, rawBytes),
            () => pipelineThroughput(p, received, "amqp", messages, length),
          );
          row(raw);
          row(piped);
          lat(await pipelineLatency(p, received, "amqp", latencyRate, latencyMs, length));
        } finally {
          await p.close();
        }
      } finally {
        await consumer.close().catch(() => {});
      }
    }
    // mqtt, then the stall with the broker stopped
    let stall: StallResult;
    {
      const received = new Counter();
      const consumer = await mqttConsumer(mosquitto.url, received);
      let p: Pipeline | undefined;
      try {
        const pipeline = p = await startPipeline(dir, {
          name: "mqtt",
          type: "mqtt",
          url: mosquitto.url,
        });
        const [raw, piped] = await alternate(
          () => rawMqtt(mosquitto.url, received, messages, rawBytes),
          () => pipelineThroughput(pipeline, received, "mqtt", messages, length),
        );
        row(raw);
        row(piped);
        lat(await pipelineLatency(p, received, "mqtt", latencyRate, latencyMs, length));
        log(`outputs: stopping mosquitto; ${stallMs / 1000} s of replies at ${stallRate}/s`);
        await mosquitto.stop();
        const samples: MemorySample[] = [];
        const sample = (ms: number) => {
          const m = Deno.memoryUsage();
          samples.push({ s: Math.round(ms / 1000), rss: m.rss, heapUsed: m.heapUsed });
        };
        sample(0);
        let nextSample = 1000;
        const sent = await feedPaced(p.outputs, stallRate, stallMs, length, (elapsed) => {
          if (elapsed >= nextSample) {
            sample(elapsed);
            nextSample += 1000;
          }
        });
        p.outputs.flush();
        sample(stallMs);
        stall = {
          backend: "mqtt",
          rate: stallRate,
          ms: stallMs,
          messages: sent,
          queuedAtEnd: p.queued(),
          samples,
        };
        log(`outputs: stall: ${stall.queuedAtEnd} queued on disk at the end`);
      } finally {
        await p?.close();
        await consumer.endAsync(true).catch(() => {});
      }
    }
    return {
      load,
      rabbitmq: await packageVersion("rabbitmq-server"),
      mosquitto: await packageVersion("mosquitto"),
      throughput,
      latency,
      stall,
    };
  } finally {
    await Promise.all([rabbit.close(), mosquitto.close()]);
  }
}

// ---------------------------------------------------------------------------------------------
// Reports

/** The throughput table. */
export function throughputTable(rows: readonly ThroughputRow[]): string {
  return table(
    [
      "path",
      "messages",
      "bytes",
      "confirmed msg/s",
      "received msg/s",
      "rounds (received msg/s)",
      "vs raw client",
    ],
    rows.map((r) => {
      const raw = r.raw ? undefined : rows.find((o) => o.raw && o.backend === r.backend);
      return [
        r.raw ? `${r.path} (raw)` : r.path === "none" ? "queue only" : `${r.path} output`,
        r.messages.toLocaleString("en-US"),
        r.bytes.toFixed(0),
        perS(r.confirmedPerS),
        perS(r.receivedPerS),
        r.rounds ? r.rounds.map(perS).join(" / ") : "",
        raw ? `${(r.receivedPerS / raw.receivedPerS).toFixed(2)}×` : "",
      ];
    }),
  );
}

/** The latency table. */
export function latencyTable(rows: readonly LatencyRow[]): string {
  return table(
    ["backend", "rate msg/s", "messages", "p50 ms", "p99 ms", "max ms"],
    rows.map((r) => [
      r.backend,
      r.rate.toLocaleString("en-US"),
      r.messages.toLocaleString("en-US"),
      r.p50Ms.toFixed(1),
      r.p99Ms.toFixed(1),
      r.maxMs.toFixed(1),
    ]),
  );
}

/** The memory table of the stall. */
export function stallTable(stall: StallResult): string {
  const rss = spreadOf(stall.samples.map((s) => s.rss));
  const heap = spreadOf(stall.samples.map((s) => s.heapUsed));
  return table(
    ["memory", "start MiB", "max MiB", "end MiB", "max − start MiB"],
    [
      ["RSS", mib(rss.start), mib(rss.max), mib(rss.end), mib(rss.max - rss.start)],
      ["V8 heap used", mib(heap.start), mib(heap.max), mib(heap.end), mib(heap.max - heap.start)],
    ],
  );
}

function verdictLines(vs: readonly OutputsVerdict[]): string {
  return vs.map((v) => `- **${v.met ? "met" : "missed"}** — ${v.target}: ${v.detail}`).join("\n");
}

function stallLine(s: StallResult): string {
  return `${s.backend} broker stopped; ${s.rate.toLocaleString("en-US")} replies/s for ${
    s.ms / 1000
  } s (${s.messages.toLocaleString("en-US")} replies, ${
    s.queuedAtEnd.toLocaleString("en-US")
  } queued on disk at the end); this process sampled every second`;
}

/** The outputs results as plain text for the terminal. */
export function renderOutputsText(r: OutputsResults): string {
  return [
    "Outputs throughput (received: the consumer has every message)",
    throughputTable(r.throughput),
    "",
    "Outputs latency, reply() to consumer",
    latencyTable(r.latency),
    "",
    `Outputs stall: ${stallLine(r.stall)}`,
    stallTable(r.stall),
    "",
    "Outputs targets",
    verdictLines(outputsVerdicts(r)),
  ].join("\n");
}

/** The generated outputs block of docs/benchmarks.md. */
export function renderOutputsMarkdown(
  r: OutputsResults,
  machine: MachineInfo,
  quick = false,
): string {
  return [
    OUTPUTS_BEGIN_MARK,
    "",
    `### Latest outputs run (${machine.date}${quick ? ", quick" : ""})`,
    "",
    `- Machine: ${machine.cpus} × ${machine.cpuModel}, Linux ${machine.kernel}; load average ` +
    `${r.load} at the start. Deno ${machine.deno}; RabbitMQ ${r.rabbitmq}, Mosquitto ` +
    `${r.mosquitto} (private brokers on loopback); sqlite queue on the scratch disk.`,
    "- Throughput: `output` replies fed in chunks of 1,000 per event-loop turn after a " +
    "1,000-message warm-up; confirmed: the publisher had every confirm (pipeline: every batch " +
    "`send` resolved); queue only: a backend that confirms at once (the sqlite queue and the " +
    "pipeline alone); received: the consumer in the same process had every message (file: " +
    "every line written, queue empty). Raw clients: amqplib confirm channel, persistent, " +
    "batches of 500 with `waitForConfirms`; mqtt.js QoS 1, at most 200 unacknowledged. " +
    `Broker paths: raw client and pipeline alternate, ${ROUNDS} rounds each; the rates are ` +
    "the medians, every round's received rate beside them.",
    "",
    throughputTable(r.throughput),
    "",
    "Latency from `reply()` to the consumer (file: to the write of its batch):",
    "",
    latencyTable(r.latency),
    "",
    `Stall: ${stallLine(r.stall)}.`,
    "",
    stallTable(r.stall),
    "",
    "#### Outputs targets",
    "",
    verdictLines(outputsVerdicts(r)),
    "",
    OUTPUTS_END_MARK,
  ].join("\n");
}
