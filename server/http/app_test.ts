import assert from "node:assert/strict";
import bcrypt from "bcryptjs";
import { JW_VERSION, type RunEvent, type ServerFrame } from "../../shared/protocol/mod.ts";
import { createFixture, fakeSession, type Fixture, pinFake, testRandom } from "../_testing.ts";
import { createDispatcher } from "../delegate/dispatch.ts";
import { createApp } from "./app.ts";

const AUTH = "Basic " + btoa("alice:secret");
const USERS = [{ name: "alice", bcrypt: bcrypt.hashSync("secret", 4) }];

function setup() {
  const f = createFixture("srv-t");
  const dispatcher = createDispatcher({
    registry: f.registry,
    bus: f.bus,
    audit: f.audit,
    clock: f.clock,
    random: testRandom,
  });
  const upgrades: string[] = [];
  const app = createApp({
    serverId: "srv-t",
    users: USERS,
    registry: f.registry,
    dispatcher,
    bus: f.bus,
    audit: f.audit,
    acceptAgent: (_req, address) => {
      upgrades.push(address);
      return new Response(null, { status: 200, headers: { "x-upgraded": "yes" } });
    },
  });
  const request = (path: string, init: RequestInit = {}) =>
    app.request(path, init, { remoteAddress: "198.51.100.7:1234" });
  return { f, app, request, upgrades, dispatcher };
}

/** Connects a fake agent that answers every command with one text line and a done output. */
function echoAgent(f: Fixture, id: string, tags: Record<string, string> = {}) {
  pinFake(f.store, id);
  const s = fakeSession(id, tags);
  const send = s.session.send;
  s.session.sendEncoded = (text: string) => s.session.send(JSON.parse(text));
  s.session.send = (frame: ServerFrame) => {
    send(frame);
    if (frame.type !== "command") return;
    const base = { v: 1 as const, id: frame.id, job: { id: "j", key: frame.job.key }, ts: 1 };
    const meta = frame.meta === undefined ? {} : { meta: frame.meta };
    queueMicrotask(() => {
      const tags = f.registry.get(id)?.tags ?? {};
      f.bus.publish({ ...base, ...meta, type: "output", seq: 0, text: "hi", agent: id }, tags);
      f.bus.publish(
        {
          ...base,
          ...meta,
          type: "output",
          seq: 1,
          done: true,
          error: null,
          exitCode: 0,
          agent: id,
        },
        tags,
      );
    });
  };
  f.registry.attach(s.session);
  return s;
}

function lines(text: string): RunEvent[] {
  return text.trim().split("\n").map((l) => JSON.parse(l));
}

Deno.test("GET /healthz needs no auth and counts connected agents", async () => {
  const { f, request } = setup();
  using _ = f;
  echoAgent(f, "a1");
  const res = await request("/healthz");
  assert.equal(res.status, 200);
  assert.deepEqual(await res.json(), { ok: true, id: "srv-t", version: JW_VERSION, agents: 1 });
});

Deno.test("GET /v1/agents requires auth and lists agents by id", async () => {
  const { f, request } = setup();
  using _ = f;
  echoAgent(f, "b1", { role: "web" });
  pinFake(f.store, "a1");
  const denied = await request("/v1/agents");
  assert.equal(denied.status, 401);
  assert.equal((await denied.json()).error.code, "unauthorized");
  assert.equal(f.audit.list({ action: "auth.failed" })[0].actor, "198.51.100.7:1234");

  const res = await request("/v1/agents", { headers: { authorization: AUTH } });
  assert.equal(res.status, 200);
  const { agents } = await res.json();
  assert.deepEqual(agents.map((a: { id: string; connected: boolean }) => [a.id, a.connected]), [
    ["a1", false],
    ["b1", true],
  ]);
  assert.deepEqual(agents[1].tags, { role: "web" });
  assert.equal(agents[1].server, "srv-t");
});

Deno.test("GET /v1/agent skips operator auth and asks for an upgrade", async () => {
  const { f, request, upgrades } = setup();
  using _ = f;
  const plain = await request("/v1/agent");
  assert.equal(plain.status, 400);
  assert.equal((await plain.json()).error.code, "usage");
  const res = await request("/v1/agent", { headers: { upgrade: "websocket" } });
  assert.equal(res.headers.get("x-upgraded"), "yes");
  await res.body?.cancel();
  assert.deepEqual(upgrades, ["198.51.100.7:1234"]);
});

Deno.test("POST /v1/run rejects bad bodies with 400 JSON", async (t) => {
  const { f, request } = setup();
  using _ = f;
  const cases = [
    { name: "malformed JSON", body: "{target:", code: "bad_json", match: /JSON/ },
    {
      name: "unknown key",
      body: JSON.stringify({ target: "all", job: { key: "exec.run" }, colour: "red" }),
      code: "invalid_message",
      match: /colour/,
    },
    {
      name: "unknown job key",
      body: JSON.stringify({ target: "all", job: { key: "exec.run", argz: {} } }),
      code: "invalid_message",
      match: /job/,
    },
    {
      name: "missing job",
      body: JSON.stringify({ target: "all" }),
      code: "invalid_message",
      match: /job/,
    },
    {
      name: "bad target",
      body: JSON.stringify({ target: "agent:", job: { key: "exec.run" } }),
      code: "usage",
      match: /bad target/,
    },
  ];
  for (const c of cases) {
    await t.step(c.name, async () => {
      const res = await request("/v1/run", {
        method: "POST",
        headers: { authorization: AUTH, "content-type": "application/json" },
        body: c.body,
      });
      assert.equal(res.status, 400);
      const body = await res.json();
      assert.equal(body.error.code, c.code);
      assert.match(body.error.message, c.match);
    });
  }
});

Deno.test("POST /v1/run without auth is 401 and sends nothing", async () => {
  const { f, request } = setup();
  using _ = f;
  const agent = echoAgent(f, "a1");
  const res = await request("/v1/run", {
    method: "POST",
    body: JSON.stringify({ target: "all", job: { key: "exec.run" } }),
  });
  assert.equal(res.status, 401);
  await res.body?.cancel();
  assert.equal(agent.sent.length, 0);
});

Deno.test("POST /v1/run streams NDJSON events up to the summary", async () => {
  const { f, request } = setup();
  using _ = f;
  echoAgent(f, "a1", { role: "web" });
  echoAgent(f, "a2", { role: "web" });
  const res = await request("/v1/run", {
    method: "POST",
    headers: { authorization: AUTH },
    body: JSON.stringify({ target: "tag:role=web", job: { key: "exec.run" }, meta: { k: [1] } }),
  });
  assert.equal(res.status, 200);
  assert.equal(res.headers.get("content-type"), "application/x-ndjson");
  const events = lines(await res.text());
  assert.equal(events[0].type, "dispatched");
  assert.equal(events.length, 6);
  const summary = events.at(-1)!;
  assert.equal(summary.type, "summary");
  assert.deepEqual(Object.keys((summary as { agents: object }).agents).sort(), ["a1", "a2"]);
  for (const e of events.slice(1, -1)) assert.deepEqual((e as { meta?: unknown }).meta, { k: [1] });
});

Deno.test("POST /v1/run closes the run when the client cancels the stream", async () => {
  const { f, request, dispatcher } = setup();
  using _ = f;
  pinFake(f.store, "quiet");
  f.registry.attach(fakeSession("quiet").session);
  const res = await request("/v1/run", {
    method: "POST",
    headers: { authorization: AUTH },
    body: JSON.stringify({ target: "all", job: { key: "exec.run" } }),
  });
  const reader = res.body!.getReader();
  const first = await reader.read();
  assert.match(new TextDecoder().decode(first.value), /"dispatched"/);
  assert.equal(dispatcher.active, 1);
  await reader.cancel();
  assert.equal(dispatcher.active, 0);
  assert.equal(f.bus.subscribers, 0);
  assert.equal(f.clock.pending, 0);
});

Deno.test("GET /v1/stream relays matching replies until the client goes away", async () => {
  const { f, request } = setup();
  using _ = f;
  echoAgent(f, "a1", { role: "web" });
  echoAgent(f, "a2", { role: "db" });
  const bad = await request("/v1/stream?tag=novalue", { headers: { authorization: AUTH } });
  assert.equal(bad.status, 400);
  await bad.body?.cancel();

  const res = await request("/v1/stream?tag=role=web", { headers: { authorization: AUTH } });
  assert.equal(res.status, 200);
  assert.equal(f.bus.subscribers, 1);
  const run = await request("/v1/run", {
    method: "POST",
    headers: { authorization: AUTH },
    body: JSON.stringify({ target: "all", job: { key: "exec.run" } }),
  });
  await run.text();
  const reader = res.body!.getReader();
  let text = "";
  while (text.split("\n").length < 3) text += new TextDecoder().decode((await reader.read()).value);
  const got = lines(text) as { agent: string }[];
  assert.deepEqual(got.map((r) => r.agent), ["a1", "a1"]);
  await reader.cancel();
  assert.equal(f.bus.subscribers, 0);
});

Deno.test("GET /v1/audit lists newest first, filtered by action and limit", async () => {
  const { f, request } = setup();
  using _ = f;
  f.audit.append({ actor: "x", action: "one", outcome: "ok" });
  f.audit.append({ actor: "x", action: "two", outcome: "ok" });
  f.audit.append({ actor: "x", action: "two", outcome: "denied" });
  const res = await request("/v1/audit?action=two&limit=1", { headers: { authorization: AUTH } });
  const { entries } = await res.json();
  assert.equal(entries.length, 1);
  assert.equal(entries[0].outcome, "denied");
  const bad = await request("/v1/audit?limit=lots", { headers: { authorization: AUTH } });
  assert.equal(bad.status, 400);
  assert.equal((await bad.json()).error.code, "usage");
});

Deno.test("unknown routes answer 404 JSON", async () => {
  const { f, request } = setup();
  using _ = f;
  const res = await request("/nope");
  assert.equal(res.status, 404);
  assert.equal((await res.json()).error.code, "not_found");
  const authed = await request("/v1/nope", { headers: { authorization: AUTH } });
  assert.equal(authed.status, 404);
  assert.equal((await authed.json()).error.code, "not_found");
});
