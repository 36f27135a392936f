/**
 * The simulated clients a swarm worker runs, one kind per benchmark peer:
 *
 * - `jw`: a real agent connection (agent/connection.ts over the Deno WebSocket transport)
 *   with its own Ed25519 key, the real handshake and schemas. It answers every `command`
 *   frame at once with one `done` output, in-process (no job runner, no process spawn).
 * - `floor`: the same Deno WebSocket client with nothing on top: it opens the socket, idles,
 *   and answers each `ping:ROUND:…` text with a 200-byte `pong:ROUND:…`.
 * - `nats`: an npm `nats` connection subscribed to {@link NATS_SUBJECT}, answering each
 *   request with a 200-byte reply.
 *
 * @module
 */
import { connect as natsConnect, type NatsConnection } from "nats";
import { startConnection } from "../agent/connection.ts";
import { createDenoTransport } from "../agent/deno_transport.ts";
import type { Socket, Transport } from "../agent/transport.ts";
import { realClock } from "../shared/clock.ts";
import { AgentConfig } from "../shared/config/mod.ts";
import { generateKeyPair } from "../shared/crypto/mod.ts";
import { silentLogger } from "../shared/log.ts";
import { type Command, type Output, PROTOCOL_VERSION } from "../shared/protocol/mod.ts";
import { cryptoRandom } from "../shared/random.ts";

/** The kinds of simulated client. */
export type ClientMode = "jw" | "floor" | "nats";

/** The subject NATS subscribers answer on. */
export const NATS_SUBJECT = "bench.ping";

/** Size of a floor or NATS reply, bytes. */
export const REPLY_BYTES = 200;

/** Counters of one worker, over all its clients. */
export interface ClientStats {
  /** Connection attempts (a client that never had to retry makes exactly one). */
  attempts: number;
  /** Handshakes the server refused (jw: `error` frames during the handshake). */
  failures: number;
  /** Requests answered. */
  answered: number;
  /** Heartbeats (`alive` frames) sent (jw only). */
  alive: number;
}

/** One simulated client. */
export interface SimClient {
  /** Connects; resolves once usable (jw: welcomed). Call once. */
  start(): Promise<void>;
  /** Disconnects. Idempotent. */
  close(): Promise<void>;
}

/** Makes the clients of one worker. */
export interface ClientFactory {
  /** Prepares client `index` (jw: generates its key pair); it does not connect yet. */
  prepare(index: number): Promise<SimClient>;
  readonly stats: ClientStats;
}

/** Options shared by every kind. */
export interface FactoryOptions {
  /** Server URL: `http://HOST:PORT` (jw, floor: the WebSocket path is added) or `HOST:PORT` (nats). */
  url: string;
  /** Prefix of agent ids; client `i` is `PREFIX-i`. */
  prefix: string;
}

/** Creates the factory for `mode`. */
export function createClientFactory(mode: ClientMode, options: FactoryOptions): ClientFactory {
  const stats: ClientStats = { attempts: 0, failures: 0, answered: 0, alive: 0 };
  switch (mode) {
    case "jw":
      return { stats, prepare: (i) => prepareJwAgent(i, options, stats) };
    case "floor":
      return { stats, prepare: () => Promise.resolve(floorClient(options, stats)) };
    case "nats":
      return { stats, prepare: () => Promise.resolve(natsClient(options, stats)) };
  }
}

/** Counts connection attempts and the `alive` frames sent on the sockets. */
function countingTransport(inner: Transport, stats: ClientStats): Transport {
  return {
    async connect(url, signal) {
      stats.attempts++;
      const socket = await inner.connect(url, signal);
      return {
        send(text: string): boolean {
          const sent = socket.send(text);
          if (sent && text.includes('"type":"alive"')) stats.alive++;
          return sent;
        },
        close: (code, reason) => socket.close(code, reason),
        closed: socket.closed,
        [Symbol.asyncIterator]: () => socket[Symbol.asyncIterator](),
      };
    },
  };
}

/** The product's agent defaults (reconnect backoff, frame limit). */
const agentDefaults = AgentConfig.parse({ id: "bench", server: "http://127.0.0.1:1" });

async function prepareJwAgent(
  index: number,
  options: FactoryOptions,
  stats: ClientStats,
): Promise<SimClient> {
  const keyPair = await generateKeyPair();
  const agentId = `${options.prefix}-${String(index).padStart(5, "0")}`;
  const transport = countingTransport(createDenoTransport(), stats);
  let jobs = 0;
  let connection: ReturnType<typeof startConnection> | undefined;
  const answer = (command: Command) => {
    const now = Date.now();
    const reply: Output = {
      v: PROTOCOL_VERSION,
      id: command.id,
      type: "output",
      job: { id: command.job.id ?? `j${++jobs}`, key: command.job.key },
      seq: 0,
      ts: now,
      stream: "result",
      text: "pong",
      done: true,
      start: now,
      finish: now,
      durationMs: 0,
      exitCode: 0,
      error: null,
    };
    if (command.meta !== undefined) reply.meta = command.meta;
    if (connection?.send(reply)) stats.answered++;
  };
  return {
    start() {
      connection = startConnection({
        agentId,
        server: options.url,
        keyPair,
        tags: () => ({ bench: "swarm" }),
        reconnect: agentDefaults.reconnect,
        failoverMs: agentDefaults.reconnect.failover,
        maxFrame: agentDefaults.maxFrame,
        transport,
        clock: realClock,
        random: cryptoRandom,
        logger: silentLogger,
        audit: {
          append(event) {
            if (event.action === "handshake.failed") stats.failures++;
          },
        },
        running: () => 0,
        onCommand: answer,
      });
      return connection.welcomed();
    },
    async close() {
      await connection?.close();
    },
  };
}

function padTo(text: string, bytes: number): string {
  return text.length >= bytes ? text : text + "x".repeat(bytes - text.length);
}

/** Connects with a few retries (the floor and NATS have no reconnect loop of their own). */
async function withRetries<T>(stats: ClientStats, open: () => Promise<T>): Promise<T> {
  for (let attempt = 1;; attempt++) {
    stats.attempts++;
    try {
      return await open();
    } catch (err) {
      if (attempt >= 5) throw err;
      await new Promise((r) => setTimeout(r, 200 * attempt * Math.random()));
    }
  }
}

function floorClient(options: FactoryOptions, stats: ClientStats): SimClient {
  const transport = createDenoTransport();
  const url = options.url.replace(/^http/, "ws").replace(/\/+$/, "") + "/ws";
  let socket: Socket | undefined;
  let reader: Promise<void> | undefined;
  return {
    async start() {
      const s = socket = await withRetries(stats, () => transport.connect(url));
      reader = (async () => {
        for await (const text of s) {
          if (!text.startsWith("ping:")) continue;
          const round = text.slice(5, text.indexOf(":", 5));
          if (s.send(padTo(`pong:${round}:`, REPLY_BYTES))) stats.answered++;
        }
      })();
    },
    async close() {
      socket?.close(1000, "bye");
      await reader;
    },
  };
}

function natsClient(options: FactoryOptions, stats: ClientStats): SimClient {
  const reply = new TextEncoder().encode(padTo("pong:", REPLY_BYTES));
  let nc: NatsConnection | undefined;
  return {
    async start() {
      const c = nc = await withRetries(
        stats,
        () => natsConnect({ servers: options.url, reconnect: false }),
      );
      c.subscribe(NATS_SUBJECT, {
        callback: (err, msg) => {
          if (!err && msg.respond(reply)) stats.answered++;
        },
      });
      await c.flush();
    },
    async close() {
      await nc?.close();
    },
  };
}
