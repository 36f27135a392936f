import assert from "node:assert/strict";
import bcrypt from "bcryptjs";
import { Hono } from "hono";
import { createFixture } from "../_testing.ts";
import { type AuthEnv, createBasicAuth, parseBasicAuthorization } from "./basic.ts";

const USERS = [
  { name: "alice", bcrypt: bcrypt.hashSync("wonderland", 4) },
  { name: "bob", bcrypt: bcrypt.hashSync("builder", 4) },
];

function basic(name: string, password: string): string {
  const bytes = new TextEncoder().encode(`${name}:${password}`);
  return "Basic " + btoa(String.fromCharCode(...bytes));
}

function setup() {
  const f = createFixture();
  const app = new Hono<AuthEnv>();
  app.use("*", createBasicAuth({ users: USERS, audit: f.audit }));
  app.get("/who", (c) => c.json({ operator: c.get("operator") }));
  const request = (headers: Record<string, string> = {}) =>
    app.request("/who", { headers }, { remoteAddress: "192.0.2.9:4000" });
  return { f, request };
}

Deno.test("createBasicAuth() lets a valid user through with its name on the context", async () => {
  const { f, request } = setup();
  using _ = f;
  const res = await request({ authorization: basic("bob", "builder") });
  assert.equal(res.status, 200);
  assert.deepEqual(await res.json(), { operator: "bob" });
  assert.equal(f.audit.list({ action: "auth.failed" }).length, 0);
});

Deno.test("createBasicAuth() answers 401 JSON for bad or missing credentials", async (t) => {
  const { f, request } = setup();
  using _ = f;
  const cases: { name: string; headers: Record<string, string>; actor: string; reason: RegExp }[] =
    [
      { name: "missing", headers: {}, actor: "192.0.2.9:4000", reason: /missing/ },
      {
        name: "wrong password",
        headers: { authorization: basic("alice", "builder") },
        actor: "operator:alice",
        reason: /wrong password/,
      },
      {
        name: "unknown user",
        headers: { authorization: basic("carol", "wonderland") },
        actor: "operator:carol",
        reason: /unknown user/,
      },
      {
        name: "not basic",
        headers: { authorization: "Bearer abc" },
        actor: "192.0.2.9:4000",
        reason: /malformed/,
      },
      {
        name: "bad base64",
        headers: { authorization: "Basic !!!" },
        actor: "192.0.2.9:4000",
        reason: /malformed/,
      },
    ];
  for (const c of cases) {
    await t.step(c.name, async () => {
      const res = await request(c.headers);
      assert.equal(res.status, 401);
      assert.equal(res.headers.get("www-authenticate"), 'Basic realm="jw"');
      const body = await res.json();
      assert.equal(body.error.code, "unauthorized");
      assert.equal(typeof body.error.message, "string");
      const last = f.audit.list({ action: "auth.failed", limit: 1 })[0];
      assert.equal(last.actor, c.actor);
      assert.equal(last.outcome, "denied");
      assert.match(last.reason ?? "", c.reason);
    });
  }
});

Deno.test("createBasicAuth() with no users lets nobody in", async () => {
  using f = createFixture();
  const app = new Hono<AuthEnv>();
  app.use("*", createBasicAuth({ users: [], audit: f.audit }));
  app.get("/", (c) => c.text("in"));
  const res = await app.request("/", { headers: { authorization: basic("alice", "x") } });
  assert.equal(res.status, 401);
  await res.body?.cancel();
});

Deno.test("parseBasicAuthorization() splits at the first colon and decodes UTF-8", () => {
  assert.deepEqual(parseBasicAuthorization(basic("zoë", "a:b")), { name: "zoë", password: "a:b" });
  assert.equal(parseBasicAuthorization(undefined), undefined);
  assert.equal(parseBasicAuthorization("Basic " + btoa("nocolon")), undefined);
});
