import assert from "node:assert/strict";
import { FakeClock } from "../../shared/clock.ts";
import { owner } from "../../shared/lrw.ts";
import { seededRandom } from "../../shared/random.ts";
import type { ServerFrame } from "../../shared/protocol/mod.ts";
import type { LiveAgent } from "../agents/registry.ts";
import { CLOSE_HANDED_OFF, HANDOFF_GRACE_MS, startHandoff } from "./handoff.ts";
import { type AvoidedServer, createPlacement } from "./placement.ts";

type State = "alive" | "suspect" | "dead" | "left";

class FakeAgent implements LiveAgent {
  readonly tags = {};
  readonly lastSeen: number;
  readonly address = "127.0.0.1:1";
  readonly version = "test";
  readonly frames: ServerFrame[] = [];
  closedWith?: number;
  constructor(
    readonly id: string,
    readonly connectedAt: number,
    readonly avoid: AvoidedServer[] = [],
  ) {
    this.lastSeen = connectedAt;
  }
  send(frame: ServerFrame): void {
    this.frames.push(frame);
  }
  sendEncoded(text: string): void {
    this.frames.push(JSON.parse(text));
  }
  close(code: number): void {
    this.closedWith = code;
  }
  redirects() {
    return this.frames.filter((f) => f.type === "redirect");
  }
}

function setup(opts: { rate?: number; agents?: number } = {}) {
  const clock = new FakeClock();
  let view: { id: string; url: string; state: State; health: number; settled: number }[] = [
    { id: "a", url: "http://a.test", state: "alive", health: 0, settled: 0 },
    { id: "b", url: "http://b.test", state: "alive", health: 0, settled: 0 },
  ];
  const placement = createPlacement({
    serverId: "a",
    url: () => "http://a.test",
    members: () => view,
    clock,
    maxHops: 3,
    cacheMs: 0,
  });
  // Agents all connected here while a was alone.
  const agents = Array.from(
    { length: opts.agents ?? 200 },
    (_, i) => new FakeAgent(`agent-${i}`, clock.now()),
  );
  const handoff = startHandoff({
    serverId: "a",
    placement,
    // A closed agent is detached, as the registry does.
    agents: () => agents.filter((a) => a.closedWith === undefined),
    clock,
    random: seededRandom(7),
    rate: opts.rate ?? 10,
    spreadMs: 5000,
    settleMs: 5000,
    minAgeMs: 10_000,
  });
  return {
    clock,
    agents,
    handoff,
    setView(v: typeof view) {
      view = v;
    },
    view: () => view,
  };
}

Deno.test("handoff moves only agents owned elsewhere, at the configured rate, spread out", async () => {
  const t = setup({ rate: 10 });
  try {
    await t.clock.advance(11_000);
    const alive = t.view();
    const toMove = t.agents.filter((a) => owner(a.id, alive)!.id === "b");
    assert.ok(toMove.length > 50, `enough agents to move: ${toMove.length}`);
    // Let several seconds of checks run: 10 per second at most.
    const moved = () => t.agents.filter((a) => a.redirects().length > 0);
    const perSecond: number[] = [];
    let before = moved().length;
    for (let s = 0; s < 4; s++) {
      await t.clock.advance(1000);
      perSecond.push(moved().length - before);
      before = moved().length;
    }
    for (const n of perSecond) assert.ok(n <= 10, `at most 10 per second: ${perSecond}`);
    assert.ok(before >= 30, `kept moving: ${perSecond}`);
    for (const a of moved()) {
      assert.equal(owner(a.id, alive)!.id, "b", `${a.id} belongs to a and must stay`);
      const r = a.redirects()[0];
      assert.ok(r.type === "redirect" && r.url === "http://b.test");
      assert.ok(r.type === "redirect" && r.retryAfter! >= 0 && r.retryAfter! < 5000);
    }
    const waits = new Set(
      moved().map((a) => (a.redirects()[0] as { retryAfter: number }).retryAfter),
    );
    assert.ok(waits.size > before / 2, "waits are spread, not equal");
    // Each agent is told once, then closed if it has not left after its wait and the grace.
    await t.clock.advance(5000 + HANDOFF_GRACE_MS);
    for (const a of moved()) assert.equal(a.redirects().length, 1);
    assert.ok(moved().some((a) => a.closedWith === CLOSE_HANDED_OFF));
  } finally {
    t.handoff.stop();
  }
});

Deno.test("handoff waits for a new server to settle and for agents to age", async () => {
  const t = setup({ rate: 1000 });
  try {
    t.setView([{ id: "a", url: "http://a.test", state: "alive", health: 0, settled: 0 }]);
    await t.clock.advance(12_000);
    assert.equal(t.agents.filter((a) => a.redirects().length).length, 0);
    // b appears now: nothing moves in its first 5 s.
    t.setView([
      { id: "a", url: "http://a.test", state: "alive", health: 0, settled: 0 },
      { id: "b", url: "http://b.test", state: "alive", health: 0, settled: 0 },
    ]);
    await t.clock.advance(4000);
    assert.equal(t.agents.filter((a) => a.redirects().length).length, 0);
    await t.clock.advance(2000);
    assert.ok(t.agents.filter((a) => a.redirects().length).length > 50);
  } finally {
    t.handoff.stop();
  }
});

Deno.test("agents get the server list after a change, once", async () => {
  const t = setup({ rate: 0.001 });
  try {
    await t.clock.advance(1000);
    const lists = (a: FakeAgent) => a.frames.filter((f) => f.type === "servers");
    assert.equal(lists(t.agents[0]).length, 1);
    await t.clock.advance(3000);
    assert.equal(lists(t.agents[0]).length, 1, "no change, no resend");
    t.setView([{ id: "a", url: "http://a.test", state: "alive", health: 2, settled: 2 }]);
    await t.clock.advance(1000);
    const last = lists(t.agents[0]).at(-1);
    assert.deepEqual(last?.type === "servers" && last.servers, [
      { id: "a", url: "http://a.test", health: 2 },
    ]);
  } finally {
    t.handoff.stop();
  }
});

/**
 * This server, a, and b, both alive (b's entry can be replaced to show a restart), with five
 * agent ids that b owns, and a handoff loop over `agents` (no spread, rate 100/s).
 */
function aAndB(clock: FakeClock) {
  const view = {
    members: [
      {
        id: "a",
        url: "http://a.test",
        state: "alive" as State,
        health: 0,
        settled: 0,
        incarnation: 1,
      },
      {
        id: "b",
        url: "http://b.test",
        state: "alive" as State,
        health: 0,
        settled: 0,
        incarnation: 1,
      },
    ],
  };
  const placement = createPlacement({
    serverId: "a",
    url: () => "http://a.test",
    members: () => view.members,
    clock,
    maxHops: 3,
    cacheMs: 0,
  });
  placement.servers(); // b seen alive from now
  const ofB = Array.from({ length: 100 }, (_, i) => `agent-${i}`)
    .filter((id) => owner(id, view.members)!.id === "b").slice(0, 5);
  const handoff = (agents: FakeAgent[], times: { settleMs: number; minAgeMs: number }) =>
    startHandoff({
      serverId: "a",
      placement,
      agents: () => agents.filter((a) => a.closedWith === undefined),
      clock,
      random: seededRandom(1),
      rate: 100,
      spreadMs: 0,
      ...times,
    });
  const redirected = (agents: FakeAgent[]) => agents.filter((a) => a.redirects().length).length;
  return { view, placement, ofB, handoff, redirected };
}

Deno.test("an agent's avoid list holds for a minute, unless the avoided server came back", async () => {
  const clock = new FakeClock();
  const { view, placement, ofB, handoff, redirected } = aAndB(clock);
  await clock.advance(1000);
  // Agents that belong to b but said they could not reach it.
  const agents = ofB.map((id) => new FakeAgent(id, clock.now(), [{ id: "b", at: clock.now() }]));
  const loop = handoff(agents, { settleMs: 0, minAgeMs: 0 });
  try {
    await clock.advance(30_000);
    assert.equal(redirected(agents), 0, "avoid honoured");
    // b restarts: gone, then alive again after these agents connected.
    const b = view.members.pop()!;
    placement.servers();
    view.members.push(b);
    await clock.advance(2000);
    assert.equal(redirected(agents), agents.length);
  } finally {
    loop.stop();
  }
});

Deno.test("a server restarted between an agent's failure and its connect here is not avoided", async () => {
  const clock = new FakeClock(10_000);
  const { view, placement, ofB, handoff, redirected } = aAndB(clock);
  // The agents lost b at 10 s; b was back at a new incarnation (a restart nobody saw as a
  // death) at 11 s; the agents connected here at 13 s, still naming b.
  const failed = [{ id: "b", at: clock.now() }];
  await clock.advance(1000);
  view.members[1] = { ...view.members[1], incarnation: 2 };
  placement.servers();
  await clock.advance(2000);
  // At the handshake b is already the place to go.
  assert.equal(placement.decide(ofB[0], { avoid: failed }).kind, "redirect");
  // An agent welcomed here anyway (b not yet seen back) is handed over once b has settled.
  const agents = ofB.map((id) => new FakeAgent(id, clock.now(), failed));
  const loop = handoff(agents, { settleMs: 5000, minAgeMs: 1000 });
  try {
    await clock.advance(1000);
    assert.equal(redirected(agents), 0, "b has not settled");
    await clock.advance(2000);
    assert.equal(redirected(agents), agents.length);
    // Failing to reach b after it came back would still avoid it.
    assert.equal(
      placement.decide(ofB[0], { avoid: [{ id: "b", at: clock.now() }] }).kind,
      "welcome",
    );
  } finally {
    loop.stop();
  }
});
