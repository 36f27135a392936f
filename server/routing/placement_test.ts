import assert from "node:assert/strict";
import { FakeClock } from "../../shared/clock.ts";
import { owner, rank } from "../../shared/lrw.ts";
import { createPlacement } from "./placement.ts";

type State = "alive" | "suspect" | "dead" | "left";
function members(spec: [string, State, number?][]) {
  return spec.map(([id, state, health]) => ({
    id,
    url: `http://${id}.test:7400`,
    state,
    health: health ?? 0,
    settled: health ?? 0,
  }));
}

const ids = Array.from({ length: 300 }, (_, i) => `agent-${i}`);

Deno.test("placement welcomes its own agents and redirects the rest to their LRW owner", () => {
  const clock = new FakeClock();
  const view = members([["a", "alive"], ["b", "alive"], ["c", "alive"]]);
  const p = createPlacement({
    serverId: "a",
    url: () => "http://a.test:7400",
    members: () => view,
    clock,
    maxHops: 3,
  });
  let welcomed = 0;
  for (const id of ids) {
    const expected = owner(id, view)!;
    const d = p.decide(id);
    if (expected.id === "a") {
      assert.equal(d.kind, "welcome", id);
      welcomed++;
    } else {
      assert.equal(d.kind, "redirect", id);
      assert.equal(d.kind === "redirect" && d.server.url, expected.url);
    }
  }
  assert.ok(welcomed > 60 && welcomed < 140, `about a third welcomed, got ${welcomed}`);
});

Deno.test("placement skips dead, suspect and avoided servers, and stops at the hop limit", () => {
  const clock = new FakeClock();
  let view = members([["a", "alive"], ["b", "alive"], ["c", "alive"]]);
  const p = createPlacement({
    serverId: "a",
    url: () => "http://a.test:7400",
    members: () => view,
    clock,
    maxHops: 2,
    cacheMs: 0,
  });
  // An agent ranked b, c, a or b, a, c.
  const onB = ids.find((id) => rank(id, view)[0].id === "b")!;
  const second = rank(onB, view)[1].id;
  assert.equal(p.decide(onB).kind, "redirect");
  // The agent cannot reach b: it goes to its next choice.
  const avoided = p.decide(onB, { avoid: [{ id: "b", at: clock.now() }] });
  if (second === "a") assert.equal(avoided.kind, "welcome");
  else assert.equal(avoided.kind === "redirect" && avoided.server.id, "c");
  // A failure from before b was (last) seen alive here is stale: b is the owner again.
  const stale = p.decide(onB, { avoid: [{ id: "b", at: clock.now() - 1 }] });
  assert.equal(stale.kind === "redirect" && stale.server.id, "b");
  // At the hop limit it stays here.
  assert.equal(p.decide(onB, { hops: 2 }).kind, "welcome");
  // b suspect: no new agents for it; b dead: not a candidate at all.
  view = members([["a", "alive"], ["b", "suspect"], ["c", "alive"]]);
  assert.deepEqual(p.decide(onB), p.decide(onB, { avoid: [{ id: "b", at: clock.now() }] }));
  view = members([["a", "alive"], ["b", "dead"], ["c", "alive"]]);
  const alive = view.filter((m) => m.state === "alive");
  const d = p.decide(onB);
  assert.equal(d.kind === "redirect" ? d.server.id : "a", owner(onB, alive)!.id);
  assert.deepEqual(p.entries().map((e) => e.id), ["a", "c"]);
});

Deno.test("a lone server keeps every agent and lists only itself", () => {
  const p = createPlacement({
    serverId: "solo",
    url: () => "http://127.0.0.1:7400",
    clock: new FakeClock(),
    maxHops: 3,
  });
  for (const id of ids.slice(0, 20)) assert.equal(p.decide(id).kind, "welcome");
  assert.deepEqual(p.entries(), [{ id: "solo", url: "http://127.0.0.1:7400", health: 0 }]);
});

Deno.test("a sick server's weight uses the settled score", () => {
  const clock = new FakeClock();
  const view = members([["a", "alive", 0], ["b", "alive", 3]]);
  const p = createPlacement({
    serverId: "a",
    url: () => "",
    members: () => view,
    clock,
    maxHops: 3,
  });
  const onA = ids.filter((id) => p.decide(id).kind === "welcome").length;
  // Weights 4:1, so about 80% here.
  assert.ok(onA > 0.7 * ids.length && onA < 0.9 * ids.length, `got ${onA}/${ids.length}`);
});

Deno.test("a server's since starts over when it leaves, and at a new incarnation", async () => {
  const clock = new FakeClock();
  let view: {
    id: string;
    url: string;
    state: State;
    health: number;
    settled: number;
    incarnation: number;
  }[] = [
    { id: "a", url: "http://a", state: "alive", health: 0, settled: 0, incarnation: 1 },
    { id: "b", url: "http://b", state: "alive", health: 0, settled: 0, incarnation: 1 },
  ];
  const p = createPlacement({
    serverId: "a",
    url: () => "http://a",
    members: () => view,
    clock,
    maxHops: 3,
    cacheMs: 0,
  });
  const sinceB = () => p.servers().find((s) => s.id === "b")?.since;
  const t0 = clock.now();
  assert.equal(sinceB(), t0);
  await clock.advance(1000);
  view[1] = { ...view[1], state: "suspect" };
  assert.equal(sinceB(), t0, "suspect is not a break");
  await clock.advance(1000);
  view[1] = { ...view[1], state: "alive", incarnation: 2 };
  assert.equal(sinceB(), t0 + 2000, "refuted or restarted: a new incarnation");
  await clock.advance(1000);
  view = [view[0], { ...view[1], state: "dead" }];
  assert.equal(sinceB(), undefined);
  view = [view[0], { ...view[1], state: "alive" }];
  assert.equal(sinceB(), t0 + 3000);
});
