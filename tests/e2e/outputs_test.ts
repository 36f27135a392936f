/**
 * End to end: a real server with outputs to a file, RabbitMQ, Mosquitto and an HTTP receiver,
 * and a real agent producing 10,001 messages (`seq 1 10000`: 10,000 lines and the final
 * output). The brokers and the receiver are down while the messages are made; when they come
 * back every message reaches every destination, exactly once after de-duplication by `mid`,
 * in order. The same for a server restart while messages wait in its queue.
 */
import assert from "node:assert/strict";
import amqp, { type ConsumeMessage } from "amqplib";
import mqtt from "mqtt";
import {
  eventually,
  scratchDir,
  startAgent,
  startServer,
  type TestServer,
} from "../helpers/mod.ts";
import { startRabbitMq } from "../helpers/rabbitmq.ts";
import { startMosquitto } from "../helpers/mosquitto.ts";

const LINES = 10_000;
/** 10,000 stdout lines and the final `done` output. */
const MESSAGES = LINES + 1;

interface Message {
  mid: string;
  type: string;
  agent: string;
  message: { seq: number; text?: string; done?: boolean; meta?: Record<string, unknown> };
}

/** Collects messages, dropping repeated `mid`s (what a consumer does with at-least-once). */
class Dedup {
  readonly order: Message[] = [];
  readonly #seen = new Set<string>();
  duplicates = 0;
  add(m: Message): void {
    if (this.#seen.has(m.mid)) {
      this.duplicates++;
      return;
    }
    this.#seen.add(m.mid);
    this.order.push(m);
  }
  get size(): number {
    return this.order.length;
  }
}

/** An HTTP receiver that answers 503 while `down`, else stores NDJSON batches. */
function startReceiver() {
  const got = new Dedup();
  const state = { down: true, batches: 0 };
  const server = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen: () => {} }, async (req) => {
    const text = await req.text();
    if (state.down) return new Response("down for maintenance", { status: 503 });
    state.batches++;
    for (const line of text.split("\n")) if (line) got.add(JSON.parse(line));
    return new Response(null, { status: 204 });
  });
  return { url: `http://127.0.0.1:${server.addr.port}/ingest`, got, state, server };
}

/** The checks every destination must pass. */
function assertComplete(name: string, got: Dedup, agent: string): void {
  assert.equal(got.size, MESSAGES, `${name}: every message once`);
  const seqs = got.order.map((m) => m.message.seq);
  for (let i = 1; i < seqs.length; i++) {
    assert.ok(seqs[i] > seqs[i - 1], `${name}: in order at ${i} (${seqs[i - 1]} then ${seqs[i]})`);
  }
  const texts = got.order.filter((m) => m.message.text !== undefined).map((m) => m.message.text);
  assert.deepEqual(texts, Array.from({ length: LINES }, (_, i) => String(i + 1)), `${name}: lines`);
  assert.ok(got.order.every((m) => m.agent === agent && m.type === "output"));
  assert.deepEqual(got.order[0].message.meta, { test: "outage" }, `${name}: meta intact`);
  assert.equal(got.order.at(-1)!.message.done, true);
}

/** Has `agent` make {@link MESSAGES} output messages (`seq 1 10000`) with meta test=outage. */
async function makeMessages(server: TestServer, agent: string): Promise<void> {
  const r = await server.client(
    "run",
    `agent:${agent}`,
    "exec.run",
    JSON.stringify({ cmd: "/usr/bin/seq", args: ["1", String(LINES)] }),
    "--meta",
    "test=outage",
    "--timeout",
    "2m",
  );
  assert.equal(r.code, 0, r.stderr);
}

async function outputStatus(
  server: { api: { outputs(): Promise<{ name: string; queued: number; delivered: number }[]> } },
) {
  return Object.fromEntries((await server.api.outputs()).map((o) => [o.name, o]));
}

Deno.test("outputs: RabbitMQ, Mosquitto and HTTP down while 10,001 messages are made lose nothing", async () => {
  await using rabbit = await startRabbitMq();
  await using mosquitto = await startMosquitto({ persistence: true });
  const receiver = startReceiver();
  const dir = await scratchDir("outputs-");

  // Consumers first, with durable subscriptions that outlive a broker restart.
  const amqpGot = new Dedup();
  const conn = await amqp.connect(rabbit.url);
  const channel = await conn.createChannel();
  await channel.assertExchange("jw", "topic", { durable: true });
  const q = await channel.assertQueue("test-outputs", { durable: true });
  await channel.bindQueue(q.queue, "jw", "jw.output.#");
  const keys = new Set<string>();
  await channel.consume(
    q.queue,
    (msg: ConsumeMessage | null) => {
      if (!msg) return;
      const m = JSON.parse(msg.content.toString()) as Message;
      keys.add(msg.fields.routingKey);
      assert.equal(msg.properties.messageId, m.mid);
      amqpGot.add(m);
      channel.ack(msg);
    },
  );
  const mqttGot = new Dedup();
  const topics = new Set<string>();
  const sub = await mqtt.connectAsync(mosquitto.url, {
    clientId: "jw-test-consumer",
    clean: false,
  });
  await sub.subscribeAsync("jw/output/#", { qos: 1 });
  sub.on("message", (topic: string, payload: Uint8Array) => {
    topics.add(topic);
    mqttGot.add(JSON.parse(new TextDecoder().decode(payload)));
  });
  await channel.close();
  await conn.close();

  await using server = await startServer({
    config: {
      outputs: [
        { name: "file", type: "file", path: `${dir}/out.jsonl`, filter: { types: ["output"] } },
        {
          name: "rabbit",
          type: "amqp",
          url: rabbit.url,
          filter: { types: ["output"] },
          queue: { retryMax: "1s" },
        },
        {
          name: "mosquitto",
          type: "mqtt",
          url: mosquitto.url,
          filter: { types: ["output"] },
          queue: { retryMax: "1s" },
        },
        {
          name: "receiver",
          type: "http",
          url: receiver.url,
          filter: { types: ["output"] },
          queue: { retryMax: "1s" },
        },
      ],
    },
  });
  await using _agent = await startAgent(server, "gen-1", { allowRun: ["/usr/bin/seq"] });
  try {
    // Everything down.
    await rabbit.stop();
    await mosquitto.stop();
    sub.end(true);
    receiver.state.down = true;

    await makeMessages(server, "gen-1");
    const queued = await eventually("all queued", async () => {
      const s = await outputStatus(server);
      return ["rabbit", "mosquitto", "receiver"].every((n) => s[n].queued === MESSAGES)
        ? s
        : undefined;
    }, 60_000);
    assert.ok(queued.rabbit.delivered === 0 && queued.receiver.delivered === 0);
    // The file was never down: it takes them as they come.
    await eventually(
      "the file has them",
      async () => (await outputStatus(server)).file.queued === 0 ? true : undefined,
      60_000,
    );

    // Back up; the MQTT consumer resumes its persistent session.
    await rabbit.restart();
    await mosquitto.restart();
    receiver.state.down = false;
    const sub2 = await mqtt.connectAsync(mosquitto.url, {
      clientId: "jw-test-consumer",
      clean: false,
    });
    sub2.on("message", (topic: string, payload: Uint8Array) => {
      topics.add(topic);
      mqttGot.add(JSON.parse(new TextDecoder().decode(payload)));
    });
    await sub2.subscribeAsync("jw/output/#", { qos: 1 });
    const conn2 = await amqp.connect(rabbit.url);
    const ch2 = await conn2.createChannel();
    await ch2.consume(
      "test-outputs",
      (msg: ConsumeMessage | null) => {
        if (!msg) return;
        keys.add(msg.fields.routingKey);
        amqpGot.add(JSON.parse(msg.content.toString()));
        ch2.ack(msg);
      },
    );
    try {
      await eventually("delivered everywhere", async () => {
        const s = await outputStatus(server);
        return ["rabbit", "mosquitto", "receiver"].every((n) => s[n].queued === 0) &&
            amqpGot.size === MESSAGES && mqttGot.size === MESSAGES && receiver.got.size === MESSAGES
          ? true
          : undefined;
      }, 120_000);
      assertComplete("amqp", amqpGot, "gen-1");
      assertComplete("mqtt", mqttGot, "gen-1");
      assertComplete("http", receiver.got, "gen-1");
      const fileGot = new Dedup();
      for (const line of (await Deno.readTextFile(`${dir}/out.jsonl`)).split("\n")) {
        if (line) fileGot.add(JSON.parse(line));
      }
      assertComplete("file", fileGot, "gen-1");
      assert.deepEqual([...keys], ["jw.output.gen-1"]);
      assert.deepEqual([...topics], ["jw/output/gen-1"]);
      const s = await outputStatus(server);
      for (const name of ["rabbit", "mosquitto", "receiver", "file"]) {
        assert.ok(s[name].delivered >= MESSAGES, `${name} delivered ${s[name].delivered}`);
      }
      const table = await server.client("outputs");
      assert.equal(table.code, 0, table.stderr);
      assert.match(table.stdout, /^rabbit\s+amqp\s+idle\s+0 \(0 B\)\s+\d+/m);
    } finally {
      sub2.end(true);
      await ch2.close().catch(() => {});
      await conn2.close().catch(() => {});
    }
  } finally {
    sub.end(true);
    await receiver.server.shutdown();
  }
});

Deno.test("outputs: messages waiting in the queue survive a server restart", async () => {
  const receiver = startReceiver();
  const data = await scratchDir("outputs-restart-");
  const config = {
    outputs: [{
      name: "receiver",
      type: "http",
      url: receiver.url,
      queue: { retryMax: "1s" },
      filter: { types: ["output"] },
    }],
  };
  try {
    const first = await startServer({ config, dataDir: data });
    try {
      await using _agent = await startAgent(first, "gen-2", { allowRun: ["/usr/bin/seq"] });
      await makeMessages(first, "gen-2");
      await eventually(
        "queued",
        async () => (await outputStatus(first)).receiver.queued === MESSAGES ? true : undefined,
        60_000,
      );
    } finally {
      await first.process.stop("SIGTERM");
    }
    receiver.state.down = false;
    await using second = await startServer({ config, dataDir: data });
    await eventually(
      "delivered after the restart",
      async () =>
        receiver.got.size === MESSAGES && (await outputStatus(second)).receiver.queued === 0
          ? true
          : undefined,
      60_000,
    );
    assertComplete("http", receiver.got, "gen-2");
  } finally {
    await receiver.server.shutdown();
  }
});
