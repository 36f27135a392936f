import assert from "node:assert/strict";
import { createHash, createHmac } from "node:crypto";
import { Buffer } from "node:buffer";
import { encode } from "@msgpack/msgpack";
import { jwtVerify, SignJWT } from "jose";
import { type Clock, FakeClock } from "../../shared/clock.ts";
import { isJwError, JwError } from "../../shared/errors.ts";
import { seededRandom } from "../../shared/random.ts";
import { createKeyring, type Keyring } from "./keyring.ts";
import {
  DROP_REASONS,
  type DropReason,
  maxMessageSize,
  sealedSize,
  sealOverhead,
  sealTransport,
} from "./seal.ts";
import type { Packet, Stream, Transport } from "./transport.ts";

// ---------------------------------------------------------------------------------------
// A tiny in-memory network: packets are handed over synchronously, streams are queue
// pairs, and everything sent is recorded on `wire` so tests can capture and replay it.

interface WireRecord {
  from: string;
  to: string;
  data: Uint8Array;
  kind: "packet" | "stream";
}

class FakeNet {
  readonly nodes = new Map<string, FakeTransport>();
  readonly wire: WireRecord[] = [];
  constructor(readonly clock: FakeClock) {}

  transport(address: string): FakeTransport {
    const t = new FakeTransport(this, address);
    this.nodes.set(address, t);
    return t;
  }
}

class FakeTransport implements Transport {
  packetHandler?: (packet: Packet) => void;
  streamHandler?: (stream: Stream) => void;
  closed = false;

  constructor(readonly net: FakeNet, readonly address: string) {}

  sendPacket(to: string, data: Uint8Array): void {
    this.net.wire.push({ from: this.address, to, data: data.slice(), kind: "packet" });
    const peer = this.net.nodes.get(to);
    if (peer && !peer.closed) {
      peer.packetHandler?.({ from: this.address, data: data.slice(), at: this.net.clock.now() });
    }
  }

  onPacket(handler: (packet: Packet) => void): void {
    this.packetHandler = handler;
  }

  openStream(to: string): Promise<Stream> {
    const peer = this.net.nodes.get(to);
    if (!peer?.streamHandler || peer.closed) {
      return Promise.reject(new JwError("not_connected", `nothing listens on ${to}`));
    }
    const mine = new FakeStream(this.net, this.address, to);
    const theirs = new FakeStream(this.net, to, this.address);
    mine.peer = theirs;
    theirs.peer = mine;
    peer.streamHandler(theirs);
    return Promise.resolve(mine);
  }

  onStream(handler: (stream: Stream) => void): void {
    this.streamHandler = handler;
  }

  close(): Promise<void> {
    this.closed = true;
    return Promise.resolve();
  }
}

/** One end of a stream. `receive` never waits: an empty open stream is a `timeout`. */
class FakeStream implements Stream {
  peer!: FakeStream;
  queue: Uint8Array[] = [];
  closed = false;
  peerClosed = false;

  constructor(readonly net: FakeNet, readonly local: string, readonly remote: string) {}

  send(message: Uint8Array): Promise<void> {
    if (this.closed || this.peerClosed) {
      return Promise.reject(new JwError("closed", "stream closed"));
    }
    this.net.wire.push({
      from: this.local,
      to: this.remote,
      data: message.slice(),
      kind: "stream",
    });
    this.peer.queue.push(message.slice());
    return Promise.resolve();
  }

  receive(): Promise<Uint8Array | null> {
    if (this.closed) return Promise.resolve(null);
    const next = this.queue.shift();
    if (next) return Promise.resolve(next);
    if (this.peerClosed) return Promise.resolve(null);
    return Promise.reject(new JwError("timeout", "no message"));
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.peer.peerClosed = true;
  }
}

// ---------------------------------------------------------------------------------------
// Keys and a hand-made token builder that follows the documented format independently.

const CLUSTER = "jw-test";
const KEY = new Uint8Array(32).fill(1);
const OTHER_KEY = new Uint8Array(32).fill(2);
const b64 = (k: Uint8Array) => Buffer.from(k).toString("base64");
const b64url = (d: Uint8Array | string) => Buffer.from(d).toString("base64url");
const kidOf = (k: Uint8Array) =>
  createHash("sha256").update(k).digest().subarray(0, 8).toString("base64url");

interface ForgeOptions {
  key?: Uint8Array;
  header?: Record<string, string>;
  iat: number;
  nonce?: Uint8Array;
  message?: Uint8Array;
  /** Raw payload bytes instead of iat + nonce + message. */
  payload?: Uint8Array;
}

function gossipHeader(key: Uint8Array, cluster = CLUSTER): Record<string, string> {
  return { alg: "HS256", typ: "jw-gossip", aud: cluster, kid: kidOf(key) };
}

function forge(o: ForgeOptions): Uint8Array {
  const key = o.key ?? KEY;
  const header = b64url(JSON.stringify(o.header ?? gossipHeader(key)));
  let payload = o.payload;
  if (!payload) {
    const buf = Buffer.alloc(16);
    buf.writeBigUInt64BE(BigInt(o.iat), 0);
    buf.set(o.nonce ?? new Uint8Array(8).fill(9), 8);
    payload = Buffer.concat([buf, o.message ?? new Uint8Array([1, 2, 3])]);
  }
  const input = `${header}.${b64url(payload)}`;
  const sig = createHmac("sha256", key).update(input).digest("base64url");
  return new TextEncoder().encode(`${input}.${sig}`);
}

const text = (s: string) => new TextEncoder().encode(s);
const ascii = (d: Uint8Array) => new TextDecoder().decode(d);

// ---------------------------------------------------------------------------------------

interface SetupOptions {
  encrypt?: boolean;
  bEncrypt?: boolean;
  windowMs?: number;
  replayCacheLimit?: number;
  packetLimit?: number;
  aPacketLimit?: number;
  streamMessageLimit?: number;
  aKeyring?: Keyring;
  bKeyring?: Keyring;
}

function setup(o: SetupOptions = {}) {
  const clock = new FakeClock();
  const net = new FakeNet(clock);
  const rawA = net.transport("10.0.0.1:7946");
  const rawB = net.transport("10.0.0.2:7946");
  const mallory = net.transport("10.0.0.66:7946");
  const ring = () => createKeyring({ cluster: CLUSTER, keys: [b64(KEY)] });
  const a = sealTransport(rawA, {
    keyring: o.aKeyring ?? ring(),
    clock,
    random: seededRandom(1),
    encrypt: o.encrypt,
    packetLimit: o.aPacketLimit ?? o.packetLimit,
    streamMessageLimit: o.streamMessageLimit,
  });
  const b = sealTransport(rawB, {
    keyring: o.bKeyring ?? ring(),
    clock,
    random: seededRandom(2),
    encrypt: o.bEncrypt ?? o.encrypt,
    windowMs: o.windowMs,
    replayCacheLimit: o.replayCacheLimit,
    packetLimit: o.packetLimit,
    streamMessageLimit: o.streamMessageLimit,
  });
  const got: Packet[] = [];
  b.onPacket((p) => got.push(p));
  const streams: Stream[] = [];
  b.onStream((s) => streams.push(s));
  return { clock, net, rawA, rawB, mallory, a, b, got, streams };
}

type Setup = ReturnType<typeof setup>;

/** Sends a real sealed packet from a to b and returns its wire bytes. */
function capture(s: Setup, message = text("hello")): Uint8Array {
  s.a.sendPacket(s.b.address, message);
  const last = s.net.wire.at(-1)!;
  assert.equal(last.from, s.a.address);
  return last.data;
}

/**
 * Mallory sends `data` to b: it must be dropped under exactly `reason`, the handler must not
 * run, nothing may throw, and b must not answer.
 */
function expectDrop(s: Setup, data: Uint8Array, reason: DropReason, note = ""): void {
  const before = s.b.stats();
  const delivered = s.got.length;
  const wire = s.net.wire.length;
  assert.doesNotThrow(() => s.mallory.sendPacket(s.b.address, data));
  const after = s.b.stats();
  assert.equal(s.got.length, delivered, `handler called ${note}`);
  for (const r of DROP_REASONS) {
    const want = before.dropped[r] + (r === reason ? 1 : 0);
    assert.equal(after.dropped[r], want, `dropped.${r} (expected ${reason}) ${note}`);
  }
  assert.equal(after.verified.packets, before.verified.packets);
  assert.equal(s.net.wire.length, wire + 1, "the receiver answered");
}

function expectDelivered(s: Setup, data: Uint8Array, message?: Uint8Array): void {
  const delivered = s.got.length;
  s.mallory.sendPacket(s.b.address, data);
  assert.equal(s.got.length, delivered + 1, "not delivered");
  if (message) assert.deepEqual(s.got.at(-1)!.data, message);
}

// ---------------------------------------------------------------------------------------

Deno.test("sealTransport() delivers a sealed packet's message with its sender and time", () => {
  const s = setup();
  const message = encode({ type: "ping", seq: 7 });
  s.a.sendPacket(s.b.address, message);
  assert.equal(s.got.length, 1);
  assert.deepEqual(s.got[0], { from: s.a.address, data: message, at: s.clock.now() });
  assert.equal(s.got[0].data.constructor, Uint8Array);

  const token = ascii(s.net.wire[0].data);
  const [header, payload, sig] = token.split(".");
  assert.match(token, /^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]{43}$/);
  assert.equal(
    Buffer.from(header, "base64url").toString(),
    `{"alg":"HS256","typ":"jw-gossip","aud":"${CLUSTER}","kid":"${kidOf(KEY)}"}`,
  );
  const body = Buffer.from(payload, "base64url");
  assert.equal(Number(body.readBigUInt64BE(0)), s.clock.now());
  assert.deepEqual(new Uint8Array(body.subarray(16)), message);
  assert.equal(sig, createHmac("sha256", KEY).update(`${header}.${payload}`).digest("base64url"));

  const stats = s.b.stats();
  assert.deepEqual(stats.verified, { packets: 1, streamMessages: 0 });
  assert.deepEqual(stats.verifiedByKey, { [kidOf(KEY)]: 1 });
  assert.deepEqual(s.a.stats().sent, { packets: 1, streamMessages: 0 });
  assert.ok(DROP_REASONS.every((r) => stats.dropped[r] === 0));
});

Deno.test("sealTransport() accepts a token built by hand to the documented format", () => {
  const s = setup();
  const message = text("by hand");
  expectDelivered(s, forge({ iat: s.clock.now(), message }), message);
  assert.equal(s.got[0].from, s.mallory.address);
});

Deno.test("sealTransport() delivers two equal messages: each gets its own nonce", () => {
  const s = setup();
  const one = capture(s, text("same"));
  const two = capture(s, text("same"));
  assert.notDeepEqual(one, two);
  assert.equal(s.got.length, 2);
});

Deno.test("sealTransport() drops forged, foreign and broken packets by reason", async (t) => {
  const s = setup();
  const now = () => s.clock.now();
  const good = ascii(capture(s));
  const [header, payload, sig] = good.split(".");
  const cases: [string, () => Uint8Array, DropReason][] = [
    ["plain msgpack bytes (no key)", () => encode({ type: "ping", seq: 1 }), "unsigned"],
    ["plain text without dots", () => text("hello there"), "unsigned"],
    ["an unsecured JWS (empty signature)", () => text(`${header}.${payload}.`), "unsigned"],
    [
      "alg none header with empty signature",
      () => text(`${b64url(JSON.stringify({ alg: "none" }))}.${payload}.`),
      "unsigned",
    ],
    ["empty", () => new Uint8Array(0), "malformed"],
    ["signed with another key", () => forge({ key: OTHER_KEY, iat: now() }), "unknown_key"],
    [
      "another key under our header",
      () => forge({ key: OTHER_KEY, header: gossipHeader(KEY), iat: now() }),
      "bad_signature",
    ],
    [
      "our key, another cluster",
      () => forge({ header: gossipHeader(KEY, "other"), iat: now() }),
      "unknown_key",
    ],
    [
      "our key, typ JWT",
      () => forge({ header: { ...gossipHeader(KEY), typ: "JWT" }, iat: now() }),
      "unknown_key",
    ],
    [
      "our key, header fields in another order",
      () => {
        const { kid, ...rest } = gossipHeader(KEY);
        return forge({ header: { kid, ...rest }, iat: now() });
      },
      "unknown_key",
    ],
    [
      "our key, encrypted header to a plain receiver",
      () => forge({ header: { ...gossipHeader(KEY), enc: "A256GCM" }, iat: now() }),
      "unknown_key",
    ],
    ["signature one character short", () => text(good.slice(0, -1)), "malformed"],
    ["signature one character long", () => text(`${good}A`), "malformed"],
    ["truncated in the payload", () => text(good.slice(0, header.length + 10)), "malformed"],
    ["truncated in the header", () => text(good.slice(0, 20)), "unsigned"],
    ["three dots", () => text(`${good}.x`), "malformed"],
    ["a non-base64url character", () => text(`${header}.${payload}+.${sig}`), "malformed"],
    ["a high byte", () => Uint8Array.from([...text(good).slice(0, -1), 0xc3]), "malformed"],
    [
      "payload length that no base64 can have",
      () => text(`${header}.${payload.slice(0, 4 * 5 + 1)}.${sig}`),
      "malformed",
    ],
    ["empty header", () => text(`.${payload}.${sig}`), "malformed"],
    ["empty payload", () => text(`${header}..${sig}`), "malformed"],
    [
      "correctly signed payload shorter than iat and nonce",
      () => forge({ iat: 0, payload: new Uint8Array(15) }),
      "malformed",
    ],
    ["over the packet limit", () => new Uint8Array(1401).fill(0x41), "too_large"],
  ];
  for (const [name, make, reason] of cases) {
    await t.step(`${name} → ${reason}`, () => expectDrop(s, make(), reason));
  }
  // A fresh real packet still goes through after all that.
  capture(s, text("still fine"));
  assert.deepEqual(s.got.at(-1)!.data, text("still fine"));
});

Deno.test("sealTransport() drops a packet with any one character changed", () => {
  const s = setup();
  const good = ascii(capture(s, encode({ type: "alive", incarnation: 3, node: "s1" })));
  const firstDot = good.indexOf(".");
  const secondDot = good.lastIndexOf(".");
  let checked = 0;
  for (let i = 0; i < good.length; i++) {
    if (i === firstDot || i === secondDot) continue;
    const swapped = good[i] === "A" ? "B" : "A";
    const tampered = good.slice(0, i) + swapped + good.slice(i + 1);
    const reason: DropReason = i < firstDot ? "unknown_key" : "bad_signature";
    expectDrop(s, text(tampered), reason, `at ${i}`);
    checked++;
  }
  assert.equal(checked, good.length - 2);
});

Deno.test("sealTransport() never accepts random mutations or random bytes", () => {
  const s = setup();
  const random = seededRandom(42);
  const good = capture(s, text("a gossip message of some length"));
  const accepted = s.got.length;
  for (let i = 0; i < 500; i++) {
    const data = good.slice();
    const flips = 1 + Math.floor(random.float() * 3);
    for (let f = 0; f < flips; f++) {
      data[Math.floor(random.float() * data.length)] ^= 1 + Math.floor(random.float() * 255);
    }
    assert.doesNotThrow(() => s.mallory.sendPacket(s.b.address, data));
    const garbage = random.bytes(Math.floor(random.float() * 1500));
    assert.doesNotThrow(() => s.mallory.sendPacket(s.b.address, garbage));
  }
  assert.equal(s.got.length, accepted);
  const dropped = s.b.stats().dropped;
  assert.equal(DROP_REASONS.reduce((sum, r) => sum + dropped[r], 0), 1000);
  assert.equal(dropped.replayed + dropped.stale, 0);
});

Deno.test("sealTransport() drops a replayed packet, and as stale once past the window", async () => {
  const s = setup();
  const packet = capture(s);
  assert.equal(s.got.length, 1);
  expectDrop(s, packet, "replayed");
  await s.clock.advance(29_000);
  expectDrop(s, packet, "replayed", "still within the window");
  await s.clock.advance(1_001);
  expectDrop(s, packet, "stale");
});

Deno.test("sealTransport() checks iat against its own clock, both ways", async (t) => {
  const s = setup({ windowMs: 10_000 });
  const now = s.clock.now();
  await t.step("just inside the window is accepted", () => {
    expectDelivered(s, forge({ iat: now - 10_000, nonce: new Uint8Array(8).fill(1) }));
    expectDelivered(s, forge({ iat: now + 10_000, nonce: new Uint8Array(8).fill(2) }));
  });
  await t.step("older is stale", () => {
    expectDrop(s, forge({ iat: now - 10_001, nonce: new Uint8Array(8).fill(3) }), "stale");
    expectDrop(s, forge({ iat: 0 }), "stale");
  });
  await t.step("from the future is stale", () => {
    expectDrop(s, forge({ iat: now + 10_001, nonce: new Uint8Array(8).fill(4) }), "stale");
    expectDrop(s, forge({ iat: 2 ** 53 - 1 }), "stale");
  });
});

Deno.test("sealTransport() keeps the replay cache bounded without accepting a replay", async () => {
  const s = setup({ replayCacheLimit: 4 });
  const packets: Uint8Array[] = [];
  for (let i = 0; i < 6; i++) {
    packets.push(capture(s, text(`m${i}`)));
    await s.clock.advance(1);
  }
  assert.equal(s.got.length, 6);
  assert.deepEqual(s.b.stats().replayCache, { size: 4, evicted: 2 });
  // The evicted ones are refused as stale (the window narrowed), the kept ones as replayed.
  expectDrop(s, packets[0], "stale");
  expectDrop(s, packets[1], "stale");
  expectDrop(s, packets[2], "replayed");
  expectDrop(s, packets[5], "replayed");
  // Fresh packets still pass, and entries expire with their tokens.
  await s.clock.advance(30_010);
  capture(s, text("later"));
  assert.equal(s.got.length, 7);
  assert.deepEqual(s.b.stats().replayCache, { size: 1, evicted: 2 });
});

Deno.test("sealTransport() remembers nonces across a clock that steps back", () => {
  const start = Date.UTC(2026, 0, 1);
  let now = start;
  const fake = new FakeClock();
  const clock: Clock = {
    now: () => now,
    setTimeout: (fn, ms) => fake.setTimeout(fn, ms),
    clearTimeout: (id) => fake.clearTimeout(id),
    sleep: (ms) => fake.sleep(ms),
  };
  const net = new FakeNet(new FakeClock());
  const mallory = net.transport("m:1");
  const keyring = createKeyring({ cluster: CLUSTER, keys: [b64(KEY)] });
  const c = sealTransport(net.transport("c:1"), {
    keyring,
    clock,
    random: seededRandom(3),
    windowMs: 1_000,
  });
  let got = 0;
  c.onPacket(() => got++);
  const old = forge({ iat: start, nonce: new Uint8Array(8).fill(7) });
  mallory.sendPacket(c.address, old);
  assert.equal(got, 1);
  now = start + 1_500;
  c.sendPacket(c.address, text("fresh")); // its check forgets the expired entry
  assert.equal(got, 2);
  assert.equal(c.stats().replayCache.size, 1);
  // The clock steps back: `old` is inside the window again, and still refused.
  now = start + 500;
  mallory.sendPacket(c.address, old);
  assert.equal(got, 2);
  assert.equal(c.stats().dropped.stale, 1);
});

Deno.test("sealTransport() sizes: sealedSize() is exact and maxPacketMessage fits", async (t) => {
  for (const cluster of ["jw", "prod-eu-west-1", "ünïcode"]) {
    for (const encrypt of [false, true]) {
      await t.step(`${cluster} encrypt=${encrypt}`, () => {
        const clock = new FakeClock();
        const net = new FakeNet(clock);
        const raw = net.transport("a:1");
        const sealed = sealTransport(raw, {
          keyring: createKeyring({ cluster, keys: [b64(KEY)] }),
          clock,
          random: seededRandom(1),
          encrypt,
        });
        let got: Uint8Array | undefined;
        sealed.onPacket((p) => got = p.data);
        for (let n = 0; n <= 300; n++) {
          sealed.sendPacket("a:1", new Uint8Array(n).fill(n));
          assert.equal(net.wire.at(-1)!.data.length, sealedSize(n, { cluster, encrypt }));
          assert.equal(sealed.overhead(n), sealOverhead(n, { cluster, encrypt }));
          assert.deepEqual(got, new Uint8Array(n).fill(n));
        }
        const max = sealed.maxPacketMessage;
        assert.equal(max, maxMessageSize(1400, { cluster, encrypt }));
        sealed.sendPacket("a:1", new Uint8Array(max).fill(1));
        assert.ok(net.wire.at(-1)!.data.length <= 1400);
        assert.ok(sealedSize(max + 1, { cluster, encrypt }) > 1400);
        assert.equal(got!.length, max);
        const wire = net.wire.length;
        sealed.sendPacket("a:1", new Uint8Array(max + 1));
        assert.equal(net.wire.length, wire, "an oversized packet was sent");
        assert.equal(sealed.stats().unsendable, 1);
      });
    }
  }
});

Deno.test("sealOverhead() of a 40-byte message in a cluster named jw", () => {
  assert.equal(sealedSize(40, { cluster: "jw" }), 206);
  assert.equal(sealOverhead(40, { cluster: "jw" }), 166);
  assert.equal(sealOverhead(40, { cluster: "jw", encrypt: true }), 208);
  assert.equal(maxMessageSize(1400, { cluster: "jw" }), 935);
  assert.equal(maxMessageSize(100, { cluster: "jw" }), -1);
});

Deno.test("sealTransport() refuses a packet limit that cannot carry a message", () => {
  const clock = new FakeClock();
  const raw = new FakeNet(clock).transport("a:1");
  const keyring = createKeyring({ cluster: CLUSTER, keys: [b64(KEY)] });
  assert.throws(
    () => sealTransport(raw, { keyring, clock, random: seededRandom(1), packetLimit: 150 }),
    (e) => isJwError(e, "config"),
  );
  assert.throws(
    () => sealTransport(raw, { keyring, clock, random: seededRandom(1), windowMs: 0 }),
    (e) => isJwError(e, "config"),
  );
});

Deno.test("sealTransport() drops a valid token over the receiver's limit", () => {
  const s = setup({ aPacketLimit: 4000 });
  s.a.sendPacket(s.b.address, new Uint8Array(1200));
  assert.equal(s.net.wire.at(-1)!.data.length > 1400, true);
  assert.equal(s.got.length, 0);
  assert.equal(s.b.stats().dropped.too_large, 1);
});

Deno.test("a gossip token is not a JWT, and a JWT under the same key is not gossip", async () => {
  const s = setup();
  const jwt = await new SignJWT({ sub: "x" })
    .setProtectedHeader({ alg: "HS256", typ: "JWT" })
    .setAudience(CLUSTER)
    .setIssuedAt()
    .sign(KEY);
  expectDrop(s, text(jwt), "unknown_key");
  const sameHeaderJwt = await new SignJWT({ sub: "x", purpose: "anything else" })
    .setProtectedHeader({ alg: "HS256", typ: "jw-gossip", aud: CLUSTER, kid: kidOf(KEY) })
    .sign(KEY);
  // Same header, so it passes the signature, but its JSON payload is no gossip payload.
  expectDrop(s, text(sameHeaderJwt), "stale");
  const gossip = ascii(capture(s));
  await assert.rejects(jwtVerify(gossip, KEY));
});

Deno.test("sealTransport() hands over and verifies stream messages", async () => {
  const s = setup();
  const client = await s.a.openStream(s.b.address, 1000);
  assert.equal(s.streams.length, 1);
  const server = s.streams[0];
  assert.equal(server.remote, s.a.address);
  await client.send(text("push"));
  await server.send(text("pull"));
  assert.deepEqual(await server.receive(1000), text("push"));
  assert.deepEqual(await client.receive(1000), text("pull"));
  assert.match(ascii(s.net.wire.at(-1)!.data), /^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[^.]{43}$/);
  client.close();
  assert.equal(await server.receive(1000), null);
  assert.deepEqual(s.b.stats().verified, { packets: 0, streamMessages: 1 });
  assert.deepEqual(s.b.stats().sent, { packets: 0, streamMessages: 1 });
});

Deno.test("sealTransport() closes a stream on a bad message", async (t) => {
  const s = setup({ streamMessageLimit: 1000 });
  // A sealed stream message captured from a real exchange.
  const real = await s.a.openStream(s.b.address, 1000);
  await real.send(text("captured"));
  const captured = ascii(s.net.wire.at(-1)!.data);
  assert.deepEqual(await s.streams.at(-1)!.receive(1000), text("captured"));
  const [header, payload, sig] = captured.split(".");
  const flip = (c: string) => c === "A" ? "B" : "A";
  let fresh = 0;

  const cases: [string, () => Uint8Array, DropReason][] = [
    ["plain bytes", () => encode({ type: "push-pull" }), "unsigned"],
    ["empty", () => new Uint8Array(0), "malformed"],
    ["signed with another key", () => forge({ key: OTHER_KEY, iat: s.clock.now() }), "unknown_key"],
    [
      "a tampered payload",
      () => text(`${header}.${flip(payload[0])}${payload.slice(1)}.${sig}`),
      "bad_signature",
    ],
    ["a replayed message", () => text(captured), "replayed"],
    ["a stale message", () => forge({ iat: s.clock.now() - 60_000 }), "stale"],
    ["garbage", () => text("a.b.c"), "malformed"],
    ["over the stream limit", () => new Uint8Array(1001).fill(0x41), "too_large"],
  ];
  for (const [name, make, reason] of cases) {
    await t.step(`${name} → ${reason}`, async () => {
      const before = s.b.stats().dropped[reason];
      const raw = await s.mallory.openStream(s.b.address);
      const victim = s.streams.at(-1)!;
      await raw.send(make());
      await raw.send(forge({ iat: s.clock.now(), nonce: new Uint8Array(8).fill(++fresh) }));
      await assert.rejects(
        victim.receive(1000),
        (e) => isJwError(e, "invalid_message") && e.detail?.reason === reason,
      );
      assert.equal(s.b.stats().dropped[reason], before + 1);
      // The stream is closed: the good message queued behind the bad one is never read.
      assert.equal(await victim.receive(1000), null);
      await assert.rejects(raw.send(text("more")), (e) => isJwError(e, "closed"));
    });
  }
  assert.equal(s.b.stats().verified.streamMessages, 1);
});

Deno.test("SealedStream.send() refuses a message over the sealed stream limit", async () => {
  const s = setup({ streamMessageLimit: 1000 });
  const client = await s.a.openStream(s.b.address, 1000);
  const max = maxMessageSize(1000, { cluster: CLUSTER });
  assert.equal(s.a.maxStreamMessage, max);
  await client.send(new Uint8Array(max));
  await assert.rejects(
    client.send(new Uint8Array(max + 1)),
    (e) => isJwError(e, "frame_too_large"),
  );
  assert.equal(s.net.wire.length, 1);
});

Deno.test("sealTransport() rejects a captured packet replayed into a stream", async () => {
  const s = setup();
  const packet = capture(s);
  const raw = await s.mallory.openStream(s.b.address);
  await raw.send(packet);
  await assert.rejects(
    s.streams[0].receive(1000),
    (e) => isJwError(e, "invalid_message") && e.detail?.reason === "replayed",
  );
});

Deno.test("sealTransport() with encryption: round trip, and no plaintext on the wire", () => {
  const s = setup({ encrypt: true });
  const message = text("secret gossip secret gossip");
  s.a.sendPacket(s.b.address, message);
  s.a.sendPacket(s.b.address, message);
  assert.deepEqual(s.got.map((p) => p.data), [message, message]);
  const [one, two] = s.net.wire.map((w) => ascii(w.data));
  const [header, payload] = one.split(".");
  assert.deepEqual(JSON.parse(Buffer.from(header, "base64url").toString()), {
    alg: "HS256",
    typ: "jw-gossip",
    aud: CLUSTER,
    kid: kidOf(KEY),
    enc: "A256GCM",
  });
  const body = Buffer.from(payload, "base64url");
  assert.equal(body.length, 16 + message.length + 16);
  assert.equal(body.includes(Buffer.from("secret")), false);
  assert.notEqual(
    one.split(".")[1].slice(22),
    two.split(".")[1].slice(22),
    "same ciphertext twice",
  );
  assert.equal(s.b.stats().verified.packets, 2);
});

Deno.test("sealTransport() with encryption: a plain and an encrypting peer drop each other", () => {
  const plainToEncrypted = setup({ encrypt: false, bEncrypt: true });
  plainToEncrypted.a.sendPacket(plainToEncrypted.b.address, text("hi"));
  assert.equal(plainToEncrypted.got.length, 0);
  assert.equal(plainToEncrypted.b.stats().dropped.unknown_key, 1);

  const encryptedToPlain = setup({ encrypt: true, bEncrypt: false });
  encryptedToPlain.a.sendPacket(encryptedToPlain.b.address, text("hi"));
  assert.equal(encryptedToPlain.got.length, 0);
  assert.equal(encryptedToPlain.b.stats().dropped.unknown_key, 1);
});

Deno.test("sealTransport() with encryption: tampering and bad ciphertext are dropped", () => {
  const s = setup({ encrypt: true });
  const good = ascii(capture(s, text("x".repeat(30))));
  const i = good.indexOf(".") + 30; // inside the ciphertext
  const tampered = good.slice(0, i) + (good[i] === "A" ? "B" : "A") + good.slice(i + 1);
  expectDrop(s, text(tampered), "bad_signature");
  // Signed with the key but not encrypted with it: only a key holder can do this.
  const header = { ...gossipHeader(KEY), enc: "A256GCM" };
  const prefix = Buffer.alloc(16);
  prefix.writeBigUInt64BE(BigInt(s.clock.now()));
  const junk = Buffer.concat([prefix, new Uint8Array(40).fill(5)]);
  expectDrop(s, forge({ header, iat: 0, payload: junk }), "malformed");
  const short = Buffer.concat([prefix, new Uint8Array(15)]);
  expectDrop(s, forge({ header, iat: 0, payload: short }), "malformed");
});

Deno.test("SealedTransport.onPacket() replaces the handler; close() closes the inner one", async () => {
  const s = setup();
  const second: Packet[] = [];
  s.b.onPacket((p) => second.push(p));
  s.a.sendPacket(s.b.address, text("x"));
  assert.equal(s.got.length, 0);
  assert.equal(second.length, 1);
  await s.b.close();
  assert.equal(s.rawB.closed, true);
  {
    await using a = s.a;
    assert.equal(a.address, "10.0.0.1:7946");
  }
  assert.equal(s.rawA.closed, true);
});
