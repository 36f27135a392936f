import assert from "node:assert/strict";
import { Buffer } from "node:buffer";
import { connect } from "amqplib";
import type { ConsumeMessage } from "amqplib";
import { realClock } from "../../shared/clock.ts";
import { AmqpOutput } from "../../shared/config/outputs.ts";
import { isJwError, JwError } from "../../shared/errors.ts";
import { createLogger, silentLogger } from "../../shared/log.ts";
import { startRabbitMq } from "../../tests/helpers/rabbitmq.ts";
import { amqpRoutingKey, createAmqpBackend } from "./amqp.ts";
import type { BackendDeps, OutboxItem } from "./backend.ts";

/** The broker's `max_message_size` in these tests (a larger body is refused). */
const MAX_MESSAGE_SIZE = 65_536;

const deps: BackendDeps = { serverId: "s1", clock: realClock, logger: silentLogger };

function amqpConfig(url: string, extra: Record<string, unknown> = {}) {
  return AmqpOutput.parse({ name: "bus", type: "amqp", url, ...extra });
}

let nextSeq = 1;

/** A queued message like the pipeline hands over. */
function item(fields: Partial<OutboxItem> = {}): OutboxItem {
  const seq = nextSeq++;
  const mid = `s1-${seq}`;
  const base = { seq, mid, type: "output" as const, agent: "a1", key: "exec.run", tags: {} };
  const merged = { ...base, ...fields };
  return {
    ...merged,
    body: fields.body ?? JSON.stringify({ mid, type: merged.type, agent: merged.agent, seq }),
  };
}

function items(n: number, fields: Partial<OutboxItem> = {}): OutboxItem[] {
  return Array.from({ length: n }, () => item(fields));
}

/** Rejects with the JwError `send` failed with, and how long it took. */
async function sendFails(
  send: Promise<void>,
): Promise<{ err: JwError; ms: number }> {
  const start = performance.now();
  try {
    await send;
  } catch (err) {
    assert.ok(err instanceof JwError, `not a JwError: ${err}`);
    return { err, ms: performance.now() - start };
  }
  throw new Error("send resolved; expected a rejection");
}

/**
 * Takes `count` messages from `queue` (acknowledging them), failing after `timeoutMs`.
 * Resolves with exactly `count` messages, in queue order.
 */
async function take(
  url: string,
  queue: string,
  count: number,
  timeoutMs = 10_000,
): Promise<ConsumeMessage[]> {
  const conn = await connect(url);
  try {
    const channel = await conn.createChannel();
    await channel.prefetch(Math.min(count, 1000));
    const got: ConsumeMessage[] = [];
    let timer: ReturnType<typeof setTimeout> | undefined;
    await new Promise<void>((resolve, reject) => {
      timer = setTimeout(
        () => reject(new Error(`${queue}: ${got.length} of ${count} messages in ${timeoutMs} ms`)),
        timeoutMs,
      );
      channel.consume(queue, (msg) => {
        if (!msg || got.length >= count) return;
        got.push(msg);
        channel.ack(msg);
        if (got.length === count) resolve();
      }).catch(reject);
    }).finally(() => clearTimeout(timer));
    // The channel's close-ok comes after the broker took its acks.
    await channel.close();
    return got;
  } finally {
    await conn.close();
  }
}

/** How many messages wait in `queue`. */
async function depth(url: string, queue: string): Promise<number> {
  const conn = await connect(url);
  try {
    const channel = await conn.createChannel();
    return (await channel.checkQueue(queue)).messageCount;
  } finally {
    await conn.close();
  }
}

/** Declares the exchange as the backend does and binds durable queues to it. */
async function bindQueues(
  url: string,
  bindings: Record<string, string>,
  exchange = "jw",
): Promise<void> {
  const conn = await connect(url);
  try {
    const channel = await conn.createChannel();
    if (!exchange.startsWith("amq.")) {
      await channel.assertExchange(exchange, "topic", { durable: true });
    }
    for (const [queue, pattern] of Object.entries(bindings)) {
      await channel.assertQueue(queue, { durable: true });
      await channel.bindQueue(queue, exchange, pattern);
    }
  } finally {
    await conn.close();
  }
}

/**
 * Asserts that `want` appear in `msgs` in this order (a resend after a failure may have put
 * unconfirmed copies of other messages in between: delivery is at least once).
 */
function assertInOrder(msgs: ConsumeMessage[], want: OutboxItem[]): void {
  const mids = msgs.map((m) => m.properties.messageId);
  let at = -1;
  for (const i of want) {
    const found = mids.indexOf(i.mid, at + 1);
    assert.ok(found > at, `${i.mid} missing or out of order in ${mids.join(" ")}`);
    at = found;
  }
}

function bodies(msgs: ConsumeMessage[]): string[] {
  return msgs.map((m) => m.content.toString("utf8"));
}

Deno.test("amqpRoutingKey keeps the template's dots and makes values safe", async (t) => {
  const cases: { name: string; template: string; fields: Partial<OutboxItem>; want: string }[] = [
    { name: "plain values", template: "jw.{type}.{agent}", fields: {}, want: "jw.output.a1" },
    {
      name: "dots, wildcards and spaces in values become _",
      template: "jw.{type}.{agent}.{tag.zone}",
      fields: { agent: "web.1#*", tags: { zone: "eu west\t1" } },
      want: "jw.output.web_1__.eu_west_1",
    },
    {
      name: "missing values become _",
      template: "{server}.{key}.{tag.none}",
      fields: { key: null },
      want: "s1._._",
    },
    {
      name: "non-ASCII kept",
      template: "jw.{agent}",
      fields: { agent: "küche-1" },
      want: "jw.küche-1",
    },
  ];
  for (const c of cases) {
    await t.step(c.name, () => {
      assert.equal(amqpRoutingKey(c.template, item(c.fields), "s1"), c.want);
    });
  }
  await t.step("cut to 255 bytes, never inside a character", () => {
    const key = amqpRoutingKey("jw.{agent}", item({ agent: "é".repeat(200) }), "s1");
    assert.equal(Buffer.byteLength(key), 255);
    assert.ok(key.endsWith("é"));
    assert.equal(key, "jw." + "é".repeat(126));
  });
});

Deno.test("createAmqpBackend refuses an unknown template field", () => {
  assert.throws(
    () => createAmqpBackend(amqpConfig("amqp://127.0.0.1:5672", { routingKey: "jw.{nope}" }), deps),
    (err: unknown) => isJwError(err, "config") && /\{nope\}/.test(err.message),
  );
});

Deno.test("send rejects unavailable at once when nothing listens, without the password", async () => {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const { port } = listener.addr as Deno.NetAddr;
  listener.close();
  const lines: string[] = [];
  const logger = createLogger("test", { sink: (line) => lines.push(line) });
  const url = `amqp://jw:s3cret-pw@127.0.0.1:${port}/`;
  await using backend = createAmqpBackend(amqpConfig(url), { ...deps, logger });
  const { err, ms } = await sendFails(backend.send(items(2)));
  assert.equal(err.code, "unavailable");
  assert.ok(ms < 2_000, `took ${ms} ms`);
  assert.match(err.message, /ECONNREFUSED/);
  assert.doesNotMatch(err.message, /s3cret/);
  // The next send tries again (and logs the same failure at debug only).
  assert.equal((await sendFails(backend.send(items(1)))).err.code, "unavailable");
  assert.equal(lines.filter((l) => l.includes("cannot connect")).length, 1);
  assert.ok(lines.every((l) => !l.includes("s3cret")), lines.join("\n"));
});

Deno.test("send rejects unavailable after the timeout when the broker never answers", async () => {
  // Accepts TCP connections and never says a word.
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const { port } = listener.addr as Deno.NetAddr;
  const accepted: Deno.Conn[] = [];
  const accepting = (async () => {
    for await (const conn of listener) accepted.push(conn);
  })();
  try {
    const backend = createAmqpBackend(
      amqpConfig(`amqp://127.0.0.1:${port}`, { timeout: "400ms" }),
      deps,
    );
    const { err, ms } = await sendFails(backend.send(items(1)));
    assert.equal(err.code, "unavailable");
    assert.match(err.message, /timed out after 400 ms/);
    assert.ok(ms >= 390 && ms < 3_000, `took ${ms} ms`);
    await backend.close();
    assert.equal(accepted.length, 1);
  } finally {
    listener.close();
    await accepting.catch(() => {});
    for (const conn of accepted) conn.close();
  }
});

Deno.test({
  name: "amqp backend against a real RabbitMQ",
  // Generous: the broker starts twice and restarts once.
  async fn(t) {
    await using rabbit = await startRabbitMq({ config: `max_message_size = ${MAX_MESSAGE_SIZE}` });
    const lines: string[] = [];
    const logger = createLogger("test", { level: "debug", sink: (line) => lines.push(line) });
    await bindQueues(rabbit.url, { all: "#", logs: "jw.log.*", web1: "jw.*.web_1" });
    await using backend = createAmqpBackend(
      amqpConfig(rabbit.url, { timeout: "1500ms" }),
      { ...deps, logger },
    );

    await t.step("a batch arrives in order with routing keys, body and properties", async () => {
      const batch = [
        item({ type: "output", agent: "web.1" }),
        item({ type: "log", agent: "db-2" }),
        item({ type: "alive", agent: "web.1" }),
        item({ type: "log", agent: "web.1", body: JSON.stringify({ text: "grüße ✓" }) }),
        item({ type: "audit", agent: null }),
      ];
      const before = Math.floor(Date.now() / 1000);
      await backend.send(batch);
      const all = await take(rabbit.url, "all", batch.length);
      assert.deepEqual(bodies(all), batch.map((i) => i.body));
      assert.deepEqual(all.map((m) => m.fields.routingKey), [
        "jw.output.web_1",
        "jw.log.db-2",
        "jw.alive.web_1",
        "jw.log.web_1",
        "jw.audit._",
      ]);
      assert.deepEqual(all.map((m) => m.properties.messageId), batch.map((i) => i.mid));
      assert.deepEqual(all.map((m) => m.properties.type), batch.map((i) => i.type));
      for (const m of all) {
        assert.equal(m.fields.exchange, "jw");
        assert.equal(m.properties.contentType, "application/json");
        assert.equal(m.properties.deliveryMode, 2);
        assert.equal(m.properties.appId, "jw");
        assert.ok(m.properties.timestamp >= before && m.properties.timestamp <= before + 60);
      }
      // Topic bindings see the agent as one word.
      const logs = await take(rabbit.url, "logs", 2);
      assert.deepEqual(logs.map((m) => m.properties.messageId), [batch[1].mid, batch[3].mid]);
      const web1 = await take(rabbit.url, "web1", 3);
      assert.deepEqual(web1.map((m) => m.properties.messageId), [0, 2, 3].map((i) => batch[i].mid));
    });

    await t.step("a batch past the socket buffer waits for drain and keeps order", async () => {
      // amqplib buffers 1024 frames per channel: 3000 publishes fill it.
      const batch = items(3000, { agent: "bulk" });
      await backend.send(batch);
      assert.ok(lines.some((l) => l.includes("waited for the socket to drain")), lines.join("\n"));
      const all = await take(rabbit.url, "all", batch.length);
      assert.deepEqual(all.map((m) => m.properties.messageId), batch.map((i) => i.mid));
    });

    await t.step(
      "two overlapping sends publish in call order, sharing the connection",
      async () => {
        assert.equal(backend.window, 2);
        const first = items(1500, { agent: "overlap" });
        const second = items(1500, { agent: "overlap" });
        await Promise.all([backend.send(first), backend.send(second)]);
        const all = await take(rabbit.url, "all", 3000);
        assert.deepEqual(
          all.map((m) => m.properties.messageId),
          [...first, ...second].map((i) => i.mid),
        );
      },
    );

    await t.step("a message over max_message_size is rejected by seq, the rest go", async () => {
      const big = item({ body: JSON.stringify({ pad: "x".repeat(MAX_MESSAGE_SIZE) }) });
      const batch = [item(), big, item()];
      const { err } = await sendFails(backend.send(batch));
      assert.equal(err.code, "rejected");
      assert.deepEqual(err.detail, { seqs: [big.seq] });
      // The pipeline dead-letters the big one and retries the others.
      const retry = [batch[0], batch[2]];
      await backend.send(retry);
      const all = await take(rabbit.url, "all", await depth(rabbit.url, "all"));
      // The first one may have been confirmed before the channel closed: at least once.
      const mids = all.map((m) => m.properties.messageId);
      assert.deepEqual(mids.slice(-2), retry.map((i) => i.mid));
      assert.ok(!mids.includes(big.mid));
    });

    await t.step("exchange settings: a type clash, amq.topic, the default exchange", async () => {
      // "jw" is a topic exchange already: declaring it as fanout fails, and keeps failing.
      await using clash = createAmqpBackend(
        amqpConfig(rabbit.url, { exchange: "jw", exchangeType: "fanout" }),
        deps,
      );
      const { err } = await sendFails(clash.send(items(1)));
      assert.equal(err.code, "unavailable");
      assert.match(err.message, /inequivalent arg 'type'/);
      assert.equal((await sendFails(clash.send(items(1)))).err.code, "unavailable");
      // amq.* exchanges are only checked (declaring them is refused).
      await bindQueues(rabbit.url, { amq: "jw.#" }, "amq.topic");
      await using amq = createAmqpBackend(amqpConfig(rabbit.url, { exchange: "amq.topic" }), deps);
      const viaAmq = items(2);
      await amq.send(viaAmq);
      const fromAmq = await take(rabbit.url, "amq", 2);
      assert.deepEqual(fromAmq.map((m) => m.properties.messageId), viaAmq.map((i) => i.mid));
      // The default exchange routes by queue name.
      await using direct = createAmqpBackend(
        amqpConfig(rabbit.url, { exchange: "", routingKey: "amq" }),
        deps,
      );
      const one = item();
      await direct.send([one]);
      assert.deepEqual((await take(rabbit.url, "amq", 1)).map((m) => m.properties.messageId), [
        one.mid,
      ]);
    });

    await t.step("broker stopped: unavailable at once; restarted: the next send goes", async () => {
      const confirmed = items(20);
      await backend.send(confirmed);
      await rabbit.stop();
      const pending = items(20);
      const { err, ms } = await sendFails(backend.send(pending));
      assert.equal(err.code, "unavailable");
      assert.ok(ms < 1_500, `took ${ms} ms`);
      assert.ok(lines.some((l) => /WARN .*amqp output disconnected/.test(l)), lines.join("\n"));
      await rabbit.restart();
      await backend.send(pending);
      // The confirmed batch survived the restart (persistent, durable queue).
      const all = await take(rabbit.url, "all", 40);
      assert.deepEqual(
        all.map((m) => m.properties.messageId),
        [...confirmed, ...pending].map((i) => i.mid),
      );
    });

    await t.step("broker frozen: unavailable after the timeout, then it recovers", async () => {
      await backend.send(items(1));
      rabbit.pause();
      let resumed = false;
      try {
        const { err, ms } = await sendFails(backend.send(items(10)));
        assert.equal(err.code, "unavailable");
        assert.match(err.message, /no confirm from the broker for 1500 ms/);
        assert.ok(ms >= 1_400 && ms < 5_000, `took ${ms} ms`);
        rabbit.resume();
        resumed = true;
        const later = items(5);
        await backend.send(later);
        assertInOrder(await take(rabbit.url, "all", await depth(rabbit.url, "all")), later);
      } finally {
        if (!resumed) rabbit.resume();
      }
    });

    await t.step("close() fails the batch in flight with closed at once", async () => {
      const other = createAmqpBackend(amqpConfig(rabbit.url, { timeout: "1s" }), deps);
      await other.send(items(1));
      rabbit.pause();
      try {
        const sending = sendFails(other.send(items(10)));
        const closing = other.close();
        const { err, ms } = await sending;
        assert.equal(err.code, "closed");
        assert.ok(ms < 500, `took ${ms} ms`);
        // The broker does not answer the goodbye: close() gives up on it after the timeout.
        await closing;
      } finally {
        rabbit.resume();
      }
    });

    await t.step("close() is clean and idempotent; send after it rejects closed", async () => {
      await backend.send(items(1));
      await backend.close();
      await backend.close();
      assert.equal((await sendFails(backend.send(items(1)))).err.code, "closed");
      assert.ok(lines.some((l) => l.includes("amqp output closed")));
    });

    await t.step(
      "broker killed while confirms are pending: unavailable before the timeout",
      async () => {
        await using slow = createAmqpBackend(amqpConfig(rabbit.url, { timeout: "8s" }), deps);
        await slow.send(items(1));
        rabbit.pause();
        const sending = sendFails(slow.send(items(50)));
        await rabbit.kill();
        const { err, ms } = await sending;
        assert.equal(err.code, "unavailable");
        assert.ok(ms < 5_000, `took ${ms} ms`);
        assert.doesNotMatch(err.message, /no confirm/);
        // Still down: the next send fails fast too (coming back is the graceful stop's case).
        assert.equal((await sendFails(slow.send(items(1)))).err.code, "unavailable");
      },
    );
  },
});
