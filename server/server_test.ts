import assert from "node:assert/strict";
import bcrypt from "bcryptjs";
import { ServerConfig } from "../shared/config/mod.ts";
import { type Ed25519KeyPair, generateKeyPair, signChallenge } from "../shared/crypto/mod.ts";
import { silentLogger } from "../shared/log.ts";
import type { Challenge, Command, RunEvent, SummaryEvent } from "../shared/protocol/mod.ts";
import { type Channel, createChannel } from "./delegate/channel.ts";
import { startServer } from "./mod.ts";

const AUTH = { authorization: "Basic " + btoa("admin:pw") };
const WAIT_MS = 5_000;

function config(data: string, extra: Record<string, unknown> = {}): ServerConfig {
  return ServerConfig.parse({
    http: "127.0.0.1:0",
    data,
    auth: { users: [{ name: "admin", bcrypt: bcrypt.hashSync("pw", 4) }] },
    agents: { maxFrame: 4096 },
    ...extra,
  });
}

/** Resolves `promise`, or rejects after `ms` naming `what` (the timer is always cleared). */
async function within<T>(promise: Promise<T>, what: string, ms = WAIT_MS): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out waiting for ${what}`)), ms);
  });
  try {
    return await Promise.race([promise, timeout]);
  } finally {
    clearTimeout(timer);
  }
}

/** A test agent: a real WebSocket with its frames queued for reading. */
class TestAgent implements AsyncDisposable {
  readonly ws: WebSocket;
  readonly frames: Channel<Record<string, unknown>> = createChannel();
  readonly opened: Promise<void>;
  readonly closed: Promise<CloseEvent>;

  constructor(url: string) {
    this.ws = new WebSocket(url.replace(/^http/, "ws") + "/v1/agent");
    this.opened = new Promise((resolve, reject) => {
      this.ws.onopen = () => resolve();
      this.ws.onerror = () => reject(new Error("websocket error"));
    });
    this.closed = new Promise((resolve) => {
      this.ws.onclose = (e) => {
        this.frames.close();
        resolve(e);
      };
    });
    this.ws.onmessage = (e) => this.frames.push(JSON.parse(e.data));
  }

  send(frame: unknown): void {
    this.ws.send(typeof frame === "string" ? frame : JSON.stringify(frame));
  }

  async next(type?: string): Promise<Record<string, unknown>> {
    const r = await within(this.frames.next(), `a ${type ?? "frame"}`);
    assert.ok(!r.done, `socket closed while waiting for ${type ?? "a frame"}`);
    if (type) assert.equal(r.value.type, type, JSON.stringify(r.value));
    return r.value;
  }

  async handshake(agentId: string, keys: Ed25519KeyPair): Promise<Record<string, unknown>> {
    await within(this.opened, "open");
    this.send({
      v: 1,
      id: "h-1",
      type: "hello",
      agentId,
      publicKey: keys.publicJwk,
      version: "0.1.0",
      tags: { role: "test" },
    });
    const challenge = await this.next("challenge") as unknown as Challenge;
    const jws = await signChallenge(keys.privateKey, challenge.header, challenge.payload);
    this.send({ v: 1, id: "r-1", type: "response", jws });
    const welcome = await this.next("welcome");
    const servers = await this.next("servers");
    assert.ok(Array.isArray(servers.servers) && servers.servers.length === 1, "lone server list");
    return welcome;
  }

  async [Symbol.asyncDispose](): Promise<void> {
    if (this.ws.readyState !== WebSocket.CLOSED) this.ws.close(1000, "done");
    await within(this.closed, "close");
  }
}

/** Reads NDJSON events from a response body, one at a time. */
function ndjsonReader(body: ReadableStream<Uint8Array>) {
  const reader = body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  return {
    async next(): Promise<RunEvent | undefined> {
      for (;;) {
        const nl = buffer.indexOf("\n");
        if (nl >= 0) {
          const line = buffer.slice(0, nl);
          buffer = buffer.slice(nl + 1);
          return JSON.parse(line);
        }
        const { value, done } = await within(reader.read(), "an NDJSON line");
        if (done) return undefined;
        buffer += value;
      }
    },
    cancel: () => reader.cancel(),
  };
}

function output(cmd: Command, extra: Record<string, unknown>) {
  return {
    v: 1,
    id: cmd.id,
    type: "output",
    meta: cmd.meta,
    job: { id: "job-1", key: cmd.job.key },
    ts: Date.now(),
    ...extra,
  };
}

Deno.test("startServer() runs a command end to end over a real WebSocket", async () => {
  const data = await Deno.makeTempDir({ prefix: "jw-server-test-" });
  try {
    await using server = await startServer(config(data), { logger: silentLogger });
    assert.match(server.url, /^http:\/\/127\.0\.0\.1:\d+$/);
    assert.doesNotMatch(server.url, /:0$/);

    const health = await fetch(`${server.url}/healthz`);
    assert.deepEqual((await health.json()).agents, 0);

    const keys = await generateKeyPair();
    await using agent = new TestAgent(server.url);
    const welcome = await agent.handshake("web-1", keys);
    assert.equal(welcome.serverId, server.id);
    assert.equal(welcome.maxFrameBytes, 4096);

    // An oversized frame after welcome: an error frame, and the connection stays open.
    agent.send(JSON.stringify({ v: 1, id: "big", type: "log", pad: "x".repeat(5000) }));
    const tooBig = await agent.next("error");
    assert.equal((tooBig.error as { code: string }).code, "frame_too_large");

    const res = await fetch(`${server.url}/v1/run`, {
      method: "POST",
      headers: { ...AUTH, "content-type": "application/json" },
      body: JSON.stringify({
        target: "agent:web-1",
        job: { key: "exec.run", args: { cmd: "/bin/echo" } },
        meta: { ticket: 42 },
      }),
    });
    assert.equal(res.status, 200);
    const events = ndjsonReader(res.body!);
    const dispatched = await events.next();
    assert.deepEqual(dispatched, {
      type: "dispatched",
      id: (dispatched as { id: string }).id,
      target: "agent:web-1",
      agents: ["web-1"],
    });

    const cmd = await agent.next("command") as unknown as Command;
    assert.equal(cmd.id, (dispatched as { id: string }).id);
    assert.deepEqual(cmd.meta, { ticket: 42 });
    agent.send(output(cmd, { seq: 0, stream: "stdout", text: "hello\n" }));
    agent.send(output(cmd, { seq: 1, done: true, error: null, exitCode: 0, durationMs: 3 }));

    const line = await events.next();
    assert.equal((line as { text: string }).text, "hello\n");
    assert.equal((line as { agent: string }).agent, "web-1");
    assert.deepEqual((line as { meta: unknown }).meta, { ticket: 42 });
    assert.equal((await events.next())?.type, "output");
    const summary = await events.next() as SummaryEvent;
    assert.deepEqual(summary.agents, {
      "web-1": { status: "ok", error: null, exitCode: 0, durationMs: 3, state: "done" },
    });
    assert.equal(await events.next(), undefined);

    const list = await fetch(`${server.url}/v1/agents`, { headers: AUTH });
    const { agents } = await list.json();
    assert.equal(agents.length, 1);
    assert.equal(agents[0].connected, true);
    assert.equal(agents[0].kid, keys.kid);
    assert.deepEqual(agents[0].tags, { role: "test" });

    const actions = server.audit.list().map((e) => e.action);
    for (const a of ["handshake.ok", "frame.rejected", "command.sent"]) {
      assert.ok(actions.includes(a), `${a} in ${actions}`);
    }
  } finally {
    await Deno.remove(data, { recursive: true });
  }
});

Deno.test("startServer() keeps its generated id and pinned keys across restarts", async () => {
  const data = await Deno.makeTempDir({ prefix: "jw-server-test-" });
  try {
    const keys = await generateKeyPair();
    let firstId: string;
    {
      await using server = await startServer(config(data), { logger: silentLogger });
      firstId = server.id;
      assert.match(firstId, /^srv-/);
      await using agent = new TestAgent(server.url);
      await agent.handshake("a1", keys);
    }
    await using server = await startServer(config(data), { logger: silentLogger });
    assert.equal(server.id, firstId);
    await using impostor = new TestAgent(server.url);
    await within(impostor.opened, "open");
    impostor.send({
      v: 1,
      id: "h-1",
      type: "hello",
      agentId: "a1",
      publicKey: (await generateKeyPair()).publicJwk,
      version: "0.1.0",
      tags: {},
    });
    const err = await impostor.next("error");
    assert.equal((err.error as { code: string }).code, "key_mismatch");
    const closed = await within(impostor.closed, "close");
    assert.equal(closed.code, 4001);
    assert.match(closed.reason, /^key_mismatch/);
  } finally {
    await Deno.remove(data, { recursive: true });
  }
});

Deno.test("JwServer.close() closes agents with 1001 and ends open runs", async () => {
  const data = await Deno.makeTempDir({ prefix: "jw-server-test-" });
  try {
    const server = await startServer(config(data, { id: "fixed-id" }), { logger: silentLogger });
    assert.equal(server.id, "fixed-id");
    await using agent = new TestAgent(server.url);
    await agent.handshake("a1", await generateKeyPair());
    const res = await fetch(`${server.url}/v1/run`, {
      method: "POST",
      headers: AUTH,
      body: JSON.stringify({ target: "all", job: { key: "exec.run" } }),
    });
    const events = ndjsonReader(res.body!);
    assert.equal((await events.next())?.type, "dispatched");
    await agent.next("command");
    const stream = await fetch(`${server.url}/v1/stream`, { headers: AUTH });

    const closing = server.close();
    const summary = await events.next() as SummaryEvent;
    assert.equal(summary.agents.a1.error?.code, "closed");
    assert.equal(await events.next(), undefined);
    assert.equal(await stream.text(), "");
    assert.equal((await within(agent.closed, "close")).code, 1001);
    await within(closing, "server close");
    await server.close();
  } finally {
    await Deno.remove(data, { recursive: true });
  }
});
