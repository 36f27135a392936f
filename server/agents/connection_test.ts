import assert from "node:assert/strict";
import { type Ed25519KeyPair, generateKeyPair, signChallenge } from "../../shared/crypto/mod.ts";
import type { Challenge, RelayedReply } from "../../shared/protocol/mod.ts";
import { createFixture, FakeSocket, type Fixture, testRandom } from "../_testing.ts";
import {
  ACK_DELAY_MS,
  type AgentConnection,
  BAD_FRAME_WINDOW_MS,
  CLOSE_HANDSHAKE_FAILED,
  CLOSE_TOO_MANY_BAD_FRAMES,
  closeReason,
  createConnection,
  MAX_BAD_FRAMES,
} from "./connection.ts";
import { createHandshake } from "./handshake.ts";
import { createAgentGateway } from "./gateway.ts";

const LIMITS = { maxFrameBytes: 4096, handshakeTimeoutMs: 10_000, heartbeatMs: 15_000 };

function deps(f: Fixture) {
  return {
    serverId: "s1",
    limits: LIMITS,
    handshake: createHandshake({
      serverId: "s1",
      challengeTtlMs: 30_000,
      keys: f.store,
      clock: f.clock,
      random: testRandom,
    }),
    registry: f.registry,
    bus: f.bus,
    audit: f.audit,
    clock: f.clock,
    random: testRandom,
    delivery: f.store,
  };
}

function hello(
  agentId: string,
  keys: Ed25519KeyPair,
  tags: Record<string, string> = {},
  stream?: string,
) {
  return JSON.stringify({
    v: 1,
    id: "hello-1",
    type: "hello",
    agentId,
    publicKey: keys.publicJwk,
    version: "0.1.0",
    tags,
    ...(stream ? { stream } : {}),
  });
}

/** Runs the handshake on `conn` and returns once welcomed. */
async function handshake(
  conn: AgentConnection,
  socket: FakeSocket,
  agentId: string,
  keys: Ed25519KeyPair,
  tags: Record<string, string> = {},
  stream?: string,
) {
  await conn.receive(hello(agentId, keys, tags, stream));
  const challenge = socket.last as unknown as Challenge;
  assert.equal(challenge.type, "challenge");
  const jws = await signChallenge(keys.privateKey, challenge.header, challenge.payload);
  await conn.receive(JSON.stringify({ v: 1, id: "resp-1", type: "response", jws }));
}

function output(id: string, extra: Record<string, unknown> = {}) {
  return JSON.stringify({
    v: 1,
    id,
    type: "output",
    job: { id: "j1", key: "exec.run" },
    seq: 0,
    ts: 1,
    text: "hi",
    ...extra,
  });
}

Deno.test("AgentConnection completes the handshake and sends welcome", async () => {
  using f = createFixture();
  const socket = new FakeSocket();
  const conn = createConnection(socket, "10.0.0.1:5555", deps(f));
  const keys = await generateKeyPair();
  await handshake(conn, socket, "a1", keys, { role: "web" });
  assert.equal(conn.state, "ready");
  assert.equal(conn.agentId, "a1");
  const welcome = socket.last!;
  assert.equal(welcome.type, "welcome");
  assert.deepEqual({ ...welcome, id: undefined }, {
    v: 1,
    id: undefined,
    type: "welcome",
    serverId: "s1",
    agentId: "a1",
    heartbeatMs: 15_000,
    maxFrameBytes: 4096,
  });
  const challenge = socket.sent[0] as unknown as Challenge;
  assert.equal(challenge.payload.aud, "s1");
  assert.equal(challenge.payload.sub, "a1");
  assert.equal(challenge.header.kid, keys.kid);
  assert.equal(f.registry.get("a1")?.address, "10.0.0.1:5555");
  assert.deepEqual(f.registry.get("a1")?.tags, { role: "web" });
  assert.deepEqual(f.store.pinnedKey("a1"), keys.publicJwk);
  const ok = f.audit.list({ action: "handshake.ok" });
  assert.equal(ok.length, 1);
  assert.equal(ok[0].actor, "agent:a1");
  assert.equal(f.clock.pending, 0, "the handshake timer is cleared");
  assert.equal(socket.closedWith, undefined);

  conn.closed(1000, "bye");
  assert.equal(f.registry.get("a1"), undefined);
  assert.equal(conn.state, "closed");
});

Deno.test("AgentConnection closes with 4001 timeout when the handshake is too slow", async () => {
  using f = createFixture();
  const socket = new FakeSocket();
  const conn = createConnection(socket, "10.0.0.1:5555", deps(f));
  await conn.receive(hello("a1", await generateKeyPair()));
  await f.clock.advance(LIMITS.handshakeTimeoutMs);
  assert.deepEqual(socket.closedWith, { code: CLOSE_HANDSHAKE_FAILED, reason: "timeout" });
  assert.equal((socket.last?.error as { code: string }).code, "timeout");
  assert.equal(conn.state, "closed");
  const failed = f.audit.list({ action: "handshake.failed" });
  assert.equal(failed.length, 1);
  assert.match(failed[0].reason ?? "", /^timeout: /);
  assert.equal(failed[0].actor, "agent:a1");
});

Deno.test("AgentConnection fails the handshake on bad input", async (t) => {
  const keys = await generateKeyPair();
  const thief = await generateKeyPair();
  const send = (...frames: string[]) => async (conn: AgentConnection) => {
    for (const frame of frames) await conn.receive(frame);
  };
  const cases: {
    name: string;
    drive: (conn: AgentConnection, socket: FakeSocket) => Promise<void>;
    code: string;
    ref?: string;
  }[] = [
    {
      name: "output before welcome",
      drive: send(output("o-1")),
      code: "unexpected_message",
      ref: "o-1",
    },
    { name: "bad json", drive: send("{nope"), code: "bad_json" },
    {
      name: "unknown type",
      drive: send('{"v":1,"id":"x-1","type":"shout"}'),
      code: "unknown_type",
      ref: "x-1",
    },
    {
      name: "oversized hello",
      drive: send(hello("a1", keys).padEnd(5000, " ")),
      code: "frame_too_large",
    },
    {
      name: "hello twice",
      drive: send(hello("a1", keys), hello("a1", keys)),
      code: "unexpected_message",
      ref: "hello-1",
    },
    {
      name: "binary garbage",
      drive: (conn) => conn.receive(new Uint8Array([0xff, 0xfe, 0x00])),
      code: "bad_json",
    },
    {
      name: "signed by another key",
      drive: async (conn, socket) => {
        await conn.receive(hello("a1", keys));
        const challenge = socket.last as unknown as Challenge;
        const jws = await signChallenge(thief.privateKey, challenge.header, challenge.payload);
        await conn.receive(JSON.stringify({ v: 1, id: "resp-1", type: "response", jws }));
      },
      code: "bad_signature",
      ref: "resp-1",
    },
  ];
  for (const c of cases) {
    await t.step(c.name, async () => {
      using f = createFixture();
      const socket = new FakeSocket();
      const conn = createConnection(socket, "10.0.0.1:5555", deps(f));
      await c.drive(conn, socket);
      assert.equal(socket.closedWith?.code, CLOSE_HANDSHAKE_FAILED);
      assert.ok(socket.closedWith!.reason.startsWith(c.code), socket.closedWith!.reason);
      assert.ok(new TextEncoder().encode(socket.closedWith!.reason).length <= 120);
      const err = socket.last!;
      assert.equal(err.type, "error");
      assert.equal((err.error as { code: string }).code, c.code);
      assert.equal(err.ref, c.ref);
      const failed = f.audit.list({ action: "handshake.failed" });
      assert.equal(failed.length, 1);
      assert.match(failed[0].reason ?? "", new RegExp(`^${c.code}: `));
      assert.equal(f.registry.connected, 0);
      assert.equal(f.clock.pending, 0);
      assert.equal(conn.state, "closed");
    });
  }
});

Deno.test("AgentConnection rejects a key other than the pinned one at hello", async () => {
  using f = createFixture();
  const owner = await generateKeyPair();
  f.store.pin("a1", owner.publicJwk, owner.kid);
  const socket = new FakeSocket();
  const conn = createConnection(socket, "10.0.0.1:5555", deps(f));
  await conn.receive(hello("a1", await generateKeyPair()));
  assert.equal(socket.ofType("challenge").length, 0);
  assert.equal(socket.closedWith?.code, CLOSE_HANDSHAKE_FAILED);
  assert.match(socket.closedWith!.reason, /^key_mismatch/);
});

Deno.test("AgentConnection after welcome: bad frames get errors, the connection stays", async () => {
  using f = createFixture();
  const socket = new FakeSocket();
  const conn = createConnection(socket, "10.0.0.1:5555", deps(f));
  await handshake(conn, socket, "a1", await generateKeyPair());
  const relayed: RelayedReply[] = [];
  f.bus.subscribe({}, (r) => relayed.push(r));

  await conn.receive(output("big-1", { text: "x".repeat(5000) }));
  await conn.receive("not json");
  await conn.receive(output("bad-1", { seq: -1 }));
  await conn.receive(hello("a1", await generateKeyPair()));
  const errors = socket.ofType("error");
  assert.deepEqual(errors.map((e) => (e.error as { code: string }).code), [
    "frame_too_large",
    "bad_json",
    "invalid_message",
    "unexpected_message",
  ]);
  assert.deepEqual(errors.map((e) => e.ref), [undefined, undefined, "bad-1", "hello-1"]);
  assert.equal(socket.closedWith, undefined);
  assert.equal(conn.state, "ready");
  const rejected = f.audit.list({ action: "frame.rejected" });
  assert.equal(rejected.length, 4);
  assert.equal(rejected[0].actor, "agent:a1");
  assert.equal(rejected[0].outcome, "denied");

  await conn.receive(output("ok-1"));
  assert.equal(relayed.length, 1);
  assert.equal(relayed[0].agent, "a1");
  assert.equal(relayed[0].id, "ok-1");
});

Deno.test("AgentConnection closes a connection that keeps sending bad frames", async () => {
  using f = createFixture();
  const socket = new FakeSocket();
  const conn = createConnection(socket, "10.0.0.1:5555", deps(f));
  await handshake(conn, socket, "a1", await generateKeyPair());
  for (let i = 0; i < MAX_BAD_FRAMES; i++) await conn.receive("not json");
  assert.equal(conn.state, "ready", "tolerated up to the limit");
  await f.clock.advance(BAD_FRAME_WINDOW_MS);
  for (let i = 0; i < MAX_BAD_FRAMES; i++) await conn.receive("not json");
  assert.equal(conn.state, "ready", "the window starts over");
  await conn.receive("not json");
  assert.equal(conn.state, "closed");
  assert.deepEqual(socket.closedWith, {
    code: CLOSE_TOO_MANY_BAD_FRAMES,
    reason: "too many bad frames",
  });
  assert.equal(f.audit.list({ action: "frame.rejected" }).length, 2 * MAX_BAD_FRAMES);
  assert.equal(f.audit.list({ action: "connection.closed" }).length, 1);
});

Deno.test("AgentConnection relays output, log and setTag, and handles alive", async () => {
  using f = createFixture();
  const socket = new FakeSocket();
  const conn = createConnection(socket, "10.0.0.1:5555", deps(f));
  await handshake(conn, socket, "a1", await generateKeyPair(), { role: "web", env: "prod" });
  const relayed: RelayedReply[] = [];
  f.bus.subscribe({ tag: { name: "role", value: "db" } }, (r) => relayed.push(r));

  await f.clock.advance(20_000);
  await conn.receive(
    JSON.stringify({ v: 1, id: "al-1", type: "alive", ts: 5, uptimeMs: 9, running: 0 }),
  );
  assert.equal(f.registry.get("a1")?.lastSeen, f.clock.now());
  await conn.receive(JSON.stringify({
    v: 1,
    id: "tag-1",
    type: "setTag",
    ts: 5,
    tags: { role: "db", env: null },
  }));
  assert.deepEqual(f.registry.get("a1")?.tags, { role: "db" });
  assert.deepEqual(f.store.get("a1")?.tags, { role: "db" });
  await conn.receive(new TextEncoder().encode(output("bin-1")));
  await conn.receive(JSON.stringify({
    v: 1,
    id: "log-1",
    type: "log",
    job: { id: "j1", key: "exec.run" },
    seq: 1,
    ts: 2,
    level: "info",
    message: "m",
  }));
  assert.deepEqual(relayed.map((r) => [r.type, r.id, r.agent]), [
    ["setTag", "tag-1", "a1"],
    ["output", "bin-1", "a1"],
    ["log", "log-1", "a1"],
  ]);
  assert.equal(socket.ofType("error").length, 0);
});

Deno.test("AgentConnection keeps frame order while the handshake is in flight", async () => {
  using f = createFixture();
  const socket = new FakeSocket();
  const conn = createConnection(socket, "10.0.0.1:5555", deps(f));
  const keys = await generateKeyPair();
  await conn.receive(hello("a1", keys));
  const challenge = socket.last as unknown as Challenge;
  const jws = await signChallenge(keys.privateKey, challenge.header, challenge.payload);
  const relayed: RelayedReply[] = [];
  f.bus.subscribe({}, (r) => relayed.push(r));
  // The response needs an async verify; the output sent right behind it must wait for it.
  const a = conn.receive(JSON.stringify({ v: 1, id: "resp-1", type: "response", jws }));
  const b = conn.receive(output("after-1"));
  await Promise.all([a, b]);
  assert.equal(conn.state, "ready");
  assert.deepEqual(relayed.map((r) => r.id), ["after-1"]);
});

Deno.test("AgentConnection refuses a flood of frames during the handshake", async () => {
  using f = createFixture();
  const socket = new FakeSocket();
  const conn = createConnection(socket, "10.0.0.1:5555", deps(f));
  const keys = await generateKeyPair();
  const pending = [conn.receive(hello("a1", keys))];
  for (let i = 0; i < 100; i++) pending.push(conn.receive(output(`o-${i}`)));
  await Promise.all(pending);
  assert.equal(socket.closedWith?.code, CLOSE_HANDSHAKE_FAILED);
  assert.equal(conn.state, "closed");
  assert.equal(f.audit.list({ action: "handshake.failed" }).length, 1);
  assert.equal(socket.ofType("error").length, 1);
});

Deno.test("AgentGateway.close() closes every connection with 1001", async () => {
  using f = createFixture();
  const gateway = createAgentGateway(deps(f));
  const ready = new FakeSocket();
  const waiting = new FakeSocket();
  const conn = gateway.accept(ready, "10.0.0.1:1");
  gateway.accept(waiting, "10.0.0.1:2");
  await handshake(conn, ready, "a1", await generateKeyPair());
  assert.equal(gateway.size, 2);
  gateway.close();
  assert.deepEqual(ready.closedWith, { code: 1001, reason: "server closing" });
  assert.deepEqual(waiting.closedWith, { code: 1001, reason: "server closing" });
  assert.equal(gateway.size, 0);
  assert.equal(f.registry.connected, 0);
  assert.equal(f.clock.pending, 0);
  const late = new FakeSocket();
  assert.equal(gateway.accept(late, "10.0.0.1:3").state, "closed");
  assert.equal(late.closedWith?.code, 1001);
});

Deno.test("AgentGateway refuses sockets past the pending-handshake limit with 1013", async () => {
  using f = createFixture();
  const gateway = createAgentGateway(deps(f), 2);
  const first = new FakeSocket();
  const conn = gateway.accept(first, "10.0.0.1:1");
  gateway.accept(new FakeSocket(), "10.0.0.1:2");
  const third = new FakeSocket();
  assert.equal(gateway.accept(third, "10.0.0.1:3").state, "closed");
  assert.deepEqual(third.closedWith, { code: 1013, reason: "too many handshakes in flight" });
  await handshake(conn, first, "a1", await generateKeyPair());
  const fourth = new FakeSocket();
  assert.equal(
    gateway.accept(fourth, "10.0.0.1:4").state,
    "hello",
    "a finished handshake frees a slot",
  );
  gateway.close();
});

Deno.test("closeReason() keeps at most 120 UTF-8 bytes on a character boundary", () => {
  assert.equal(closeReason("timeout"), "timeout");
  const long = closeReason("é".repeat(100));
  assert.equal(new TextEncoder().encode(long).length, 120);
  assert.equal(closeReason("x".repeat(500)).length, 120);
});

Deno.test("AgentConnection acknowledges replies in batches, answers alive, and drops resends", async () => {
  using f = createFixture();
  const keys = await generateKeyPair();
  const relayed: RelayedReply[] = [];
  f.bus.subscribe({}, (r) => relayed.push(r));
  const socket = new FakeSocket();
  const conn = createConnection(socket, "10.0.0.1:5555", deps(f));
  await handshake(conn, socket, "a1", keys, {}, "o1");
  await conn.receive(output("e1", { dseq: 1 }));
  await conn.receive(output("e1", { dseq: 2 }));
  assert.equal(socket.ofType("ack").length, 0, "batched");
  await f.clock.advance(ACK_DELAY_MS);
  assert.deepEqual(socket.ofType("ack").map((a) => a.upTo), [2]);
  await conn.receive(output("e1", { dseq: 2 }));
  assert.equal(relayed.length, 2, "a resent reply is not relayed again");
  await conn.receive(
    JSON.stringify({ v: 1, id: "al", type: "alive", ts: 1, uptimeMs: 1, running: 0 }),
  );
  assert.deepEqual(socket.ofType("ack").map((a) => a.upTo), [2, 2], "alive is answered at once");
  conn.closed(1006, "");
  assert.deepEqual(f.store.delivery("a1"), { stream: "o1", dseq: 2 }, "persisted on close");

  // The same outbox after a reconnect: numbers continue, old ones are dropped.
  const again = new FakeSocket();
  const conn2 = createConnection(again, "10.0.0.1:5556", deps(f));
  await handshake(conn2, again, "a1", keys, {}, "o1");
  await conn2.receive(output("e1", { dseq: 1 }));
  await conn2.receive(output("e1", { dseq: 3 }));
  assert.deepEqual(relayed.map((r) => r.dseq), [1, 2, 3]);
  conn2.closed(1000, "");

  // A new outbox (database recreated): numbering starts over.
  const fresh = new FakeSocket();
  const conn3 = createConnection(fresh, "10.0.0.1:5557", deps(f));
  await handshake(conn3, fresh, "a1", keys, {}, "o2");
  await conn3.receive(output("e2", { dseq: 1 }));
  assert.deepEqual(relayed.map((r) => r.dseq), [1, 2, 3, 1]);
  conn3.closed(1000, "");
  assert.equal(f.clock.pending, 0, "no ack timer left behind");
});

Deno.test("AgentConnection with placement: redirect instead of welcome, or welcome + server list", async () => {
  using f = createFixture();
  const keys = await generateKeyPair();
  const welcomed: { agent: string; framesBefore: string[] }[] = [];
  let socket = new FakeSocket();
  const withPlacement = (decide: "here" | "there") => ({
    ...deps(f),
    onWelcomed: (agent: string) =>
      welcomed.push({ agent, framesBefore: socket.sent.map((x) => String(x.type)) }),
    placement: {
      decide: () =>
        decide === "here" ? { kind: "welcome" as const, reason: "owner" } : {
          kind: "redirect" as const,
          reason: "owner is s2",
          server: { id: "s2", url: "http://s2.test:7400", health: 0, suspect: false, since: 0 },
        },
      serversFrame: () =>
        JSON.stringify({
          v: 1,
          id: "srv-list",
          type: "servers",
          servers: [{ id: "s1", url: "http://s1.test:7400", health: 0 }],
        }),
    },
  });
  let conn = createConnection(socket, "10.0.0.1:5555", withPlacement("there"));
  await handshake(conn, socket, "a1", keys);
  assert.deepEqual(socket.last, {
    v: 1,
    id: socket.last!.id,
    type: "redirect",
    url: "http://s2.test:7400",
    reason: "owner is s2",
  });
  assert.equal(socket.closedWith?.code, 1000);
  assert.equal(f.registry.get("a1"), undefined, "not attached here");
  assert.equal(f.audit.list({ action: "handshake.redirected" })[0].target, "a1");
  assert.deepEqual(welcomed, []);

  socket = new FakeSocket();
  conn = createConnection(socket, "10.0.0.1:5556", withPlacement("here"));
  await handshake(conn, socket, "a1", keys);
  assert.deepEqual(socket.sent.map((x) => x.type), ["challenge", "welcome", "servers"]);
  assert.deepEqual(welcomed, [{ agent: "a1", framesBefore: ["challenge", "welcome", "servers"] }]);
});
