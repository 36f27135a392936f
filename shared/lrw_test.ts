import assert from "node:assert/strict";
import { owner, rank, unitHash, weights } from "./lrw.ts";

const healthy = (...ids: string[]) => ids.map((id) => ({ id, health: 0 }));
const agents = Array.from({ length: 20_000 }, (_, i) => `agent-${i}`);

function shares(servers: { id: string; health: number }[]): Record<string, number> {
  const counts: Record<string, number> = {};
  for (const a of agents) {
    const o = owner(a, servers)!.id;
    counts[o] = (counts[o] ?? 0) + 1;
  }
  return Object.fromEntries(Object.entries(counts).map(([k, v]) => [k, v / agents.length]));
}

Deno.test("unitHash() is stable, inside (0, 1), and depends on both ids", () => {
  const u = unitHash("web-1", "s1");
  assert.equal(u, unitHash("web-1", "s1"));
  assert.ok(u > 0 && u < 1);
  assert.notEqual(u, unitHash("web-1", "s2"));
  assert.notEqual(u, unitHash("web-2", "s1"));
  // The separator keeps ("ab", "c") apart from ("a", "bc").
  assert.notEqual(unitHash("ab", "c"), unitHash("a", "bc"));
});

Deno.test("weights() turns health scores into exact integer ratios", () => {
  const w = (...h: number[]) =>
    weights(h.map((health, i) => ({ id: `s${i}`, health })))
      .map((s) => s.weight);
  assert.deepEqual(w(0, 0, 0), [1, 1, 1]);
  assert.deepEqual(w(0, 1, 3), [4, 2, 1]);
  assert.deepEqual(w(1, 1), [1, 1]);
  assert.deepEqual(w(1, 2), [3, 2]);
  assert.deepEqual(w(-2, 0.7, 7), [8, 8, 1]);
  assert.deepEqual(w(), []);
});

Deno.test("owner() is the same whatever order the servers are listed in", () => {
  const servers = healthy("s1", "s2", "s3", "s4");
  for (const a of agents.slice(0, 500)) {
    assert.equal(owner(a, servers)!.id, owner(a, [...servers].reverse())!.id);
  }
  assert.equal(owner("x", []), undefined);
});

Deno.test("agents spread evenly over equal servers and by weight over unequal ones", () => {
  for (const share of Object.values(shares(healthy("s1", "s2", "s3", "s4")))) {
    assert.ok(Math.abs(share - 0.25) < 0.02, `${share}`);
  }
  // Health 0, 0, 1 → weights 2, 2, 1 → shares 40%, 40%, 20%.
  const s = shares([{ id: "s1", health: 0 }, { id: "s2", health: 0 }, { id: "s3", health: 1 }]);
  assert.ok(Math.abs(s.s1 - 0.4) < 0.02 && Math.abs(s.s2 - 0.4) < 0.02, JSON.stringify(s));
  assert.ok(Math.abs(s.s3 - 0.2) < 0.02, JSON.stringify(s));
});

Deno.test("removing a server moves only its own agents, each to its next-ranked server", () => {
  const all = healthy("s1", "s2", "s3", "s4", "s5");
  const without = all.filter((s) => s.id !== "s3");
  let moved = 0;
  for (const a of agents.slice(0, 5000)) {
    const before = rank(a, all);
    const after = owner(a, without)!;
    if (before[0].id === "s3") {
      moved++;
      assert.equal(after.id, before[1].id);
    } else {
      assert.equal(after.id, before[0].id);
    }
  }
  assert.ok(moved > 800 && moved < 1200, `${moved} of 5000 moved (about a fifth)`);
});

Deno.test("a sicker server sheds agents to the others, and only those", () => {
  const before = healthy("s1", "s2", "s3");
  const after = [{ id: "s1", health: 0 }, { id: "s2", health: 3 }, { id: "s3", health: 0 }];
  let shed = 0;
  for (const a of agents.slice(0, 5000)) {
    const was = owner(a, before)!.id;
    const now = owner(a, after)!.id;
    if (was !== now) {
      assert.equal(was, "s2", "only the sick server loses agents");
      shed++;
    }
    if (was !== "s2") assert.equal(now, was, "nobody else moves");
  }
  assert.ok(shed > 0);
});
