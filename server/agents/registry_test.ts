import assert from "node:assert/strict";
import { parseTarget } from "../../shared/protocol/mod.ts";
import { createFixture, fakeSession, pinFake } from "../_testing.ts";
import { CLOSE_REPLACED, LAST_SEEN_PERSIST_MS } from "./registry.ts";

Deno.test("Registry.attach() replaces an older connection for the same id", () => {
  using f = createFixture();
  pinFake(f.store, "a1");
  const gone: string[] = [];
  f.registry.onDisconnect((id) => gone.push(id));
  const first = fakeSession("a1");
  const second = fakeSession("a1");
  const old = f.registry.attach(first.session);
  const current = f.registry.attach(second.session);
  assert.deepEqual(first.closes, [{ code: CLOSE_REPLACED, reason: "replaced" }]);
  assert.deepEqual(second.closes, []);
  assert.equal(f.registry.get("a1"), current);
  assert.equal(f.registry.connected, 1);

  f.registry.detach(old);
  assert.equal(f.registry.get("a1"), current);
  assert.deepEqual(gone, []);

  f.registry.detach(current);
  f.registry.detach(current);
  assert.equal(f.registry.get("a1"), undefined);
  assert.deepEqual(gone, ["a1"]);
});

Deno.test("Registry.resolve() targets agents by id, tag and all", () => {
  using f = createFixture();
  for (const id of ["web2", "web1", "db1"]) pinFake(f.store, id);
  f.registry.attach(fakeSession("web2", { role: "web" }).session);
  f.registry.attach(fakeSession("web1", { role: "web", dc: "x" }).session);
  f.registry.attach(fakeSession("db1", { role: "db" }).session);
  assert.deepEqual(f.registry.resolve(parseTarget("tag:role=web")), ["web1", "web2"]);
  assert.deepEqual(f.registry.resolve(parseTarget("tag:dc=x")), ["web1"]);
  assert.deepEqual(f.registry.resolve(parseTarget("tag:role=cache")), []);
  assert.deepEqual(f.registry.resolve(parseTarget("tag:toString=x")), []);
  assert.deepEqual(f.registry.resolve(parseTarget("all")), ["db1", "web1", "web2"]);
  assert.deepEqual(f.registry.resolve(parseTarget("agent:db1")), ["db1"]);
  assert.deepEqual(f.registry.resolve(parseTarget("agent:nope")), []);
});

Deno.test("Registry.setTags() merges, deletes with null, persists and retargets", () => {
  using f = createFixture();
  pinFake(f.store, "a1");
  const agent = f.registry.attach(fakeSession("a1", { role: "web", env: "prod" }).session);
  const before = agent.tags;
  const tags = f.registry.setTags(agent, { role: "db", env: null, zone: "b" });
  assert.deepEqual(tags, { role: "db", zone: "b" });
  assert.deepEqual(agent.tags, { role: "db", zone: "b" });
  assert.deepEqual(before, { role: "web", env: "prod" }, "old tag objects are not mutated");
  assert.deepEqual(f.store.get("a1")?.tags, { role: "db", zone: "b" });
  assert.deepEqual(f.registry.resolve(parseTarget("tag:role=db")), ["a1"]);
  assert.deepEqual(f.registry.resolve(parseTarget("tag:role=web")), []);
});

Deno.test("Registry.attach() takes the hello tags as the agent's tags, replacing stored ones", () => {
  using f = createFixture();
  pinFake(f.store, "a1");
  f.store.saveTags("a1", { role: "web", zone: "a" });
  const agent = f.registry.attach(fakeSession("a1", { zone: "b" }).session);
  assert.deepEqual(agent.tags, { zone: "b" }, "a tag the agent no longer has is gone");
  assert.deepEqual(f.registry.list().find((a) => a.id === "a1")?.tags, { zone: "b" });
});

Deno.test("Registry.list() merges live state over the table", async () => {
  using f = createFixture("srv-1");
  pinFake(f.store, "b1");
  pinFake(f.store, "a1");
  const firstSeen = f.clock.now();
  await f.clock.advance(5_000);
  const live = f.registry.attach(fakeSession("b1", { role: "web" }).session);
  const other = f.registry.attach(fakeSession("a1").session);
  await f.clock.advance(1_000);
  f.registry.touch(live);
  f.registry.detach(other);

  const list = f.registry.list();
  assert.deepEqual(list.map((a) => a.id), ["a1", "b1"]);
  assert.deepEqual(list[1], {
    id: "b1",
    connected: true,
    tags: { role: "web" },
    server: "srv-1",
    lastSeen: firstSeen + 6_000,
    firstSeen,
    kid: "kid-b1",
    version: "0.1.0",
    address: "127.0.0.1:5000",
  });
  assert.equal(list[0].connected, false);
  assert.equal(list[0].server, "srv-1", "the last server it was on");
  assert.equal(list[0].lastSeen, firstSeen + 5_000);
});

Deno.test("Registry.touch() persists last-seen at most every 10 s", async () => {
  using f = createFixture();
  pinFake(f.store, "a1");
  const agent = f.registry.attach(fakeSession("a1").session);
  const start = f.clock.now();
  await f.clock.advance(LAST_SEEN_PERSIST_MS - 1);
  f.registry.touch(agent);
  assert.equal(agent.lastSeen, start + LAST_SEEN_PERSIST_MS - 1);
  assert.equal(f.store.get("a1")?.lastSeen, start);
  await f.clock.advance(1);
  f.registry.touch(agent);
  assert.equal(f.store.get("a1")?.lastSeen, start + LAST_SEEN_PERSIST_MS);
  await f.clock.advance(3);
  f.registry.touch(agent);
  f.registry.detach(agent);
  assert.equal(f.store.get("a1")?.lastSeen, start + LAST_SEEN_PERSIST_MS + 3);
});

Deno.test("Registry.touch() writes the last-seen times of all agents heard from in one flush", async () => {
  using f = createFixture();
  const start = f.clock.now();
  const agents = ["a1", "a2", "a3"].map((id) => {
    pinFake(f.store, id);
    return f.registry.attach(fakeSession(id).session);
  });
  await f.clock.advance(1_000);
  f.registry.touch(agents[0]);
  f.registry.touch(agents[1]);
  await f.clock.advance(LAST_SEEN_PERSIST_MS);
  f.registry.touch(agents[2]);
  const seen = ["a1", "a2", "a3"].map((id) => f.store.get(id)?.lastSeen);
  assert.deepEqual(seen, [start + 1_000, start + 1_000, start + 1_000 + LAST_SEEN_PERSIST_MS]);
});

Deno.test("Registry.closeAll() closes and detaches every agent", () => {
  using f = createFixture();
  pinFake(f.store, "a1");
  pinFake(f.store, "a2");
  const s1 = fakeSession("a1");
  const s2 = fakeSession("a2");
  f.registry.attach(s1.session);
  f.registry.attach(s2.session);
  const gone: string[] = [];
  f.registry.onDisconnect((id) => gone.push(id));
  f.registry.closeAll(1001, "server closing");
  assert.equal(f.registry.connected, 0);
  assert.deepEqual(gone.sort(), ["a1", "a2"]);
  assert.deepEqual(s1.closes, [{ code: 1001, reason: "server closing" }]);
});

Deno.test("Registry.onChange() reports connects, tag changes and disconnects", () => {
  using f = createFixture();
  pinFake(f.store, "a1");
  const seen: string[] = [];
  const off = f.registry.onChange((id, change) => seen.push(`${id}:${change}`));
  const first = f.registry.attach(fakeSession("a1").session);
  const second = f.registry.attach(fakeSession("a1").session);
  f.registry.setTags(second, { role: "db" });
  f.registry.setTags(first, { role: "stale" }); // replaced: not reported
  f.registry.detach(first); // replaced: not reported
  f.registry.detach(second);
  off();
  f.registry.attach(fakeSession("a1").session);
  assert.deepEqual(seen, ["a1:connected", "a1:connected", "a1:tags", "a1:disconnected"]);
});
