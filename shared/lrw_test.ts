import assert from "node:assert/strict";
import { createPlacement, type LrwServer, owner, rank, score, unitHash, weights } from "./lrw.ts";
import { seededRandom } from "./random.ts";

const healthy = (...ids: string[]) => ids.map((id) => ({ id, health: 0 }));
const named = (prefix: string, n: number, health = (_i: number) => 0) =>
  Array.from({ length: n }, (_, i) => ({ id: `${prefix}-${i}`, health: health(i) }));
const agents = Array.from({ length: 100_000 }, (_, i) => `agent-${i}`);

function counts(servers: readonly LrwServer[], ids: readonly string[]): Map<string, number> {
  const placement = createPlacement(servers);
  const out = new Map(servers.map((s) => [s.id, 0]));
  for (const a of ids) {
    const id = placement.owner(a)!.id;
    out.set(id, out.get(id)! + 1);
  }
  return out;
}

/**
 * Asserts every server's count is within `sigmas` binomial standard deviations of its
 * weighted ideal, and returns the largest deviation relative to the ideal.
 */
function assertBalanced(servers: readonly LrwServer[], ids: readonly string[], sigmas = 4.5) {
  const weighted = weights(servers);
  const total = weighted.reduce((acc, s) => acc + s.weight, 0);
  const got = counts(servers, ids);
  let worst = 0;
  for (const s of weighted) {
    const p = s.weight / total;
    const ideal = ids.length * p;
    const sd = Math.sqrt(ids.length * p * (1 - p));
    const n = got.get(s.id)!;
    assert.ok(
      Math.abs(n - ideal) <= sigmas * sd,
      `${s.id}: ${n} agents, ideal ${ideal.toFixed(0)} ± ${sd.toFixed(0)}`,
    );
    worst = Math.max(worst, Math.abs(n - ideal) / ideal);
  }
  return worst;
}

/**
 * The owner by the definition, without any shortcut: every score computed with `score()`;
 * servers of equal weight compared by `u`, of different weights by score, then smaller id.
 */
function referenceOwner(agentId: string, servers: readonly LrwServer[]): string {
  const ws = weights(servers).map((s) => ({
    ...s,
    u: unitHash(agentId, s.id),
    score: score(agentId, s.id, s.weight),
  }));
  let best = ws[0];
  for (const s of ws.slice(1)) {
    const higher = s.weight === best.weight ? s.u > best.u : s.score > best.score;
    const tie = s.weight === best.weight ? s.u === best.u : s.score === best.score;
    if (higher || (tie && s.id < best.id)) best = s;
  }
  return best.id;
}

Deno.test("unitHash() is stable, inside (0, 1), and depends on both ids and their roles", () => {
  const u = unitHash("web-1", "s1");
  assert.equal(u, unitHash("web-1", "s1"));
  assert.ok(u > 0 && u < 1);
  assert.notEqual(u, unitHash("web-1", "s2"));
  assert.notEqual(u, unitHash("web-2", "s1"));
  assert.notEqual(unitHash("ab", "c"), unitHash("a", "bc"));
  // An id hashes differently as an agent and as a server.
  assert.notEqual(unitHash("x", "y"), unitHash("y", "x"));
  assert.notEqual(unitHash("x", "x"), unitHash("y", "y"));
  // Code units above 0xff count in full.
  assert.notEqual(unitHash("\u0101", "s1"), unitHash("\u0001", "s1"));
  assert.notEqual(unitHash("\u{1f600}", "s1"), unitHash("\u{1f601}", "s1"));
});

Deno.test("unitHash() and owner() give these exact values (a change of the hash moves agents)", () => {
  const pinned: [string, string, number][] = [
    ["web-1", "s1", 0.33729162532236157],
    ["web-1", "s2", 0.9258894226929254],
    ["web-2", "s1", 0.23281562251855026],
    ["", "", 0.3816370803530693],
    ["agent-000042", "3f2a9c1e-srv", 0.9572816012266019],
    ["é", "ü", 0.644898395402055],
  ];
  for (const [a, s, u] of pinned) assert.equal(unitHash(a, s), u, `${a} on ${s}`);

  const three = healthy("s1", "s2", "s3");
  const mixed = [{ id: "alpha", health: 0 }, { id: "beta", health: 1 }, { id: "gamma", health: 3 }];
  const ten = named("server", 10);
  const owners: [string, string, string, string][] = [
    ["web-1", "s2", "alpha", "server-0"],
    ["web-2", "s1", "alpha", "server-2"],
    ["web-3", "s1", "beta", "server-0"],
    ["db-1", "s2", "alpha", "server-6"],
    ["db-2", "s3", "beta", "server-7"],
    ["agent-000042", "s3", "alpha", "server-8"],
    ["ünïcödé", "s2", "beta", "server-0"],
    ["", "s1", "alpha", "server-8"],
  ];
  for (const [a, inThree, inMixed, inTen] of owners) {
    assert.deepEqual(
      [owner(a, three)!.id, owner(a, mixed)!.id, owner(a, ten)!.id],
      [inThree, inMixed, inTen],
      a,
    );
  }
});

Deno.test("owner() orders keys that agree in their top 21 bits by the rest", () => {
  // Found by search: each agent's u on s1 and s2 agree in the first 21 bits.
  const cases: [string, string][] = [
    ["tie-2906646", "s1"],
    ["tie-3887002", "s2"],
    ["tie-4522433", "s1"],
  ];
  for (const [a, expected] of cases) {
    const [u1, u2] = [unitHash(a, "s1"), unitHash(a, "s2")];
    assert.equal(Math.floor(u1 * 2 ** 21), Math.floor(u2 * 2 ** 21), a);
    assert.equal(u1 > u2 ? "s1" : "s2", expected, a);
    for (const servers of [healthy("s1", "s2"), healthy("s2", "s1")]) {
      assert.equal(owner(a, servers)!.id, expected, a);
      assert.equal(createPlacement(servers).owner(a)!.id, expected, a);
      assert.equal(rank(a, servers)[0].id, expected, a);
    }
  }
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
  assert.deepEqual(w(0, 1, 2, 3, 4, 5, 6, 7), [840, 420, 280, 210, 168, 140, 120, 105]);
  assert.deepEqual(w(), []);
});

Deno.test("owner() and createPlacement().owner() agree with the definition, for all weights", async (t) => {
  const cases: [string, LrwServer[]][] = [
    ["3 equal", named("s", 3)],
    ["10 equal", named("s", 10)],
    ["0, 1, 3", named("s", 3, (i) => [0, 1, 3][i])],
    ["0 and 7", named("s", 2, (i) => i * 7)],
    ["health 0..7", named("s", 8, (i) => i)],
    ["two sick of 12", named("s", 12, (i) => (i === 3 ? 2 : i === 8 ? 5 : 0))],
  ];
  const random = seededRandom(7);
  cases.push(["random 30", named("r", 30, () => Math.floor(random.float() * 4))]);
  for (const [name, servers] of cases) {
    await t.step(name, () => {
      const placement = createPlacement(servers);
      for (const a of agents.slice(0, 20_000)) {
        const id = placement.owner(a)!.id;
        assert.equal(id, referenceOwner(a, servers), a);
        assert.equal(owner(a, servers)!.id, id, a);
        if (a.endsWith("7")) assert.equal(placement.rank(a)[0].id, id, a);
      }
    });
  }
});

Deno.test("rank() orders servers by score, ties by id, and returns the caller's objects", () => {
  const servers = [
    { id: "c", health: 0, url: "http://c" },
    { id: "a", health: 2, url: "http://a" },
    { id: "b", health: 1, url: "http://b" },
    { id: "d", health: 0, url: "http://d" },
  ];
  const w = new Map(weights(servers).map((s) => [s.id, s.weight]));
  for (const a of agents.slice(0, 2000)) {
    const ranked = rank(a, servers);
    assert.equal(ranked.length, servers.length);
    for (const s of ranked) assert.ok(servers.includes(s), "the caller's objects");
    for (let i = 1; i < ranked.length; i++) {
      const prev = score(a, ranked[i - 1].id, w.get(ranked[i - 1].id)!);
      const next = score(a, ranked[i].id, w.get(ranked[i].id)!);
      assert.ok(prev > next || (prev === next && ranked[i - 1].id < ranked[i].id), a);
    }
  }
});

Deno.test("a placement keeps its own copy of the list and handles no and one server", () => {
  const list = healthy("s1", "s2");
  const placement = createPlacement(list);
  const before = placement.owner("web-1");
  list.length = 0;
  assert.equal(placement.owner("web-1"), before);
  assert.equal(placement.servers.length, 2);
  assert.ok(Object.isFrozen(placement.servers));

  const none = createPlacement([]);
  assert.equal(none.owner("web-1"), undefined);
  assert.deepEqual(none.rank("web-1"), []);
  assert.equal(owner("x", []), undefined);
  const only = { id: "solo", health: 5 };
  assert.equal(owner("web-1", [only]), only);
});

Deno.test("owner() is the same whatever order the servers are listed in", () => {
  for (const servers of [healthy("s1", "s2", "s3", "s4"), named("s", 5, (i) => i % 3)]) {
    const forward = createPlacement(servers);
    const backward = createPlacement([...servers].reverse());
    for (const a of agents.slice(0, 2000)) {
      assert.equal(forward.owner(a)!.id, backward.owner(a)!.id);
    }
  }
});

Deno.test("100,000 agents spread within 4.5 standard deviations of the weighted ideal", async (t) => {
  for (const n of [3, 10, 50]) {
    await t.step(`${n} equal servers`, () => {
      const worst = assertBalanced(named("server", n), agents);
      // The binomial noise itself: about 1% of the ideal at 3 servers, 5% at 50.
      assert.ok(worst < (n === 50 ? 0.1 : 0.03), `worst deviation ${worst}`);
    });
  }
  await t.step("10 servers, health 0, 1, 3 (weights 4, 2, 1)", () => {
    const worst = assertBalanced(named("server", 10, (i) => [0, 1, 3][i % 3]), agents);
    assert.ok(worst < 0.05, `worst deviation ${worst}`);
  });
  await t.step("agent ids that differ only in their last characters, UUID-like servers", () => {
    const servers = Array.from({ length: 4 }, (_, i) => ({
      id: `9c4e1a7${i}-5b2d-4f0e-8a31-0c6d2e9f7b1${i}`,
      health: 0,
    }));
    assertBalanced(servers, Array.from({ length: 40_000 }, (_, i) => `host${i}`));
  });
});

Deno.test("removing a server moves only its own agents, each to its next-ranked server", () => {
  const all = healthy("s1", "s2", "s3", "s4", "s5");
  const without = createPlacement(all.filter((s) => s.id !== "s3"));
  let moved = 0;
  for (const a of agents.slice(0, 5000)) {
    const before = rank(a, all);
    const after = without.owner(a)!;
    if (before[0].id === "s3") {
      moved++;
      assert.equal(after.id, before[1].id);
    } else {
      assert.equal(after.id, before[0].id);
    }
  }
  assert.ok(moved > 800 && moved < 1200, `${moved} of 5000 moved (about a fifth)`);
});

Deno.test("adding a server moves about 1/N of the agents, all of them to the new server", () => {
  for (const [n, health] of [[4, (_i: number) => 0], [9, (i: number) => i % 3]] as const) {
    const before = createPlacement(named("s", n, health));
    const added = { id: "new", health: 0 };
    const grown = [...named("s", n, health), added];
    const after = createPlacement(grown);
    const w = weights(grown);
    const share = w[n].weight / w.reduce((acc, s) => acc + s.weight, 0);
    let moved = 0;
    const sample = agents.slice(0, 20_000);
    for (const a of sample) {
      const was = before.owner(a)!;
      const now = after.owner(a)!;
      if (was.id !== now.id) {
        assert.equal(now, added, `${a} moved between old servers`);
        moved++;
      }
    }
    const expected = sample.length * share;
    const sd = Math.sqrt(sample.length * share * (1 - share));
    assert.ok(Math.abs(moved - expected) < 4.5 * sd, `${moved} moved, expected ${expected}`);
  }
});

Deno.test("a sicker server sheds agents to the others, and only those", () => {
  const before = createPlacement(healthy("s1", "s2", "s3"));
  const after = createPlacement([
    { id: "s1", health: 0 },
    { id: "s2", health: 3 },
    { id: "s3", health: 0 },
  ]);
  let shed = 0;
  for (const a of agents.slice(0, 5000)) {
    const was = before.owner(a)!.id;
    const now = after.owner(a)!.id;
    if (was !== now) {
      assert.equal(was, "s2", "only the sick server loses agents");
      shed++;
    }
    if (was !== "s2") assert.equal(now, was, "nobody else moves");
  }
  // Weights 4, 1, 4: s2 keeps 1/9 of the agents instead of 1/3.
  assert.ok(shed > 1000 && shed < 1200, `${shed} of 5000 shed (about 2/9)`);
});
