import assert from "node:assert/strict";
import dgram from "node:dgram";
import { type Clock, FakeClock, realClock } from "../../shared/clock.ts";
import { isJwError } from "../../shared/errors.ts";
import { silentLogger } from "../../shared/log.ts";
import {
  createNetTransport,
  type NetTransport,
  type NetTransportOptions,
} from "./net_transport.ts";
import { parseHostPort } from "./seeds.ts";
import type { Packet, Stream } from "./transport.ts";

/** Values pushed by callbacks, taken in order; a take waits at most `timeoutMs` (real time). */
class Inbox<T> {
  readonly #values: T[] = [];
  readonly #waiters: ((v: T) => void)[] = [];

  push = (value: T): void => {
    const waiter = this.#waiters.shift();
    if (waiter) waiter(value);
    else this.#values.push(value);
  };

  get size(): number {
    return this.#values.length;
  }

  next(timeoutMs = 5000): Promise<T> {
    if (this.#values.length > 0) return Promise.resolve(this.#values.shift()!);
    return new Promise((resolve, reject) => {
      const waiter = (v: T) => {
        clearTimeout(timer);
        resolve(v);
      };
      const timer = setTimeout(() => {
        this.#waiters.splice(this.#waiters.indexOf(waiter), 1);
        reject(new Error(`nothing arrived within ${timeoutMs} ms`));
      }, timeoutMs);
      this.#waiters.push(waiter);
    });
  }
}

function open(
  options: Partial<NetTransportOptions> & { clock?: Clock } = {},
): Promise<NetTransport> {
  return createNetTransport({
    bind: "127.0.0.1:0",
    clock: realClock,
    logger: silentLogger,
    ...options,
  });
}

/** Lets the event loop run until `condition` holds; fails after `maxTurns` turns. */
async function until(condition: () => boolean, maxTurns = 1000): Promise<void> {
  for (let turn = 0; turn < maxTurns; turn++) {
    if (condition()) return;
    await new Promise((resolve) => setTimeout(resolve, 0));
  }
  assert.fail(`condition not met after ${maxTurns} event loop turns`);
}

function portOf(address: string): number {
  return parseHostPort(address).port;
}

function bytes(n: number, seed = 0): Uint8Array {
  return Uint8Array.from({ length: n }, (_, i) => (i * 31 + seed) & 0xff);
}

/** Echoes every message of every inbound stream until the peer closes it. */
function echo(transport: NetTransport): Promise<void>[] {
  const done: Promise<void>[] = [];
  transport.onStream((stream) => {
    done.push((async () => {
      try {
        for (;;) {
          const message = await stream.receive(5000);
          if (message === null) break;
          await stream.send(message);
        }
      } finally {
        stream.close();
      }
    })());
  });
  return done;
}

/** Reads a raw connection until the peer closes it; returns the bytes read. */
async function readToEnd(conn: Deno.Conn): Promise<number> {
  const buf = new Uint8Array(1024);
  let total = 0;
  for (;;) {
    const n = await conn.read(buf);
    if (n === null) return total;
    total += n;
  }
}

async function roundTrip(from: NetTransport, to: NetTransport, message: Uint8Array): Promise<void> {
  const stream = await from.openStream(to.address, 5000);
  try {
    await stream.send(message);
    assert.deepEqual(await stream.receive(5000), message);
  } finally {
    stream.close();
  }
}

Deno.test("createNetTransport() binds UDP and TCP on one free port", async () => {
  await using t = await open({ advertise: "10.1.2.3:7946" });
  const port = portOf(t.boundAddress);
  assert.notEqual(port, 0);
  assert.equal(t.boundAddress, `127.0.0.1:${port}`);
  assert.equal(t.address, "10.1.2.3:7946");
  // Both protocols hold the port: binding either again fails.
  assert.throws(() => Deno.listen({ hostname: "127.0.0.1", port }), Deno.errors.AddrInUse);
  await assert.rejects(
    createNetTransport({ bind: t.boundAddress, clock: realClock, logger: silentLogger }),
    (err) => isJwError(err, "config") && /cannot bind gossip UDP/.test(err.message),
  );
});

Deno.test("createNetTransport() refuses bad options and a taken TCP port", async (t) => {
  const cases: [string, Partial<NetTransportOptions>, RegExp][] = [
    ["host name bind", { bind: "localhost:0" }, /not an IP/],
    ["bind without port", { bind: "127.0.0.1" }, /bad bind address/],
    ["advertise port 0", { advertise: "10.0.0.1:0" }, /bad advertise address/],
    ["zero packet limit", { packetLimit: 0 }, /bad packet limit/],
    ["fractional idle timeout", { streamIdleTimeoutMs: 1.5 }, /bad stream idle timeout/],
  ];
  for (const [name, options, message] of cases) {
    await t.step(name, async () => {
      await assert.rejects(
        open(options),
        (err) => isJwError(err, "config") && message.test(err.message),
      );
    });
  }
  await t.step("TCP port taken", async () => {
    using listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
    const bind = `127.0.0.1:${listener.addr.port}`;
    await assert.rejects(
      open({ bind }),
      (err) => isJwError(err, "config") && /cannot bind gossip TCP/.test(err.message),
    );
  });
});

Deno.test("NetTransport packets round trip with the sender's address", async (t) => {
  for (const host of ["127.0.0.1", "[::1]"]) {
    await t.step(host, async () => {
      const clock = new FakeClock();
      await using a = await open({ bind: `${host}:0`, clock });
      await using b = await open({ bind: `${host}:0`, clock });
      const atA = new Inbox<Packet>();
      const atB = new Inbox<Packet>();
      a.onPacket(atA.push);
      b.onPacket(atB.push);

      a.sendPacket(b.address, bytes(1400));
      const got = await atB.next();
      assert.equal(got.from, a.address);
      assert.deepEqual(got.data, bytes(1400));
      assert.equal(got.at, clock.now());

      b.sendPacket(got.from, Uint8Array.of(1, 2, 3));
      assert.deepEqual((await atA.next()).data, Uint8Array.of(1, 2, 3));

      const sa = a.stats();
      assert.equal(sa.packetsSent, 1);
      assert.equal(sa.packetBytesSent, 1400);
      assert.equal(sa.packetsReceived, 1);
      assert.equal(sa.packetBytesReceived, 3);
      assert.equal(b.stats().packetsReceived, 1);
    });
  }
});

Deno.test("NetTransport drops and counts oversized and misaddressed packets", async () => {
  await using a = await open({ packetLimit: 100 });
  await using b = await open({ packetLimit: 100 });
  const atB = new Inbox<Packet>();
  b.onPacket(atB.push);

  // Outbound: over the limit, or to something that is not an address. Never throws.
  a.sendPacket(b.address, bytes(101));
  a.sendPacket("not an address", bytes(10));
  a.sendPacket("[::1:7946", bytes(10));
  // Inbound: a raw socket sends a big packet, then a small one.
  const raw = dgram.createSocket("udp4");
  try {
    const port = portOf(b.address);
    await new Promise<void>((resolve) => raw.send(bytes(2000), port, "127.0.0.1", () => resolve()));
    await new Promise<void>((resolve) => raw.send(bytes(100), port, "127.0.0.1", () => resolve()));
  } finally {
    await new Promise<void>((resolve) => raw.close(() => resolve()));
  }
  const got = await atB.next();
  assert.deepEqual(got.data, bytes(100));
  assert.equal(atB.size, 0);

  const drops = a.stats().packetsDropped;
  assert.equal(drops.oversizedOutbound, 1);
  assert.equal(drops.badAddress, 2);
  assert.equal(a.stats().packetsSent, 0);
  assert.equal(b.stats().packetsDropped.oversizedInbound, 1);
  assert.equal(b.stats().packetsReceived, 1);
});

Deno.test("NetTransport streams carry messages in order, including 1 MiB", async () => {
  await using a = await open();
  await using b = await open();
  const echoes = echo(b);
  const messages = [bytes(10, 1), new Uint8Array(0), bytes(1024 * 1024, 2), bytes(5000, 3)];

  const stream = await a.openStream(b.address, 5000);
  assert.equal(stream.remote, b.address);
  // Sent without waiting in between: frames must not interleave.
  await Promise.all(messages.map((m) => stream.send(m)));
  for (const m of messages) assert.deepEqual(await stream.receive(5000), m);
  stream.close();
  await Promise.all(echoes);

  const total = messages.reduce((n, m) => n + m.byteLength, 0);
  const sa = a.stats();
  const sb = b.stats();
  assert.equal(sa.streamsOpened, 1);
  assert.equal(sb.streamsAccepted, 1);
  assert.equal(sa.streamMessagesSent, 4);
  assert.equal(sa.streamBytesSent, total);
  assert.equal(sb.streamMessagesReceived, 4);
  assert.equal(sa.streamMessagesReceived, 4);
  assert.equal(sa.streamBytesReceived, total);
});

Deno.test("NetTransport stream end: null to the reader, closed to the sender", async () => {
  await using a = await open();
  await using b = await open();
  const inbound = new Inbox<Stream>();
  b.onStream(inbound.push);
  const stream = await a.openStream(b.address, 5000);
  const peer = await inbound.next();
  await stream.send(Uint8Array.of(7));
  stream.close();
  stream.close(); // idempotent
  assert.deepEqual(await peer.receive(5000), Uint8Array.of(7));
  assert.equal(await peer.receive(5000), null);
  assert.equal(await peer.receive(5000), null);
  await assert.rejects(stream.send(Uint8Array.of(1)), (err) => isJwError(err, "closed"));
  await assert.rejects(stream.receive(5000), (err) => isJwError(err, "closed"));
});

Deno.test("NetTransport refuses to send a stream message over the limit", async () => {
  await using a = await open({ streamMessageLimit: 1000 });
  await using b = await open({ streamMessageLimit: 1000 });
  const echoes = echo(b);
  const stream = await a.openStream(b.address, 5000);
  await assert.rejects(
    stream.send(bytes(1001)),
    (err) => isJwError(err, "frame_too_large") && err.detail?.limit === 1000,
  );
  // The stream stays usable.
  await stream.send(bytes(1000));
  assert.deepEqual(await stream.receive(5000), bytes(1000));
  stream.close();
  await Promise.all(echoes);
});

Deno.test("NetTransport closes a stream whose frame header lies about its length", async () => {
  await using b = await open();
  const errors = new Inbox<unknown>();
  b.onStream((stream) => {
    stream.receive(5000).then(() => errors.push("no error"), errors.push);
  });
  {
    using conn = await Deno.connect({ hostname: "127.0.0.1", port: portOf(b.address) });
    await conn.write(Uint8Array.of(0x80, 0, 0, 0, 1, 2, 3)); // claims 2 GiB
    const err = await errors.next();
    assert.ok(isJwError(err, "frame_too_large"), String(err));
    assert.equal(await readToEnd(conn), 0); // the transport hung up
  }
  assert.equal(b.stats().streamFailures.frameTooLarge, 1);

  // The transport still serves other streams.
  await using a = await open();
  const echoes = echo(b);
  await roundTrip(a, b, bytes(100));
  await Promise.all(echoes);
});

Deno.test("NetTransport reports a truncated frame as invalid_message", async () => {
  await using b = await open();
  const results = new Inbox<unknown>();
  b.onStream((stream) => {
    (async () => {
      results.push(await stream.receive(5000));
      results.push(await stream.receive(5000).catch((err) => err));
      results.push(await stream.receive(5000).catch((err) => err));
    })();
  });
  using conn = await Deno.connect({ hostname: "127.0.0.1", port: portOf(b.address) });
  // One whole message, then a header announcing 10 bytes followed by only 3.
  await conn.write(Uint8Array.of(0, 0, 0, 2, 9, 9, 0, 0, 0, 10, 1, 2, 3));
  await conn.closeWrite();
  assert.deepEqual(await results.next(), Uint8Array.of(9, 9));
  const err = await results.next();
  assert.ok(isJwError(err, "invalid_message"), String(err));
  assert.deepEqual(err.detail, { expected: 10, received: 3 });
  // The error sticks: the stream is closed.
  assert.ok(isJwError(await results.next(), "invalid_message"));
  assert.equal(await readToEnd(conn), 0);
  assert.equal(b.stats().streamFailures.truncated, 1);
  assert.equal(b.stats().streamMessagesReceived, 1);
});

Deno.test("NetTransport.openStream() to a closed port is not_connected", async () => {
  await using a = await open();
  const probe = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = probe.addr.port;
  probe.close();
  await assert.rejects(
    a.openStream(`127.0.0.1:${port}`, 5000),
    (err) => isJwError(err, "not_connected") && err.message.includes(`127.0.0.1:${port}`),
  );
  await assert.rejects(a.openStream("nowhere", 5000), (err) => isJwError(err, "not_connected"));
  assert.equal(a.stats().streamsOpened, 0);
});

Deno.test("NetTransport.openStream() times out on the clock", async () => {
  const clock = new FakeClock();
  await using a = await open({ clock });
  await using b = await open({ clock });
  const inbound = new Inbox<Stream>();
  b.onStream(inbound.push);
  const opening = a.openStream(b.address, 1000);
  // The timer fires before the connect can complete (that needs the event loop).
  await clock.advance(1000);
  await assert.rejects(opening, (err) => isJwError(err, "timeout"));
  assert.equal(a.stats().streamsOpened, 0);
});

Deno.test("NetTransport stream receive() times out on the clock and stays usable", async () => {
  const clock = new FakeClock();
  await using a = await open({ clock });
  await using b = await open({ clock });
  const inbound = new Inbox<Stream>();
  b.onStream(inbound.push);
  const stream = await a.openStream(b.address, 1000);
  const peer = await inbound.next();

  const waiting = stream.receive(500);
  await assert.rejects(stream.receive(500), (err) => isJwError(err, "internal"));
  await clock.advance(500);
  await assert.rejects(waiting, (err) => isJwError(err, "timeout"));

  // A message that arrives while nobody waits is kept for the next receive().
  await peer.send(bytes(3000));
  await until(() => a.stats().streamMessagesReceived === 1);
  const kept = stream.receive(500);
  await clock.advance(500);
  assert.deepEqual(await kept, bytes(3000));
  stream.close();
  assert.equal(await peer.receive(500), null);
});

Deno.test("NetTransport closes streams idle for the idle timeout", async () => {
  const clock = new FakeClock();
  await using b = await open({ clock, streamIdleTimeoutMs: 1000 });
  const inbound = new Inbox<Stream>();
  b.onStream(inbound.push);
  using conn = await Deno.connect({ hostname: "127.0.0.1", port: portOf(b.address) });
  const peer = await inbound.next();
  const closed = readToEnd(conn);
  let ended = false;
  closed.then(() => ended = true);

  await clock.advance(600);
  await conn.write(Uint8Array.of(0, 0, 0, 1, 42)); // traffic restarts the idle time
  assert.deepEqual(await peer.receive(100), Uint8Array.of(42));
  await clock.advance(999);
  assert.equal(ended, false);
  assert.equal(b.stats().streamFailures.idle, 0);
  await clock.advance(1);
  assert.equal(await closed, 0);
  assert.equal(b.stats().streamFailures.idle, 1);
  await assert.rejects(peer.receive(100), (err) => isJwError(err, "timeout"));
});

Deno.test("NetTransport caps concurrent inbound streams per remote host", async () => {
  await using b = await open({ maxInboundStreamsPerPeer: 2 });
  const inbound = new Inbox<Stream>();
  b.onStream(inbound.push);
  const port = portOf(b.address);
  using c1 = await Deno.connect({ hostname: "127.0.0.1", port });
  using c2 = await Deno.connect({ hostname: "127.0.0.1", port });
  const s1 = await inbound.next();
  await inbound.next();
  using c3 = await Deno.connect({ hostname: "127.0.0.1", port });
  assert.equal(await readToEnd(c3), 0); // refused: closed at once
  assert.equal(b.stats().streamFailures.refusedPeerLimit, 1);
  assert.equal(inbound.size, 0);

  // Closing one frees a place.
  s1.close();
  assert.equal(await readToEnd(c1), 0);
  using c4 = await Deno.connect({ hostname: "127.0.0.1", port });
  const s4 = await inbound.next();
  await c4.write(Uint8Array.of(0, 0, 0, 1, 4));
  assert.deepEqual(await s4.receive(5000), Uint8Array.of(4));
  assert.equal(b.stats().streamsAccepted, 3);
  void c2;
});

Deno.test("NetTransport refuses inbound streams when no handler is set", async () => {
  await using b = await open();
  using conn = await Deno.connect({ hostname: "127.0.0.1", port: portOf(b.address) });
  assert.equal(await readToEnd(conn), 0);
  assert.equal(b.stats().streamFailures.refusedNoHandler, 1);
});

Deno.test("NetTransport.close() closes everything and refuses further use", async () => {
  const a = await open();
  const b = await open();
  const inbound = new Inbox<Stream>();
  b.onStream(inbound.push);
  const stream = await a.openStream(b.address, 5000);
  const peer = await inbound.next();
  const pending = peer.receive(5000);
  using raw = await Deno.connect({ hostname: "127.0.0.1", port: portOf(b.address) });
  await inbound.next();

  await b.close();
  await b.close(); // idempotent
  await assert.rejects(pending, (err) => isJwError(err, "closed"));
  assert.equal(await readToEnd(raw), 0);
  assert.equal(await stream.receive(5000), null); // the peer's side went away
  await assert.rejects(b.openStream(a.address, 5000), (err) => isJwError(err, "closed"));
  b.sendPacket(a.address, Uint8Array.of(1));
  assert.equal(b.stats().packetsDropped.closed, 1);
  // The port is free again.
  const port = portOf(b.address);
  Deno.listen({ hostname: "127.0.0.1", port }).close();
  await a.close();
  await assert.rejects(stream.send(Uint8Array.of(1)), (err) => isJwError(err, "closed"));
});
