import assert from "node:assert/strict";
import { FakeClock } from "../shared/clock.ts";
import { isJwError } from "../shared/errors.ts";
import { rank } from "../shared/lrw.ts";
import type { ServerEntry } from "../shared/protocol/mod.ts";
import { openAgentDatabase } from "./db.ts";
import {
  checkServerList,
  createServerStore,
  MAX_AVOID,
  rankServers,
  RecentFailures,
} from "./servers.ts";

/** The ids of `RecentFailures.avoid` entries. */
const ids = (entries: { id: string }[]) => entries.map((e) => e.id);

const LIST: ServerEntry[] = [
  { id: "s1", url: "http://127.0.0.1:7400", health: 0 },
  { id: "s2", url: "https://s2.example.test", health: 3 },
  { id: "s3", url: "ws://127.0.0.3:7400/v1/agent", health: 1 },
];

Deno.test("ServerStore replaces the whole list and loads it back in order", () => {
  const db = openAgentDatabase(":memory:");
  try {
    const store = createServerStore(db, () => 42);
    assert.deepEqual(store.load(), []);
    store.replace(LIST);
    assert.deepEqual(store.load(), LIST);
    store.replace([LIST[2], LIST[0]]);
    assert.deepEqual(store.load(), [LIST[2], LIST[0]]);
    const stamps = db.prepare("SELECT DISTINCT received_at AS at FROM servers").all();
    assert.deepEqual(stamps.map((r) => r.at), [42]);
    // A row whose URL the agent cannot use is left out rather than tried.
    db.prepare("INSERT INTO servers VALUES (9, 'bad', 'ftp://x.test/', 0, 1)").run();
    assert.deepEqual(store.load(), [LIST[2], LIST[0]]);
    store.replace([]);
    assert.deepEqual(store.load(), []);
  } finally {
    db.close();
  }
});

Deno.test("checkServerList() refuses unusable URLs and repeated ids", () => {
  checkServerList(LIST);
  checkServerList([]);
  assert.throws(
    () => checkServerList([LIST[0], { id: "s9", url: "mailto:a@b.test", health: 0 }]),
    (e) => isJwError(e, "invalid_message") && /^servers\.1\.url: /.test(e.message),
  );
  assert.throws(
    () => checkServerList([LIST[0], LIST[1], { ...LIST[2], id: "s1" }]),
    (e) =>
      isJwError(e, "invalid_message") &&
      /servers\.2\.id: server "s1" is listed twice/.test(e.message),
  );
});

Deno.test("rankServers() ranks like lrw.rank and gives agent URLs", () => {
  for (const agent of ["a1", "a2", "web-17"]) {
    assert.deepEqual(
      rankServers(agent, LIST).map((s) => s.id),
      rank(agent, LIST).map((s) => s.id),
    );
  }
  const urls = new Map(rankServers("a1", LIST).map((s) => [s.id, s.url]));
  assert.deepEqual(Object.fromEntries(urls), {
    s1: "ws://127.0.0.1:7400/v1/agent",
    s2: "wss://s2.example.test/v1/agent",
    s3: "ws://127.0.0.3:7400/v1/agent",
  });
});

Deno.test("RecentFailures remembers servers for the window, most recent first", async () => {
  const clock = new FakeClock();
  const failures = new RecentFailures(clock, 60_000);
  const ranked = rankServers("a1", LIST);
  const byId = (id: string) => ranked.find((s) => s.id === id)!;
  failures.note("ws://127.0.0.3:7400/v1/agent"); // s3 by URL only
  await clock.advance(1000);
  failures.note("ws://10.9.9.9:7400/v1/agent", "s1"); // s1 lost, at an address not listed
  await clock.advance(1000);
  failures.note("ws://unknown.test/v1/agent"); // not in the list: no id to name
  assert.equal(failures.has(byId("s3")), true);
  assert.equal(failures.has(byId("s1")), true);
  assert.equal(failures.has(byId("s2")), false);
  assert.deepEqual(ids(failures.avoid(ranked)), ["s1", "s3"]);
  await clock.advance(58_000); // s3 was noted 60 s ago
  assert.equal(failures.has(byId("s3")), false);
  assert.deepEqual(ids(failures.avoid(ranked)), ["s1"]);
  await clock.advance(1000);
  assert.deepEqual(ids(failures.avoid(ranked)), []);
  assert.equal(failures.has(byId("s1")), false);
});

Deno.test("RecentFailures names at most MAX_AVOID servers", async () => {
  const clock = new FakeClock();
  const failures = new RecentFailures(clock, 60_000);
  for (let i = 0; i < MAX_AVOID + 8; i++) {
    failures.note(`ws://10.0.0.${i}:7400/v1/agent`, `s${i}`);
    await clock.advance(10);
  }
  const avoid = ids(failures.avoid([]));
  assert.equal(avoid.length, MAX_AVOID);
  assert.equal(avoid[0], `s${MAX_AVOID + 7}`);
});
