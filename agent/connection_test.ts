import assert from "node:assert/strict";
import { FakeClock } from "../shared/clock.ts";
import {
  type Ed25519KeyPair,
  generateKeyPair,
  verifyChallengeResponse,
} from "../shared/crypto/mod.ts";
import type { AuditEvent } from "../shared/db/mod.ts";
import { isJwError } from "../shared/errors.ts";
import { silentLogger } from "../shared/log.ts";
import type {
  ChallengeClaims,
  ChallengeHeader,
  Command,
  PublicJwk,
} from "../shared/protocol/mod.ts";
import { cryptoRandom, type Random } from "../shared/random.ts";
import { type Connection, type ConnectionOptions, startConnection } from "./connection.ts";
import { type FakePeer, FakeTransport } from "./_fake_transport.ts";

const BASE = "ws://127.0.0.1:7400/v1/agent";
const HEARTBEAT = 10_000;

/** A Random whose floats are always `f` (so backoff delays are exact). */
function fixedRandom(f: number): Random {
  return { float: () => f, bytes: (n) => cryptoRandom.bytes(n) };
}

interface Harness {
  clock: FakeClock;
  transport: FakeTransport;
  keyPair: Ed25519KeyPair;
  audit: AuditEvent[];
  commands: [Command, string][];
  events: string[];
  conn: Connection;
  [Symbol.asyncDispose](): Promise<void>;
}

let sharedKey: Ed25519KeyPair | undefined;

async function harness(
  over: Partial<ConnectionOptions> = {},
  setup: (transport: FakeTransport) => void = () => {},
): Promise<Harness> {
  const clock = new FakeClock();
  const transport = new FakeTransport();
  setup(transport);
  const keyPair = sharedKey ??= await generateKeyPair();
  const audit: AuditEvent[] = [];
  const commands: [Command, string][] = [];
  const events: string[] = [];
  const conn = startConnection({
    agentId: "a1",
    server: "http://127.0.0.1:7400",
    keyPair,
    tags: () => ({ role: "web" }),
    reconnect: { min: 500, max: 30_000 },
    maxFrame: 64 * 1024,
    transport,
    clock,
    random: fixedRandom(0.5),
    logger: silentLogger,
    audit: { append: (e) => audit.push(e) },
    running: () => 2,
    onWelcome: (w) => events.push(`welcome:${w.serverId}`),
    onDisconnect: () => events.push("disconnect"),
    onCommand: (c, serverId) => commands.push([c, serverId]),
    ...over,
  });
  return {
    clock,
    transport,
    keyPair,
    audit,
    commands,
    events,
    conn,
    [Symbol.asyncDispose]: () => conn.close(),
  };
}

/** Runs the server side of a handshake up to the welcome; returns the hello. */
async function handshake(
  h: Harness,
  peer: FakePeer,
  serverId = "s1",
): Promise<Record<string, unknown>> {
  const hello = await peer.expect("hello");
  const kid = h.keyPair.kid;
  const header: ChallengeHeader = { alg: "EdDSA", typ: "JWT", kid };
  const now = Math.floor(h.clock.now() / 1000);
  const claims: ChallengeClaims = {
    nonce: "nonce-0123456789abcdef",
    iat: now,
    exp: now + 30,
    aud: serverId,
    sub: "a1",
    kid,
  };
  peer.send({ v: 1, id: "c-1", type: "challenge", header, payload: claims });
  const response = await peer.expect("response");
  const verified = await verifyChallengeResponse(
    response.jws as string,
    hello.publicKey as PublicJwk,
    { header, claims },
  );
  assert.deepEqual(verified, claims);
  const welcomed = h.conn.welcomed();
  peer.send({
    v: 1,
    id: "w-1",
    type: "welcome",
    serverId,
    agentId: "a1",
    heartbeatMs: HEARTBEAT,
    maxFrameBytes: 1 << 20,
  });
  await welcomed;
  return hello;
}

/** Lets promise chains (microtasks only, no time passes) settle until `cond` holds. */
async function until(cond: () => boolean, what: string): Promise<void> {
  for (let i = 0; i < 1000; i++) {
    if (cond()) return;
    await Promise.resolve();
  }
  throw new Error(`still waiting for ${what}`);
}

/** Settles until the fake clock has `n` timers armed. */
function armed(clock: FakeClock, n = 1): Promise<void> {
  return until(() => clock.pending >= n, `${n} pending timers (have ${clock.pending})`);
}

Deno.test("Connection sends hello, signs the challenge and becomes connected on welcome", async () => {
  await using h = await harness();
  const peer = await h.transport.peer(0);
  assert.equal(peer.url, BASE);
  assert.equal(h.conn.connected, false);
  const hello = await handshake(h, peer);
  assert.equal(hello.v, 1);
  assert.equal(hello.agentId, "a1");
  assert.equal(hello.version, "0.1.0");
  assert.deepEqual(hello.tags, { role: "web" });
  assert.deepEqual(hello.publicKey, h.keyPair.publicJwk);
  assert.match(hello.id as string, /^[A-Za-z0-9]/);
  assert.equal(h.conn.connected, true);
  assert.equal(h.conn.serverId, "s1");
  assert.deepEqual(h.events, ["welcome:s1"]);
  await h.conn.welcomed(); // resolves at once while connected
});

Deno.test("Connection sends alive every heartbeatMs after the welcome", async () => {
  await using h = await harness();
  const peer = await h.transport.peer(0);
  await handshake(h, peer);
  const start = h.clock.now();
  await h.clock.advance(HEARTBEAT - 1);
  assert.equal(peer.received.filter((f) => f.type === "alive").length, 0);
  await h.clock.advance(1);
  const alive = await peer.expect("alive");
  assert.equal(alive.ts, start + HEARTBEAT);
  assert.equal(alive.running, 2);
  assert.equal(typeof alive.uptimeMs, "number");
  // A live server answers each alive (here: an ack), so the agent keeps the connection.
  for (let i = 0; i < 3; i++) {
    peer.send({ v: 1, id: `ack-${i}`, type: "ack", upTo: 0 });
    await h.clock.advance(HEARTBEAT);
  }
  const alives = peer.received.filter((f) => f.type === "alive");
  assert.deepEqual(alives.map((f) => f.ts), [1, 2, 3, 4].map((i) => start + i * HEARTBEAT));
  assert.equal(new Set(alives.map((f) => f.id)).size, 4);
  assert.equal(h.conn.connected, true);
});

Deno.test("Connection gives up on a server silent for three heartbeats and reconnects", async () => {
  await using h = await harness();
  const peer = await h.transport.peer(0);
  await handshake(h, peer);
  await h.clock.advance(3 * HEARTBEAT - 1);
  assert.equal(h.conn.connected, true, "not before the deadline");
  await h.clock.advance(1);
  assert.equal(h.conn.connected, false);
  assert.equal((await peer.closed).reason, "server went silent");
});

Deno.test("Connection passes acks on and sends the outbox stream in hello", async () => {
  const acks: number[] = [];
  await using h = await harness({ onAck: (n: number) => acks.push(n), stream: () => "o123" });
  const peer = await h.transport.peer(0);
  await handshake(h, peer);
  assert.equal(peer.received.find((f) => f.type === "hello")?.stream, "o123");
  peer.send({ v: 1, id: "k1", type: "ack", upTo: 41 });
  await h.clock.advance(0);
  assert.deepEqual(acks, [41]);
});

Deno.test("Connection backs off with full jitter between min and max, and resets on welcome", async () => {
  await using h = await harness({}, (t) => t.refuse(9));
  await h.transport.attempted(1);
  // float() = 0.5, so each delay is half its cap: 500·2^n capped at 30000.
  const delays = [250, 500, 1000, 2000, 4000, 8000, 15_000, 15_000, 15_000];
  for (const [i, delay] of delays.entries()) {
    await armed(h.clock);
    await h.clock.advance(delay - 1);
    assert.equal(h.transport.attempts.length, i + 1, `no early retry before ${delay}ms`);
    await h.clock.advance(1);
    await h.transport.attempted(i + 2);
  }
  const peer = await h.transport.peer(0);
  await handshake(h, peer);
  peer.close(1001, "server going away");
  await until(() => h.events.length === 2, "the disconnect");
  await armed(h.clock);
  assert.deepEqual(h.events, ["welcome:s1", "disconnect"]);
  assert.equal(h.conn.connected, false);
  await h.clock.advance(249);
  assert.equal(h.transport.attempts.length, delays.length + 1);
  await h.clock.advance(1);
  await h.transport.attempted(delays.length + 2);
});

Deno.test("Connection retries no later than the backoff cap for low and high random draws", async (t) => {
  for (const f of [0.001, 0.999999]) {
    await t.step(`float() = ${f}`, async () => {
      await using h = await harness({ random: fixedRandom(f) }, (t) => (t.refuseAll = true));
      await h.transport.attempted(1);
      for (let i = 0; i < 8; i++) {
        const cap = Math.min(30_000, 500 * 2 ** i);
        await armed(h.clock);
        await h.clock.advance(cap);
        await h.transport.attempted(i + 2);
      }
    });
  }
});

Deno.test("Connection follows redirects, then backs off on the configured server after 5 hops", async () => {
  await using h = await harness();
  for (let i = 0; i < 6; i++) {
    const peer = await h.transport.peer(i);
    await peer.expect("hello");
    peer.send({
      v: 1,
      id: `r-${i}`,
      type: "redirect",
      url: `http://127.0.0.${i + 2}:7400`,
      reason: "not the owner",
    });
    await peer.closed;
    assert.deepEqual(peer.closeInfo, { code: 1000, reason: "redirected" });
  }
  await armed(h.clock);
  assert.deepEqual(h.transport.attempts, [
    BASE,
    "ws://127.0.0.2:7400/v1/agent",
    "ws://127.0.0.3:7400/v1/agent",
    "ws://127.0.0.4:7400/v1/agent",
    "ws://127.0.0.5:7400/v1/agent",
    "ws://127.0.0.6:7400/v1/agent",
  ]);
  await h.clock.advance(250);
  await h.transport.attempted(7);
  assert.equal(h.transport.attempts[6], BASE);
});

Deno.test("Connection answers a bad frame with an error frame, audits it, and stays up", async (t) => {
  await using h = await harness();
  const peer = await h.transport.peer(0);
  await handshake(h, peer);
  const cases: [string, object | string, string, string | undefined][] = [
    ["not JSON", "{nope", "bad_json", undefined],
    ["unknown type", { v: 1, id: "u-1", type: "launch" }, "unknown_type", "u-1"],
    [
      "bad command",
      { v: 1, id: "b-1", type: "command", job: { key: "BAD" } },
      "invalid_message",
      "b-1",
    ],
    [
      "too large",
      JSON.stringify({ v: 1, id: "l-1", pad: "x".repeat(70_000) }),
      "frame_too_large",
      undefined,
    ],
    [
      "challenge after welcome",
      {
        v: 1,
        id: "c-2",
        type: "challenge",
        header: { alg: "EdDSA", typ: "JWT", kid: "k" },
        payload: { nonce: "0123456789abcdef", iat: 1, exp: 2, aud: "s1", sub: "a1", kid: "k" },
      },
      "unexpected_message",
      "c-2",
    ],
  ];
  for (const [name, frame, code, ref] of cases) {
    await t.step(name, async () => {
      peer.send(frame);
      const reply = await peer.expect("error");
      assert.equal((reply.error as { code: string }).code, code);
      assert.equal(reply.ref, ref);
      assert.equal(h.conn.connected, true);
      assert.equal(peer.isClosed, false);
    });
  }
  const rejected = h.audit.filter((e) => e.action === "frame.rejected");
  assert.equal(rejected.length, cases.length);
  assert.equal(rejected[0].actor, "server:s1");
  assert.equal(rejected[0].outcome, "denied");
});

Deno.test("Connection delivers commands after the welcome and refuses them before", async () => {
  await using h = await harness();
  const peer = await h.transport.peer(0);
  await peer.expect("hello");
  const command = { v: 1, id: "cmd-1", type: "command", job: { key: "exec.run", args: {} } };
  peer.send(command);
  const early = await peer.expect("error");
  assert.equal(early.ref, "cmd-1");
  assert.equal((early.error as { code: string }).code, "unexpected_message");
  assert.equal(h.commands.length, 0);
  // Finish the handshake on a fresh connection.
  peer.close();
  await armed(h.clock);
  await h.clock.advance(250);
  const second = await h.transport.peer(1);
  await handshake(h, second, "s9");
  second.send({ ...command, meta: { a: { b: [1] } } });
  await until(() => h.commands.length === 1, "the command");
  assert.equal(h.commands[0][0].id, "cmd-1");
  assert.deepEqual(h.commands[0][0].meta, { a: { b: [1] } });
  assert.equal(h.commands[0][1], "s9");
});

Deno.test("Connection drops a challenge for another agent or key and retries later", async (t) => {
  const cases: [string, string, string | undefined][] = [
    ["other agent", "a2", undefined],
    ["other key", "a1", "k-x"],
  ];
  for (const [name, sub, kid] of cases) {
    await t.step(name, async () => {
      await using h = await harness();
      const peer = await h.transport.peer(0);
      await peer.expect("hello");
      const k = kid ?? h.keyPair.kid;
      peer.send({
        v: 1,
        id: "c-1",
        type: "challenge",
        header: { alg: "EdDSA", typ: "JWT", kid: k },
        payload: { nonce: "0123456789abcdef", iat: 1, exp: 2, aud: "s1", sub, kid: k },
      });
      const info = await peer.closed;
      assert.equal(info.code, 4000);
      assert.equal(peer.received.some((f) => f.type === "response"), false);
      assert.equal(h.audit.at(-1)?.action, "handshake.failed");
      await armed(h.clock);
      await h.clock.advance(250);
      await h.transport.attempted(2);
    });
  }
});

Deno.test("Connection gives up on a handshake that does not finish in time", async () => {
  await using h = await harness({ handshakeTimeoutMs: 5000 });
  const peer = await h.transport.peer(0);
  await peer.expect("hello");
  await h.clock.advance(4999);
  assert.equal(peer.isClosed, false);
  await h.clock.advance(1);
  assert.deepEqual(await peer.closed, { code: 4000, reason: "handshake timeout" });
});

Deno.test("Connection abandons a connect that does not open in time", async () => {
  await using h = await harness({ handshakeTimeoutMs: 5000 }, (t) => (t.hangAll = true));
  await h.transport.attempted(1);
  await h.clock.advance(4999);
  assert.equal(h.transport.attempts.length, 1);
  await h.clock.advance(1);
  await armed(h.clock);
  h.transport.hangAll = false;
  await h.clock.advance(250);
  await h.transport.attempted(2);
  await handshake(h, await h.transport.peer(0));
});

Deno.test("Connection logs an error frame during the handshake and waits for the server to close", async () => {
  await using h = await harness();
  const peer = await h.transport.peer(0);
  await peer.expect("hello");
  peer.send({ v: 1, id: "e-1", type: "error", error: { code: "key_mismatch", message: "no" } });
  peer.close(4001, "key_mismatch");
  await armed(h.clock);
  assert.equal(peer.received.length, 1);
  await h.clock.advance(250);
  await h.transport.attempted(2);
});

Deno.test("Connection.close() closes with 1000, stops retrying and rejects welcomed()", async (t) => {
  await t.step("while connected", async () => {
    const h = await harness();
    const peer = await h.transport.peer(0);
    await handshake(h, peer);
    await h.conn.close();
    assert.deepEqual(peer.closeInfo, { code: 1000, reason: "agent stopping" });
    assert.equal(h.conn.connected, false);
    assert.equal(
      h.conn.send({ v: 1, id: "x", type: "alive", ts: 1, uptimeMs: 1, running: 0 }),
      false,
    );
    await assert.rejects(h.conn.welcomed(), (e) => isJwError(e, "closed"));
    assert.equal(h.clock.pending, 0);
    await h.conn.close();
  });
  await t.step("while backing off", async () => {
    const h = await harness({}, (t) => (t.refuseAll = true));
    await h.transport.attempted(1);
    await armed(h.clock);
    const waiting = h.conn.welcomed();
    await h.conn.close();
    await assert.rejects(waiting, (e) => isJwError(e, "closed"));
    assert.equal(h.clock.pending, 0);
    await h.clock.advance(60_000);
    assert.equal(h.transport.attempts.length, 1);
  });
});
