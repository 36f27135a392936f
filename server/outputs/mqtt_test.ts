import assert from "node:assert/strict";
import mqtt from "mqtt";
import type { IClientOptions } from "mqtt";
import { FakeClock, realClock } from "../../shared/clock.ts";
import { MqttOutput, type MqttOutputConfig } from "../../shared/config/outputs.ts";
import { isJwError, type JwError } from "../../shared/errors.ts";
import { createLogger } from "../../shared/log.ts";
import { startMosquitto } from "../../tests/helpers/mosquitto.ts";
import type { BackendDeps, OutboxItem } from "./backend.ts";
import { createMqttBackend } from "./mqtt.ts";

const SERVER = "s1";

function item(seq: number, fields: Partial<OutboxItem> = {}): OutboxItem {
  const type = fields.type ?? "output";
  const agent = fields.agent === undefined ? "web-1" : fields.agent;
  const mid = `${SERVER}-${seq}`;
  return {
    seq,
    mid,
    type,
    agent,
    key: "exec.run",
    tags: { role: "web" },
    body: JSON.stringify({ mid, type, agent, text: `line ${seq} ✓` }),
    ...fields,
  };
}

const items = (from: number, n: number, fields: Partial<OutboxItem> = {}) =>
  Array.from({ length: n }, (_, i) => item(from + i, fields));

function config(url: string, fields: Record<string, unknown> = {}): MqttOutputConfig {
  return MqttOutput.parse({ name: "m", type: "mqtt", url, ...fields });
}

/** Deps with a logger that records its lines. */
function deps(clock = realClock): BackendDeps & { lines: string[] } {
  const lines: string[] = [];
  const logger = createLogger("server", {
    level: "debug",
    sink: (l) => lines.push(l),
    now: () => 0,
  });
  return { serverId: SERVER, clock, logger, lines };
}

/** Waits for `promise` with a bound; the bound's timer is always cleared. */
async function within<T>(ms: number, promise: Promise<T>, what: string): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what}: not within ${ms} ms`)), ms);
  });
  try {
    return await Promise.race([promise, timeout]);
  } finally {
    clearTimeout(timer);
  }
}

/** Asserts `promise` rejects with a JwError `code`, and returns the error. */
async function rejectsWith(promise: Promise<unknown>, code: string): Promise<JwError> {
  try {
    await promise;
  } catch (err) {
    assert.ok(isJwError(err), `expected a JwError, got ${err}`);
    assert.equal(err.code, code, err.message);
    return err;
  }
  assert.fail(`expected a ${code} rejection`);
}

interface Received {
  topic: string;
  body: string;
  properties?: Record<string, unknown>;
}

/** An mqtt.js subscriber (QoS 1) recording every message. */
async function subscribe(url: string, filter = "#", options: IClientOptions = {}) {
  const client = await mqtt.connectAsync(url, { reconnectPeriod: 0, ...options });
  client.on("error", () => {}); // the broker stopping is part of some tests
  const messages: Received[] = [];
  let waiter: { done: () => boolean; resolve: () => void } | null = null;
  client.on("message", (topic, payload, packet) => {
    messages.push({
      topic,
      body: payload.toString(),
      properties: packet.properties as Record<string, unknown> | undefined,
    });
    if (waiter?.done()) waiter.resolve();
  });
  await client.subscribeAsync(filter, { qos: 1 });
  return {
    messages,
    /** Resolves once `n` messages arrived. */
    waitFor(n: number, ms = 10_000): Promise<void> {
      return this.waitUntil(() => messages.length >= n, `${n} messages`, ms);
    },
    /** Resolves once `done()` is true (checked on every message). */
    waitUntil(done: () => boolean, what: string, ms = 10_000): Promise<void> {
      if (done()) return Promise.resolve();
      const arrived = new Promise<void>((resolve) => (waiter = { done, resolve }));
      return within(ms, arrived, what).catch((err) => {
        throw new Error(`${err.message} (got ${messages.length} messages)`);
      });
    },
    close: () => client.endAsync(true),
  };
}

/** Reads MQTT packet types off a byte stream (fixed header: type, remaining length). */
class PacketCounter {
  #buf = new Uint8Array(0);

  /** Feeds bytes; returns how many complete packets of `type` they finished. */
  feed(chunk: Uint8Array, type: number): number {
    const joined = new Uint8Array(this.#buf.length + chunk.length);
    joined.set(this.#buf);
    joined.set(chunk, this.#buf.length);
    let at = 0;
    let count = 0;
    for (;;) {
      if (joined.length - at < 2) break;
      let length = 0;
      let i = 1;
      let shift = 0;
      let complete = false;
      while (at + i < joined.length && i <= 4) {
        const b = joined[at + i];
        length += (b & 0x7f) << shift;
        shift += 7;
        i++;
        if ((b & 0x80) === 0) {
          complete = true;
          break;
        }
      }
      if (!complete || at + i + length > joined.length) break;
      if (joined[at] >> 4 === type) count++;
      at += i + length;
    }
    this.#buf = joined.slice(at);
    return count;
  }
}

const PUBLISH = 3;
const PUBACK = 4;

/**
 * A TCP proxy in front of the broker that counts PUBLISH packets (client → broker) and
 * PUBACKs (broker → client) to see the publisher's window, and can cut every connection
 * once it forwarded `cutAfter` publishes.
 */
class CountingProxy implements AsyncDisposable {
  readonly port: number;
  publishes = 0;
  pubacks = 0;
  /** Most publishes forwarded and not yet acknowledged at any time. */
  maxUnacked = 0;
  cutAfter = Infinity;
  readonly #listener: Deno.Listener;
  readonly #target: number;
  readonly #conns = new Set<Deno.Conn>();
  readonly #tasks = new Set<Promise<void>>();
  readonly #accepting: Promise<void>;

  constructor(target: number) {
    this.#target = target;
    this.#listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
    this.port = (this.#listener.addr as Deno.NetAddr).port;
    this.#accepting = this.#accept();
  }

  get url(): string {
    return `mqtt://127.0.0.1:${this.port}`;
  }

  /** Closes every forwarded connection. */
  cut(): void {
    for (const conn of this.#conns) {
      try {
        conn.close();
      } catch {
        // closed
      }
    }
    this.#conns.clear();
  }

  async #accept(): Promise<void> {
    for await (const inbound of this.#listener) {
      const task = this.#forward(inbound);
      this.#tasks.add(task);
      task.then(() => this.#tasks.delete(task));
    }
  }

  async #forward(inbound: Deno.Conn): Promise<void> {
    const outbound = await Deno.connect({ hostname: "127.0.0.1", port: this.#target });
    this.#conns.add(inbound).add(outbound);
    const up = new PacketCounter();
    const down = new PacketCounter();
    const pipe = async (from: Deno.Conn, to: Deno.Conn, toBroker: boolean) => {
      const writer = to.writable.getWriter();
      try {
        for await (const chunk of from.readable) {
          if (toBroker) {
            this.publishes += up.feed(chunk, PUBLISH);
            this.maxUnacked = Math.max(this.maxUnacked, this.publishes - this.pubacks);
          } else {
            // Counted before the client can see them (and answer with more publishes).
            this.pubacks += down.feed(chunk, PUBACK);
          }
          await writer.write(chunk);
          if (toBroker && this.publishes >= this.cutAfter) this.cut();
        }
      } catch {
        // a side went away
      } finally {
        this.#conns.delete(from);
        for (const conn of [from, to]) {
          try {
            conn.close();
          } catch {
            // closed
          }
        }
      }
    };
    await Promise.all([pipe(inbound, outbound, true), pipe(outbound, inbound, false)]);
  }

  async [Symbol.asyncDispose](): Promise<void> {
    this.#listener.close();
    this.cut();
    await this.#accepting.catch(() => {});
    await Promise.all(this.#tasks);
  }
}

Deno.test("mqtt: publishes a batch in order to its rendered topics, body as is", async () => {
  await using broker = await startMosquitto();
  const sub = await subscribe(broker.url);
  const d = deps();
  await using backend = createMqttBackend(config(broker.url), d);
  const batch = [
    item(1),
    item(2, { agent: "a/b+c#d" }),
    item(3, { type: "audit", agent: null }),
    item(4, { type: "log", agent: "$SYS" }),
    item(5, { agent: "web 2" }),
  ];
  await backend.send(batch);
  await sub.waitFor(5);
  assert.deepEqual(sub.messages.map((m) => m.topic), [
    "jw/output/web-1",
    "jw/output/a_b_c_d",
    "jw/audit/_",
    "jw/log/$SYS",
    "jw/output/web 2",
  ]);
  assert.deepEqual(sub.messages.map((m) => m.body), batch.map((i) => i.body));
  assert.deepEqual(sub.messages.map((m) => JSON.parse(m.body).mid), batch.map((i) => i.mid));
  assert.equal(JSON.parse(sub.messages[0].body).text, "line 1 ✓"); // UTF-8
  // The default client id, and one connection for several batches.
  await backend.send([item(6)]);
  await sub.waitFor(6);
  await broker.waitForLog(/New client connected .* as jw-s1-m /);
  assert.equal(broker.log.filter((l) => /as jw-s1-m /.test(l)).length, 1);
  assert.equal(d.lines.filter((l) => l.includes("mqtt connected")).length, 1);
  await sub.close();
});

Deno.test("mqtt: a value's leading $ cannot make a $ topic", async () => {
  await using broker = await startMosquitto();
  const sub = await subscribe(broker.url);
  await using backend = createMqttBackend(config(broker.url, { topic: "{agent}/x" }), deps());
  await backend.send([item(1, { agent: "$SYS" }), item(2, { agent: "plain" })]);
  await sub.waitFor(2);
  assert.deepEqual(sub.messages.map((m) => m.topic), ["_SYS/x", "plain/x"]);
  await sub.close();
});

Deno.test("mqtt: keeps at most `window` publishes unacknowledged, order kept", async () => {
  await using broker = await startMosquitto();
  await using proxy = new CountingProxy(broker.port);
  const sub = await subscribe(broker.url);
  await using backend = createMqttBackend(config(proxy.url, { window: 5 }), deps());
  const batch = items(1, 300);
  await backend.send(batch);
  assert.equal(proxy.publishes, 300);
  assert.equal(proxy.pubacks, 300);
  assert.ok(proxy.maxUnacked <= 5, `up to ${proxy.maxUnacked} unacknowledged`);
  assert.ok(proxy.maxUnacked >= 2, `publishes were not pipelined (${proxy.maxUnacked})`);
  await sub.waitFor(300);
  assert.deepEqual(sub.messages.map((m) => JSON.parse(m.body).mid), batch.map((i) => i.mid));
  await sub.close();
});

Deno.test("mqtt: two overlapping sends share the window and keep call order", async () => {
  await using broker = await startMosquitto();
  await using proxy = new CountingProxy(broker.port);
  const sub = await subscribe(broker.url);
  await using backend = createMqttBackend(config(proxy.url, { window: 5 }), deps());
  assert.equal(backend.window, 2);
  const first = items(1, 200);
  const second = items(201, 200);
  await Promise.all([backend.send(first), backend.send(second)]);
  assert.equal(proxy.pubacks, 400);
  assert.ok(proxy.maxUnacked <= 5, `up to ${proxy.maxUnacked} unacknowledged`);
  await sub.waitFor(400);
  assert.deepEqual(
    sub.messages.map((m) => JSON.parse(m.body).mid),
    [...first, ...second].map((i) => i.mid),
  );
  await sub.close();
});

Deno.test("mqtt: a send queued behind a failed one publishes nothing", async () => {
  await using broker = await startMosquitto();
  const sub = await subscribe(broker.url);
  await using backend = createMqttBackend(config(broker.url), deps());
  // The first batch fails before publishing (a topic too long); the second must not overtake it.
  const tooLong = items(1, 1, { agent: "x".repeat(70_000) });
  const [a, b] = await Promise.allSettled([
    backend.send(tooLong, 0),
    backend.send(items(2, 3), 1),
  ]);
  assert.equal(a.status, "rejected");
  assert.equal(b.status, "rejected");
  assert.match(String((b as PromiseRejectedResult).reason), /batch before it failed/);
  // Started again from the oldest message, a send goes through.
  await backend.send(items(5, 1), 0);
  await sub.waitFor(1);
  assert.deepEqual(sub.messages.map((m) => JSON.parse(m.body).mid), ["s1-5"]);
  await sub.close();
});

Deno.test("mqtt: QoS 0 publishes without acknowledgements", async () => {
  await using broker = await startMosquitto();
  await using proxy = new CountingProxy(broker.port);
  const sub = await subscribe(broker.url);
  await using backend = createMqttBackend(config(proxy.url, { qos: 0, window: 10 }), deps());
  await backend.send(items(1, 50));
  await sub.waitFor(50);
  assert.equal(proxy.pubacks, 0);
  assert.deepEqual(sub.messages.map((m) => JSON.parse(m.body).mid), items(1, 50).map((i) => i.mid));
  await sub.close();
});

Deno.test("mqtt: MQTT 5 carries mid and type as user properties", async () => {
  await using broker = await startMosquitto();
  const sub = await subscribe(broker.url, "#", { protocolVersion: 5 });
  await using backend = createMqttBackend(
    config(broker.url, { protocolVersion: 5, clientId: "custom-id" }),
    deps(),
  );
  await backend.send([item(7), item(8, { type: "alive" })]);
  await sub.waitFor(2);
  const props = sub.messages.map((m) => m.properties);
  assert.deepEqual({ ...props[0]?.userProperties as object }, { mid: "s1-7", type: "output" });
  assert.deepEqual({ ...props[1]?.userProperties as object }, { mid: "s1-8", type: "alive" });
  assert.equal(props[0]?.contentType, "application/json");
  assert.deepEqual(sub.messages.map((m) => m.topic), ["jw/output/web-1", "jw/alive/web-1"]);
  await broker.waitForLog(/New client connected .* as custom-id .*p5/);
  await sub.close();
});

Deno.test("mqtt: MQTT 5 keeps within the broker's Receive Maximum", async () => {
  await using broker = await startMosquitto({ extraConfig: ["max_inflight_messages 7"] });
  await using proxy = new CountingProxy(broker.port);
  const sub = await subscribe(broker.url);
  await using backend = createMqttBackend(
    config(proxy.url, { protocolVersion: 5, window: 200 }),
    deps(),
  );
  const batch = items(1, 100);
  await backend.send(batch);
  assert.ok(proxy.maxUnacked <= 7, `up to ${proxy.maxUnacked} unacknowledged`);
  assert.ok(proxy.maxUnacked >= 2, `publishes were not pipelined (${proxy.maxUnacked})`);
  await sub.waitFor(100);
  assert.deepEqual(sub.messages.map((m) => JSON.parse(m.body).mid), batch.map((i) => i.mid));
  await sub.close();
});

Deno.test("mqtt: MQTT 5 messages refused by the broker's ACL are `rejected` by seq", async () => {
  const dir = await Deno.makeTempDir({ prefix: "jw-mqtt-acl-" });
  try {
    await Deno.writeTextFile(`${dir}/acl`, "topic write jw/output/#\ntopic read #\n");
    await using broker = await startMosquitto({ extraConfig: [`acl_file ${dir}/acl`] });
    const sub = await subscribe(broker.url);
    await using backend = createMqttBackend(config(broker.url, { protocolVersion: 5 }), deps());
    const batch = [item(1), item(2, { type: "audit" }), item(3), item(4, { type: "log" })];
    const err = await rejectsWith(backend.send(batch), "rejected");
    assert.deepEqual(err.detail?.seqs, [2, 4]);
    assert.match(err.message, /Not authorized/);
    // The allowed ones arrived; the connection is still good.
    await backend.send([item(5)]);
    await sub.waitFor(3);
    assert.deepEqual(sub.messages.map((m) => JSON.parse(m.body).mid), ["s1-1", "s1-3", "s1-5"]);
    await sub.close();
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("mqtt: a topic longer than MQTT allows is `rejected` before anything is sent", async () => {
  await using broker = await startMosquitto();
  await using proxy = new CountingProxy(broker.port);
  await using backend = createMqttBackend(config(proxy.url, { topic: "jw/{tag.big}" }), deps());
  const big = item(2, { tags: { big: "x".repeat(70_000) } });
  const err = await rejectsWith(backend.send([item(1), big, item(3)]), "rejected");
  assert.deepEqual(err.detail?.seqs, [2]);
  assert.equal(proxy.publishes, 0);
});

Deno.test("mqtt: bad topic templates are config errors at construction", async (t) => {
  const cases: [string, RegExp][] = [
    ["jw/+/{agent}", /"\+"/],
    ["jw/{type}/#", /"#"/],
    ["$SYS/{agent}", /starts with \$/],
    ["jw/{typo}", /\{typo\}/],
  ];
  for (const [topic, message] of cases) {
    await t.step(topic, () => {
      assert.throws(
        () => createMqttBackend(config("mqtt://127.0.0.1:1", { topic }), deps()),
        (e) => isJwError(e, "config") && message.test((e as Error).message),
      );
    });
  }
});

Deno.test("mqtt: broker stopped → `unavailable` at once; restarted → the next send delivers", async () => {
  await using broker = await startMosquitto();
  const d = deps();
  await using backend = createMqttBackend(config(broker.url, { timeout: "5s" }), d);
  let sub = await subscribe(broker.url);
  await backend.send([item(1)]);
  await sub.waitFor(1);
  await sub.close();

  await broker.stop();
  for (const seq of [2, 3]) {
    const started = Date.now();
    const err = await rejectsWith(backend.send([item(seq)]), "unavailable");
    assert.ok(Date.now() - started < 2_000, `took ${Date.now() - started} ms`);
    assert.match(err.message, /127\.0\.0\.1/);
  }
  assert.ok(d.lines.some((l) => / WARN .*mqtt connection lost/.test(l)), d.lines.join("\n"));

  await broker.restart();
  sub = await subscribe(broker.url);
  await backend.send(items(2, 3));
  await sub.waitFor(3);
  assert.deepEqual(sub.messages.map((m) => JSON.parse(m.body).mid), ["s1-2", "s1-3", "s1-4"]);
  assert.equal(d.lines.filter((l) => / INFO .*mqtt connected/.test(l)).length, 2);
  await sub.close();
});

Deno.test("mqtt: the broker stopping mid-batch rejects `unavailable`, no hang", async () => {
  await using broker = await startMosquitto();
  const sub = await subscribe(broker.url);
  await using backend = createMqttBackend(config(broker.url, { window: 1 }), deps());
  const failed = rejectsWith(backend.send(items(1, 20_000)), "unavailable");
  await sub.waitFor(1);
  await broker.stop();
  await within(5_000, failed, "the rejection");
  assert.ok(sub.messages.length < 20_000);
  await sub.close();
});

Deno.test("mqtt: a connection cut mid-batch → `unavailable`; the next send resends it all", async () => {
  await using broker = await startMosquitto();
  await using proxy = new CountingProxy(broker.port);
  const sub = await subscribe(broker.url);
  await using backend = createMqttBackend(config(proxy.url, { window: 10 }), deps());
  proxy.cutAfter = 40;
  const batch = items(1, 100);
  await within(5_000, rejectsWith(backend.send(batch), "unavailable"), "the rejection");
  assert.ok(proxy.publishes < 100);
  proxy.cutAfter = Infinity;
  await backend.send(batch);
  const mids = () => sub.messages.map((m) => JSON.parse(m.body).mid);
  await sub.waitUntil(() => mids().includes("s1-100"), "the last message");
  // At least once: the whole batch, in order, after what got through before the cut.
  assert.deepEqual(mids().slice(-100), batch.map((i) => i.mid));
  await sub.close();
});

Deno.test("mqtt: a hung broker → `unavailable` after the timeout; resumed → delivers", async () => {
  await using broker = await startMosquitto();
  const clock = new FakeClock();
  const d = deps(clock);
  await using backend = createMqttBackend(config(broker.url, { timeout: "3s" }), d);
  await backend.send([item(1)]);
  broker.pause();
  let settled = false;
  const failed = rejectsWith(backend.send([item(2)]).finally(() => settled = true), "unavailable");
  await clock.advance(2_900);
  assert.equal(settled, false);
  await clock.advance(100);
  const err = await failed;
  assert.match(err.message, /did not answer/);
  broker.resume();
  const sub = await subscribe(broker.url);
  await backend.send([item(3)]);
  await sub.waitFor(1);
  assert.equal(JSON.parse(sub.messages[0].body).mid, "s1-3");
  await sub.close();
});

Deno.test("mqtt: a listener that never answers CONNECT → `unavailable` after the timeout", async () => {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const held: Deno.Conn[] = [];
  const accepting = (async () => {
    for await (const conn of listener) held.push(conn);
  })();
  const { port } = listener.addr as Deno.NetAddr;
  const clock = new FakeClock();
  const backend = createMqttBackend(
    config(`mqtt://127.0.0.1:${port}`, { timeout: "2s" }),
    deps(clock),
  );
  try {
    const failed = rejectsWith(backend.send([item(1)]), "unavailable");
    await clock.advance(2_000);
    const err = await failed;
    assert.match(err.message, /did not answer/);
  } finally {
    await backend.close();
    listener.close();
    await accepting;
    for (const conn of held) conn.close();
  }
});

Deno.test("mqtt: passwords stay out of errors and logs", async () => {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const { port } = listener.addr as Deno.NetAddr;
  listener.close(); // nothing listens there now
  const d = deps();
  await using backend = createMqttBackend(
    config(`mqtt://user:hunter2@127.0.0.1:${port}`, { password: "swordfish" }),
    d,
  );
  const err = await rejectsWith(backend.send([item(1)]), "unavailable");
  assert.match(err.message, /ECONNREFUSED|refused/i);
  assert.match(err.message, /user:\*\*\*@127\.0\.0\.1/);
  const text = `${err.message}\n${d.lines.join("\n")}`;
  assert.ok(!text.includes("hunter2") && !text.includes("swordfish"), text);
  assert.ok(d.lines.some((l) => / WARN .*mqtt cannot connect/.test(l)));
});

Deno.test("mqtt: close() disconnects cleanly, is idempotent, and refuses later sends", async () => {
  await using broker = await startMosquitto();
  const backend = createMqttBackend(config(broker.url), deps());
  await backend.send([item(1)]);
  await backend.close();
  await backend.close();
  await broker.waitForLog(/Client jw-s1-m disconnected\./);
  await rejectsWith(backend.send([item(2)]), "closed");
});

Deno.test("mqtt: close() during a batch rejects it `closed`", async () => {
  await using broker = await startMosquitto();
  const clock = new FakeClock();
  const backend = createMqttBackend(config(broker.url), deps(clock));
  await backend.send([item(1)]);
  broker.pause();
  const failed = rejectsWith(backend.send(items(2, 10)), "closed");
  await clock.advance(0);
  assert.equal(clock.pending, 1); // the batch waits for its acknowledgements
  await backend.close();
  await failed;
  broker.resume();
});
