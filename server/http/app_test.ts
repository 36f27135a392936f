import assert from "node:assert/strict";
import bcrypt from "bcryptjs";
import { generateKeyPair, signScript } from "../../shared/crypto/mod.ts";
import { JwError } from "../../shared/errors.ts";
import {
  JW_VERSION,
  MAX_SCRIPT_BYTES,
  type RunEvent,
  type ScriptDeleted,
  type ScriptInfo,
  type ScriptUploaded,
  type ServerFrame,
} from "../../shared/protocol/mod.ts";
import { createFixture, fakeSession, type Fixture, pinFake, testRandom } from "../_testing.ts";
import { createDispatcher } from "../delegate/dispatch.ts";
import { createScriptExpander, createScriptStore } from "../scripts/mod.ts";
import { type ClusterView, createApp, filesPathOf } from "./app.ts";

const AUTH = "Basic " + btoa("alice:secret");
const USERS = [{ name: "alice", bcrypt: bcrypt.hashSync("secret", 4) }];

function setup(cluster?: ClusterView) {
  const f = createFixture("srv-t");
  const scripts = createScriptStore(f.db, f.clock);
  const dispatcher = createDispatcher({
    registry: f.registry,
    bus: f.bus,
    audit: f.audit,
    clock: f.clock,
    random: testRandom,
    expand: createScriptExpander(scripts),
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
    scripts,
    scriptDeleteTimeoutMs: 2_000,
    cluster,
    url: () => "http://127.0.0.1:7400",
  });
  const request = (path: string, init: RequestInit = {}) =>
    app.request(path, init, { remoteAddress: "198.51.100.7:1234" });
  return { f, app, request, upgrades, dispatcher, scripts };
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

Deno.test("POST /v1/run: a client that cancels the stream leaves the run to finish", async () => {
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
  // The agent is still running it: its state is kept for later readers until the timeout.
  assert.equal(dispatcher.active, 1);
  await f.clock.advance(30_000);
  assert.equal(dispatcher.active, 0);
  assert.equal(f.bus.subscribers, 0);
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

const SCRIPT_KEY = await generateKeyPair();

/** A signed script; `body` varies the content. */
function signedScript(name: string, version: number, body = "emit({ ok: true });\n") {
  return signScript(`/*---\nname: ${name}\nversion: ${version}\n---*/\n${body}`, SCRIPT_KEY);
}

/** POST /v1/scripts with `text` as the body. */
function upload(request: ReturnType<typeof setup>["request"], text: string, auth = AUTH) {
  return request("/v1/scripts", {
    method: "POST",
    headers: { authorization: auth, "content-type": "application/javascript" },
    body: text,
  });
}

Deno.test("POST /v1/scripts stores a signed script: 201, then 200 for the same content", async () => {
  const { f, request } = setup();
  using _ = f;
  const text = await signedScript("disk-report", 3);
  const res = await upload(request, text);
  assert.equal(res.status, 201);
  const body = await res.json() as ScriptUploaded;
  assert.equal(body.created, true);
  assert.equal(body.script.name, "disk-report");
  assert.equal(body.script.version, 3);
  assert.equal(body.script.signer, SCRIPT_KEY.kid);
  assert.equal(body.script.uploadedBy, "alice");
  assert.equal(body.script.size, text.length);
  assert.match(body.script.sha256, /^sha256:[0-9a-f]{64}$/);

  const again = await upload(request, text);
  assert.equal(again.status, 200);
  assert.deepEqual(await again.json(), { script: body.script, created: false });

  const audits = f.audit.list({ action: "script.upload" });
  assert.deepEqual(audits.map((e) => [e.actor, e.target, e.outcome]), [
    ["operator:alice", "disk-report@3", "ok"],
    ["operator:alice", "disk-report@3", "ok"],
  ]);
  assert.match(audits[0].argsDigest ?? "", /^sha256:/);
});

Deno.test("POST /v1/scripts refuses bad uploads with their status and audits each", async (t) => {
  const { f, request, scripts } = setup();
  using _ = f;
  const stored = await signedScript("taken", 1);
  assert.equal((await upload(request, stored)).status, 201);
  const signed = await signedScript("tampered", 1);
  const cases = [
    {
      name: "unsigned",
      text: "/*---\nname: plain\nversion: 1\n---*/\nemit({});\n",
      status: 403,
      code: "untrusted",
      outcome: "denied",
      target: "plain@1",
    },
    {
      name: "changed after signing",
      text: signed.replace("ok: true", "ok: false"),
      status: 400,
      code: "bad_signature",
      outcome: "denied",
      target: "tampered@1",
    },
    {
      name: "not a script",
      text: "console.log('no header');\n",
      status: 400,
      code: "invalid_script",
      outcome: "error",
      target: null,
    },
    {
      name: "same version, other content",
      text: await signedScript("taken", 1, "emit({ changed: true });\n"),
      status: 409,
      code: "conflict",
      outcome: "error",
      target: "taken@1",
    },
    {
      name: "over the body limit",
      text: "x".repeat(MAX_SCRIPT_BYTES + 8192),
      status: 413,
      code: "frame_too_large",
      outcome: "error",
      target: null,
    },
  ];
  for (const c of cases) {
    await t.step(c.name, async () => {
      const res = await upload(request, c.text);
      assert.equal(res.status, c.status);
      const { error } = await res.json();
      assert.equal(error.code, c.code, error.message);
      const [entry] = f.audit.list({ action: "script.upload", limit: 1 });
      assert.equal(entry.outcome, c.outcome);
      assert.equal(entry.target, c.target);
      assert.ok(entry.reason?.startsWith(`${c.code}: `), entry.reason ?? "no reason");
    });
  }
  await t.step("without credentials: 401 and nothing stored", async () => {
    const res = await upload(request, await signedScript("sneaky", 1), "Basic " + btoa("x:y"));
    assert.equal(res.status, 401);
    await res.body?.cancel();
  });
  assert.deepEqual(scripts.list().map((s) => `${s.name}@${s.version}`), ["taken@1"]);
  assert.match(scripts.get("taken").text, /ok: true/, "the conflicting upload changed nothing");
});

Deno.test("GET /v1/scripts lists; GET /v1/scripts/NAME gives info and text", async () => {
  const { f, request } = setup();
  using _ = f;
  const v1 = await signedScript("a", 1);
  const v2 = await signedScript("a", 2, "emit({ v: 2 });\n");
  await upload(request, v1);
  await upload(request, v2);
  await upload(request, await signedScript("b", 1));
  const get = (path: string) => request(path, { headers: { authorization: AUTH } });

  const list = await (await get("/v1/scripts")).json() as { scripts: ScriptInfo[] };
  assert.deepEqual(list.scripts.map((s) => [s.name, s.version]), [["a", 1], ["a", 2], ["b", 1]]);

  const newest = await (await get("/v1/scripts/a")).json();
  assert.equal(newest.script.version, 2);
  assert.equal(newest.text, v2);
  const first = await (await get("/v1/scripts/a?version=1")).json();
  assert.equal(first.text, v1);

  for (
    const [path, status, code] of [
      ["/v1/scripts/a?version=3", 404, "not_found"],
      ["/v1/scripts/nope", 404, "not_found"],
      ["/v1/scripts/a?version=0", 400, "usage"],
      ["/v1/scripts/a?version=x", 400, "usage"],
      ["/v1/scripts/Bad_Name", 400, "usage"],
    ] as const
  ) {
    const res = await get(path);
    assert.equal(res.status, status, path);
    assert.equal((await res.json()).error.code, code, path);
  }
  const anonymous = await request("/v1/scripts");
  assert.equal(anonymous.status, 401);
  await anonymous.body?.cancel();
});

Deno.test("DELETE /v1/scripts/NAME removes it, audits, and sends script.delete to every agent", async () => {
  const { f, request, scripts } = setup();
  using _ = f;
  await upload(request, await signedScript("a", 1));
  await upload(request, await signedScript("a", 2));
  await upload(request, await signedScript("b", 1));
  const a1 = echoAgent(f, "a1");
  const a2 = echoAgent(f, "a2");
  const del = (path: string) =>
    request(path, { method: "DELETE", headers: { authorization: AUTH } });

  const one = await del("/v1/scripts/a?version=1");
  assert.equal(one.status, 200);
  const body = await one.json() as ScriptDeleted;
  assert.equal(body.name, "a");
  assert.deepEqual(body.versions, [1]);
  assert.deepEqual(Object.keys(body.run.agents).sort(), ["a1", "a2"]);
  assert.ok(Object.values(body.run.agents).every((o) => o.status === "ok"));
  for (const agent of [a1, a2]) {
    const cmd = agent.sent.find((fr) => fr.type === "command");
    assert.ok(cmd?.type === "command");
    assert.equal(cmd.id, body.run.id);
    assert.deepEqual(cmd.job, { key: "script.delete", args: { name: "a", version: 1 } });
  }

  const all = await (await del("/v1/scripts/a")).json() as ScriptDeleted;
  assert.deepEqual(all.versions, [2]);
  assert.deepEqual(scripts.list().map((s) => s.name), ["b"]);

  const gone = await del("/v1/scripts/a");
  assert.equal(gone.status, 404);
  assert.equal((await gone.json()).error.code, "not_found");
  const bad = await del("/v1/scripts/a?version=-1");
  assert.equal(bad.status, 400);
  await bad.body?.cancel();

  const audits = f.audit.list({ action: "script.delete" });
  assert.deepEqual(audits.map((e) => [e.target, e.outcome]), [
    ["a", "error"],
    ["a", "ok"],
    ["a@1", "ok"],
  ]);
  assert.match(audits[0].reason ?? "", /^not_found: /);
  const sent = f.audit.list({ action: "command.sent" }).filter((e) => e.key === "script.delete");
  assert.equal(sent.length, 4, "two runs to two agents, audited like operator commands");
  assert.ok(sent.every((e) => e.actor === "operator:alice" && e.outcome === "ok"));
});

Deno.test("DELETE /v1/scripts/NAME reports agents that do not answer in time", async () => {
  const { f, request, dispatcher } = setup();
  using _ = f;
  await upload(request, await signedScript("a", 1));
  pinFake(f.store, "quiet");
  const quiet = fakeSession("quiet");
  const commanded = Promise.withResolvers<void>();
  const sendEncoded = quiet.session.sendEncoded;
  quiet.session.sendEncoded = (text: string) => {
    sendEncoded(text);
    commanded.resolve();
  };
  f.registry.attach(quiet.session);

  const pending = request("/v1/scripts/a", { method: "DELETE", headers: { authorization: AUTH } });
  await commanded.promise;
  assert.equal(dispatcher.active, 1);
  await f.clock.advance(2_000);
  const body = await (await pending).json() as ScriptDeleted;
  assert.deepEqual(body.versions, [1]);
  assert.equal(body.run.agents.quiet.status, "timeout");
  assert.equal(dispatcher.active, 0);
});

Deno.test("DELETE /v1/scripts/NAME with no agents connected still removes it", async () => {
  const { f, request, scripts } = setup();
  using _ = f;
  await upload(request, await signedScript("a", 1));
  const res = await request("/v1/scripts/a", {
    method: "DELETE",
    headers: { authorization: AUTH },
  });
  assert.equal(res.status, 200);
  const body = await res.json() as ScriptDeleted;
  assert.deepEqual(body.versions, [1]);
  assert.deepEqual(body.run.agents, {});
  assert.deepEqual(scripts.list(), []);
});

Deno.test("POST /v1/run of script.register by name sends the stored file; an unknown name is 404", async () => {
  const { f, request } = setup();
  using _ = f;
  const text = await signedScript("a", 4);
  await upload(request, text);
  const agent = echoAgent(f, "a1");
  const run = (args: Record<string, unknown>) =>
    request("/v1/run", {
      method: "POST",
      headers: { authorization: AUTH },
      body: JSON.stringify({ target: "all", job: { key: "script.register", args } }),
    });

  const ok = await run({ name: "a" });
  assert.equal(ok.status, 200);
  const events = lines(await ok.text());
  assert.equal(events.at(-1)?.type, "summary");
  const cmd = agent.sent.find((fr) => fr.type === "command");
  assert.ok(cmd?.type === "command");
  assert.deepEqual(cmd.job.args, { name: "a", script: text });

  const missing = await run({ name: "a", version: 5 });
  assert.equal(missing.status, 404);
  const { error } = await missing.json();
  assert.equal(error.code, "not_found");
  assert.match(error.message, /"a" version 5/);
  const [denied] = f.audit.list({ action: "command.denied" });
  assert.equal(denied.key, "script.register");
  assert.match(denied.reason ?? "", /^not_found: /);
  assert.equal(agent.sent.filter((fr) => fr.type === "command").length, 1, "nothing more sent");
});

Deno.test("GET /v1/members shows a lone server; POST /v1/cluster/join says it needs a key", async () => {
  const { request, f } = setup();
  const res = await request("/v1/members", { headers: { authorization: AUTH } });
  assert.deepEqual(await res.json(), {
    clustered: false,
    members: [{
      id: "srv-t",
      gossip: null,
      url: "http://127.0.0.1:7400",
      state: "alive",
      incarnation: 0,
      health: 0,
      self: true,
    }],
  });
  const join = await request("/v1/cluster/join", {
    method: "POST",
    headers: { authorization: AUTH },
    body: JSON.stringify({ addresses: ["127.0.0.1:7401"] }),
  });
  assert.equal(join.status, 400);
  const body = await join.json();
  assert.equal(body.error.code, "unsupported");
  assert.match(body.error.message, /cluster key/);
  const audited = f.audit.list({ action: "cluster.join" });
  assert.equal(audited[0].outcome, "error");
  assert.equal(audited[0].target, "127.0.0.1:7401");
});

Deno.test("with a cluster: members, join (audited), bad join bodies, and cluster-wide agents", async () => {
  const joins: string[][] = [];
  const ensured: string[] = [];
  const cluster: ClusterView = {
    members: () => [
      {
        id: "srv-t",
        gossip: "127.0.0.1:1",
        url: "u1",
        state: "alive",
        incarnation: 1,
        health: 0,
        self: true,
      },
      {
        id: "srv-2",
        gossip: "127.0.0.1:2",
        url: "u2",
        state: "suspect",
        incarnation: 3,
        health: 2,
        self: false,
      },
    ],
    join(addresses) {
      joins.push([...addresses]);
      if (addresses[0] === "127.0.0.1:9") {
        return Promise.reject(new JwError("not_connected", "no server answered"));
      }
      return Promise.resolve(addresses.length);
    },
    stats: () => ({ membership: { probes: 3 }, security: { dropped: { replayed: 1 } } }),
    ensureScript: (name, version) => {
      ensured.push(`${name}@${version ?? "newest"}`);
      return Promise.resolve();
    },
    verifyPeer: (token) => {
      if (token !== "good") throw new JwError("unauthorized", "peer token refused: bad signature");
      return "srv-2";
    },
    agents: () => [{
      id: "far",
      key: { x: "x", kid: "k" },
      server: "srv-2",
      tags: {},
      connected: true,
      lastSeen: 5,
    }],
  };
  const { request, f } = setup(cluster);
  const members = await (await request("/v1/members", { headers: { authorization: AUTH } })).json();
  assert.equal(members.clustered, true);
  assert.deepEqual(members.members.map((m: { id: string; state: string }) => [m.id, m.state]), [
    ["srv-t", "alive"],
    ["srv-2", "suspect"],
  ]);
  const post = (body: unknown) =>
    request("/v1/cluster/join", {
      method: "POST",
      headers: { authorization: AUTH },
      body: typeof body === "string" ? body : JSON.stringify(body),
    });
  const ok = await post({ addresses: ["127.0.0.1:2", "127.0.0.1:3"] });
  assert.deepEqual(await ok.json(), { joined: 2 });
  const failed = await post({ addresses: ["127.0.0.1:9"] });
  assert.equal(failed.status, 409);
  for (const bad of ["{", { addresses: [] }, { addresses: ["x"], extra: 1 }]) {
    assert.equal((await post(bad)).status, 400);
  }
  assert.deepEqual(joins, [["127.0.0.1:2", "127.0.0.1:3"], ["127.0.0.1:9"]]);
  assert.deepEqual(
    f.audit.list({ action: "cluster.join" }).map((e) => e.outcome),
    ["error", "ok"],
  );
  const stats = await (await request("/v1/cluster/stats", { headers: { authorization: AUTH } }))
    .json();
  assert.equal(stats.security.dropped.replayed, 1);
  const agents = await (await request("/v1/agents", { headers: { authorization: AUTH } })).json();
  assert.deepEqual(agents.agents.map((a: { id: string; server: string }) => [a.id, a.server]), [
    ["far", "srv-2"],
  ]);

  // script.register by name first makes sure this server holds the script.
  await request("/v1/run", {
    method: "POST",
    headers: { authorization: AUTH },
    body: JSON.stringify({ target: "all", job: { key: "script.register", args: { name: "x" } } }),
  });
  assert.deepEqual(ensured, ["x@newest"]);

  // Another server fetching a script: a peer token, not operator credentials.
  const signed = await signedScript("report", 1);
  assert.equal((await upload(request, signed)).status, 201);
  const peer = (token?: string) =>
    request("/peer/v1/scripts/report/1", {
      headers: token ? { authorization: `Bearer ${token}` } : {},
    });
  const fetched = await peer("good");
  assert.equal(fetched.status, 200);
  assert.equal(await fetched.text(), signed);
  for (const token of [undefined, "forged"]) {
    const refused = await peer(token);
    assert.equal(refused.status, 401);
    assert.equal((await refused.json()).error.code, "unauthorized");
  }
  assert.equal(f.audit.list({ action: "peer.denied" }).length, 2);
});

Deno.test("GET /v1/stream?agent=ID of an agent on another server: 307 to that server", async () => {
  const member = (id: string, url: string, state: "alive" | "dead", self: boolean) => ({
    id,
    gossip: `127.0.0.1:${id.length}`,
    url,
    state,
    incarnation: 1,
    health: 0,
    self,
  });
  let far2State: "alive" | "dead" = "alive";
  const cluster: ClusterView = {
    members: () => [
      member("srv-t", "http://t.test:7400", "alive", true),
      member("srv-2", "http://two.test:7400", far2State, false),
    ],
    join: () => Promise.resolve(0),
    stats: () => ({}),
    ensureScript: () => Promise.resolve(),
    verifyPeer: () => "srv-2",
    agents: () => [
      {
        id: "far",
        key: { x: "x", kid: "k" },
        server: "srv-2",
        tags: {},
        connected: true,
        lastSeen: 5,
      },
      {
        id: "gone",
        key: { x: "x", kid: "k" },
        server: "srv-2",
        tags: {},
        connected: false,
        lastSeen: 5,
      },
    ],
  };
  const { request } = setup(cluster);
  const res = await request("/v1/stream?agent=far&id=abc", {
    headers: { authorization: AUTH },
    redirect: "manual",
  });
  assert.equal(res.status, 307);
  assert.equal(res.headers.get("location"), "http://two.test:7400/v1/stream?agent=far&id=abc");
  await res.body?.cancel();
  // Not connected anywhere, or its server is not alive: streamed here (nothing to relay yet).
  for (const agent of ["gone", "nobody"]) {
    const here = await request(`/v1/stream?agent=${agent}`, { headers: { authorization: AUTH } });
    assert.equal(here.status, 200, agent);
    await here.body?.cancel();
  }
  far2State = "dead";
  const dead = await request("/v1/stream?agent=far", { headers: { authorization: AUTH } });
  assert.equal(dead.status, 200);
  await dead.body?.cancel();
  // Unauthenticated: refused before any redirect.
  const anon = await request("/v1/stream?agent=far", { redirect: "manual" });
  assert.equal(anon.status, 401);
  await anon.body?.cancel();
});

Deno.test("GET /v1/runs/ID: a command's part here, or not_found; bad ids and waits refused", async () => {
  const { f, request } = setup();
  using _ = f;
  pinFake(f.store, "a1");
  f.registry.attach(fakeSession("a1").session);
  const run = await request("/v1/run", {
    method: "POST",
    headers: { authorization: AUTH },
    body: JSON.stringify({ target: "all", job: { key: "exec.run" }, timeoutMs: 1000 }),
  });
  const reader = run.body!.getReader();
  const first = JSON.parse(new TextDecoder().decode((await reader.read()).value).split("\n")[0]);
  assert.equal(first.type, "dispatched");
  await f.clock.advance(1000); // a1 never answers: it times out
  await reader.cancel();
  const part = await request(`/v1/runs/${first.id}?wait=0`, { headers: { authorization: AUTH } });
  assert.equal(part.status, 200);
  const lines = (await part.text()).trim().split("\n").map((l) => JSON.parse(l));
  assert.deepEqual(lines.map((l) => l.type), ["dispatched", "summary"]);
  assert.equal(lines[1].agents.a1.state, "error");
  assert.equal(lines[1].agents.a1.status, "timeout");
  const missing = await request("/v1/runs/nope?wait=0", { headers: { authorization: AUTH } });
  assert.equal(missing.status, 404);
  assert.equal((await missing.json()).error.code, "not_found");
  const badWait = await request("/v1/runs/x?wait=99999999", { headers: { authorization: AUTH } });
  assert.equal(badWait.status, 400);
  await badWait.body?.cancel();
  const badId = await request("/v1/runs/-bad", { headers: { authorization: AUTH } });
  assert.equal(badId.status, 400);
  await badId.body?.cancel();
});

Deno.test("filesPathOf keeps the path after /files/ as sent", () => {
  assert.equal(filesPathOf("http://h:1/files/pkg/app.txt?x=1#f"), "pkg/app.txt");
  assert.equal(
    filesPathOf("http://h:1/files/pkg/%2e%2e/%2e%2e/server.yaml"),
    "pkg/%2e%2e/%2e%2e/server.yaml",
  );
  assert.equal(filesPathOf("http://h:1/files/a%2fb"), "a%2fb");
  assert.equal(filesPathOf("http://h:1/other"), "");
});
