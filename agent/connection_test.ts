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
import type { DnsBackend } from "../shared/dns.ts";
import { rank } from "../shared/lrw.ts";
import type { ServerEntry } from "../shared/protocol/mod.ts";
import { type Connection, type ConnectionOptions, startConnection } from "./connection.ts";
import { createDiscovery } from "./discovery.ts";
import { agentUrl } from "./url.ts";
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
  /** Every list passed to `onServers`. */
  lists: ServerEntry[][];
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
  const lists: ServerEntry[][] = [];
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
    onServers: (list) => lists.push(list),
    ...over,
  });
  return {
    clock,
    transport,
    keyPair,
    audit,
    commands,
    events,
    lists,
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
  // A lost connection is retried after float() · failoverMs (5000 by default)…
  await h.clock.advance(2499);
  assert.equal(h.transport.attempts.length, delays.length + 1);
  await h.clock.advance(1);
  await h.transport.attempted(delays.length + 2);
  // …and a failure after that backs off from the first step again: the welcome reset it.
  h.transport.peers.at(-1)!.close(1001, "still going away");
  await armed(h.clock);
  await h.clock.advance(249);
  assert.equal(h.transport.attempts.length, delays.length + 2);
  await h.clock.advance(1);
  await h.transport.attempted(delays.length + 3);
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
    const hello = await peer.expect("hello");
    assert.equal(hello.hops, i === 0 ? undefined : i, "hello.hops counts the redirects");
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
  assert.equal((await (await h.transport.peer(6)).expect("hello")).hops, undefined);
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

/** A cluster of four servers; s1 is the harness's configured server. */
const SERVERS: ServerEntry[] = [1, 2, 3, 4].map((i) => ({
  id: `s${i}`,
  url: `http://127.0.0.${i}:7400`,
  health: 0,
}));

/** The agent URLs of `servers` ranked for agent a1. */
function rankedUrls(servers: readonly ServerEntry[]): string[] {
  return rank("a1", servers).map((server) => agentUrl(server.url));
}

function serversFrame(servers: unknown[], id = "l-1"): object {
  return { v: 1, id, type: "servers", servers };
}

Deno.test("Connection tries DNS SRV targets, then seeds, then the remembered servers ranked", async (t) => {
  const dnsBackend: DnsBackend = {
    srv: (name) =>
      Promise.resolve(
        name === "_jw._tcp.example.test"
          ? [{ priority: 0, weight: 0, port: 7400, target: "dns.example.test." }]
          : [],
      ),
    addresses: () => Promise.resolve([]),
  };
  const dnsUrl = "ws://dns.example.test:7400/v1/agent";
  const seedUrl = "ws://seed.example.test:7400/v1/agent";
  const remembered = rankedUrls(SERVERS);
  await t.step("DNS, seeds and a remembered list", async () => {
    const discovery = createDiscovery({
      dns: { name: "_jw._tcp.example.test" },
      seeds: ["http://seed.example.test:7400"],
      logger: silentLogger,
      clock: new FakeClock(),
      random: fixedRandom(0.5),
      dnsBackend,
    });
    await using h = await harness(
      { server: undefined, discovery, servers: SERVERS },
      (t) => (t.refuseAll = true),
    );
    for (let i = 1; i < 8; i++) {
      await h.transport.attempted(i);
      await armed(h.clock);
      await h.clock.advance(30_000);
    }
    await h.transport.attempted(8);
    // Round two skips the remembered servers that just failed; DNS and seeds stay.
    assert.deepEqual(h.transport.attempts.slice(0, 8), [
      dnsUrl,
      seedUrl,
      ...remembered,
      dnsUrl,
      seedUrl,
    ]);
    // A minute later they have been forgiven.
    await h.clock.advance(60_000);
    await armed(h.clock);
    const before = h.transport.attempts.length;
    for (let i = 0; i < 4; i++) {
      await armed(h.clock);
      await h.clock.advance(30_000);
    }
    assert.ok(
      h.transport.attempts.slice(before).includes(remembered[0]),
      `remembered servers are tried again: ${h.transport.attempts.slice(before)}`,
    );
  });
  await t.step("only a remembered list", async () => {
    await using h = await harness({ server: undefined, servers: SERVERS });
    await h.transport.attempted(1);
    assert.deepEqual(h.transport.attempts, [remembered[0]]);
    await handshake(h, await h.transport.peer(0), rank("a1", SERVERS)[0].id);
    assert.deepEqual(h.conn.servers, SERVERS);
  });
  await t.step("nothing at all is a config error", () => {
    assert.throws(
      () =>
        startConnection({
          agentId: "a1",
          keyPair: sharedKey!,
          tags: () => ({}),
          reconnect: { min: 500, max: 30_000 },
          maxFrame: 1024,
          transport: new FakeTransport(),
          clock: new FakeClock(),
          random: fixedRandom(0.5),
          logger: silentLogger,
          audit: { append: () => {} },
          running: () => 0,
        }),
      (e) => isJwError(e, "config") && /no server to connect to/.test(e.message),
    );
  });
});

Deno.test("Connection moves to the next-ranked live server when its server is lost", async () => {
  await using h = await harness();
  const first = await h.transport.peer(0);
  await handshake(h, first, "s1");
  first.send(serversFrame(SERVERS));
  await until(() => h.lists.length === 1, "the server list");
  assert.deepEqual(h.lists[0], SERVERS);
  assert.deepEqual(h.conn.servers, SERVERS);
  // s1 dies. Its agents go to their next-ranked server, not back to the seed (s1 itself).
  const survivors = rank("a1", SERVERS).filter((s) => s.id !== "s1");
  first.close(1006, "");
  await until(() => h.events.includes("disconnect"), "the disconnect");
  await armed(h.clock);
  await h.clock.advance(2499); // float() · failoverMs = 0.5 · 5000
  assert.equal(h.transport.attempts.length, 1);
  await h.clock.advance(1);
  await h.transport.attempted(2);
  assert.equal(h.transport.attempts[1], agentUrl(survivors[0].url));
  const second = await h.transport.peer(1);
  const hello = await second.expect("hello");
  assert.deepEqual(hello.avoid, ["s1"], "the lost server is named in avoid");
  assert.deepEqual(hello.avoidAgo, [2500], "lost 2.5 s ago");
  assert.equal(hello.hops, undefined);
  // That one does not answer either: back off, then the third-ranked, avoiding both.
  second.close(1006, "");
  await armed(h.clock);
  await h.clock.advance(250);
  await h.transport.attempted(3);
  assert.equal(h.transport.attempts[2], agentUrl(survivors[1].url));
  const third = await h.transport.peer(2);
  const welcomedHello = await handshake(h, third, survivors[1].id);
  assert.deepEqual(welcomedHello.avoid, [survivors[0].id, "s1"], "most recent first");
  assert.deepEqual(welcomedHello.avoidAgo, [250, 2750]);
  assert.equal(h.conn.serverId, survivors[1].id);
});

Deno.test("Connection waits retryAfter before following a redirect, during the handshake and after the welcome", async () => {
  await using h = await harness();
  const first = await h.transport.peer(0);
  await first.expect("hello");
  first.send({
    v: 1,
    id: "r-1",
    type: "redirect",
    url: "http://127.0.0.2:7400",
    reason: "owned by s2",
    retryAfter: 3000,
  });
  assert.deepEqual(await first.closed, { code: 1000, reason: "redirected" });
  await armed(h.clock);
  await h.clock.advance(2999);
  assert.equal(h.transport.attempts.length, 1, "not before retryAfter");
  await h.clock.advance(1);
  await h.transport.attempted(2);
  assert.equal(h.transport.attempts[1], "ws://127.0.0.2:7400/v1/agent");
  const second = await h.transport.peer(1);
  const hello = await handshake(h, second, "s2");
  assert.equal(hello.hops, 1);
  // A handoff after the welcome: the agent stays connected (and serving) through its wait,
  // then goes; the welcome ended the row of hops.
  second.send({
    v: 1,
    id: "r-2",
    type: "redirect",
    url: "http://127.0.0.3:7400",
    reason: "owned by s3",
    retryAfter: 1500,
  });
  await armed(h.clock);
  await h.clock.advance(1499);
  assert.equal(h.conn.connected, true, "still connected during the wait");
  assert.equal(h.transport.attempts.length, 2, "not before retryAfter");
  await h.clock.advance(1);
  assert.deepEqual(await second.closed, { code: 1000, reason: "handed off" });
  await h.transport.attempted(3);
  assert.equal(h.transport.attempts[2], "ws://127.0.0.3:7400/v1/agent");
  const third = await handshake(h, await h.transport.peer(2), "s3");
  assert.equal(third.hops, 1);
  assert.equal(third.avoid, undefined, "a handoff is not a failure");
  assert.equal(h.conn.serverId, "s3");
});

Deno.test("Connection goes back to its candidates when a redirect target cannot be reached", async () => {
  await using h = await harness({ servers: SERVERS });
  const first = await h.transport.peer(0);
  await first.expect("hello");
  h.transport.refuse(1);
  first.send({ v: 1, id: "r-1", type: "redirect", url: SERVERS[1].url, reason: "owned by s2" });
  await h.transport.attempted(2);
  assert.equal(h.transport.attempts[1], agentUrl(SERVERS[1].url));
  await armed(h.clock);
  await h.clock.advance(250);
  await h.transport.attempted(3);
  // The round goes on: the seed was tried, so the remembered list ranked, without s2.
  const next = rank("a1", SERVERS).filter((s) => s.url !== SERVERS[0].url && s.id !== "s2")[0];
  assert.equal(h.transport.attempts[2], agentUrl(next.url));
  const hello = await (await h.transport.peer(1)).expect("hello");
  assert.deepEqual(hello.avoid, ["s2"]);
});

Deno.test("Connection rejects a bad servers frame with an error frame and keeps its list", async (t) => {
  await t.step("before the welcome", async () => {
    await using h = await harness();
    const peer = await h.transport.peer(0);
    await peer.expect("hello");
    peer.send(serversFrame(SERVERS, "l-0"));
    const reply = await peer.expect("error");
    assert.equal(reply.ref, "l-0");
    assert.equal((reply.error as { code: string }).code, "unexpected_message");
    assert.deepEqual(h.lists, []);
  });
  await using h = await harness();
  const peer = await h.transport.peer(0);
  await handshake(h, peer);
  peer.send(serversFrame(SERVERS));
  await until(() => h.lists.length === 1, "the server list");
  const cases: [string, unknown[], RegExp][] = [
    ["negative health", [{ id: "s9", url: "http://127.0.0.9:7400", health: -1 }], /health/],
    ["missing url", [{ id: "s9", health: 0 }], /url/],
    ["unknown field", [{ id: "s9", url: "http://127.0.0.9:7400", health: 0, x: 1 }], /x/],
    ["not an agent URL", [{ id: "s9", url: "ftp://127.0.0.9/", health: 0 }], /servers\.0\.url/],
    ["an id twice", [SERVERS[0], { ...SERVERS[1], id: "s1" }], /servers\.1\.id.*twice/],
  ];
  for (const [name, servers, message] of cases) {
    await t.step(name, async () => {
      peer.send(serversFrame(servers, "l-bad"));
      const reply = await peer.expect("error");
      const error = reply.error as { code: string; message: string };
      assert.equal(reply.ref, "l-bad");
      assert.equal(error.code, "invalid_message");
      assert.match(error.message, message);
      assert.deepEqual(h.conn.servers, SERVERS, "the list is unchanged");
      assert.equal(h.conn.connected, true);
    });
  }
  assert.equal(h.lists.length, 1);
  assert.equal(h.audit.filter((e) => e.action === "frame.rejected").length, cases.length);
});
