import assert from "node:assert/strict";
import {
  agentId,
  type LookupRow,
  lookupTable,
  PLACEMENT_BEGIN_MARK,
  PLACEMENT_END_MARK,
  type PlacementLookupResults,
  placementVerdicts,
  renderPlacementMarkdown,
  renderPlacementText,
  runPlacementLookup,
  serverList,
  spreadStats,
} from "./placement.ts";
import type { MachineInfo } from "./_report.ts";

const machine: MachineInfo = {
  date: "2026-11-27 10:00 UTC",
  cpus: 2,
  cpuModel: "Test CPU",
  memoryGiB: 8,
  kernel: "6.1",
  load: "0.10 0.20 0.30",
  deno: "2.9.6",
  v8: "14.0",
  natsServer: "not installed",
  natsClient: "2.29.3",
};

function row(
  servers: number,
  nsPerLookup: number,
  weights: "equal" | "mixed" = "equal",
): LookupRow {
  return {
    servers,
    weights,
    nsPerLookup,
    minNs: nsPerLookup - 1,
    maxNs: nsPerLookup + 1,
    nsPerServer: nsPerLookup / servers,
    cpuNsPerLookup: nsPerLookup,
    unpreparedNs: nsPerLookup * 20,
  };
}

function results(lookup: LookupRow[]): PlacementLookupResults {
  return { idLength: 12, pool: 1024, processes: 3, runs: 3, runMs: 10, lookup, spread: [] };
}

Deno.test("spreadStats() measures counts against the weighted ideal", () => {
  const equal = serverList(4, "equal");
  assert.deepEqual(spreadStats(equal, [250, 250, 250, 250]), {
    maxDeviation: 0,
    maxZ: 0,
    chi2PerDf: 0,
  });
  const off = spreadStats(equal, [275, 250, 250, 225]);
  assert.equal(off.maxDeviation, 0.1);
  // sd = sqrt(1000 · 1/4 · 3/4) ≈ 13.69
  assert.ok(Math.abs(off.maxZ - 25 / Math.sqrt(187.5)) < 1e-12);
  assert.ok(Math.abs(off.chi2PerDf - (625 / 250 * 2) / 3) < 1e-12);
  // Mixed lists cycle health 0, 1, 3: weights 4, 2, 1, so 700 agents split 400, 200, 100.
  const mixed = serverList(3, "mixed");
  assert.deepEqual(mixed.map((s) => s.health), [0, 1, 3]);
  assert.equal(spreadStats(mixed, [400, 200, 100]).maxDeviation, 0);
});

Deno.test("serverList() and agentId() are deterministic and look like real ids", () => {
  assert.deepEqual(serverList(10, "equal"), serverList(10, "equal"));
  for (const s of serverList(10, "mixed")) assert.match(s.id, /^srv-[A-Za-z0-9][\w-]{7}$/);
  assert.equal(agentId(42), "agent-000042");
});

Deno.test("placementVerdicts() holds every row to 20 ns per server", () => {
  const met = placementVerdicts(results([row(3, 59), row(100, 1999, "mixed")]));
  assert.equal(met.length, 1);
  assert.equal(met[0].met, true);
  const missed = placementVerdicts(results([row(3, 61), row(100, 1500)]))[0];
  assert.equal(missed.met, false);
  assert.match(missed.detail, /equal N=3: 61\.0 ns \(budget 60, over\)/);
  assert.match(missed.detail, /equal N=100: 1500\.0 ns \(budget 2000\)/);
  assert.equal(placementVerdicts(results([]))[0].met, false, "nothing measured is not met");
});

Deno.test("the lookup table and the Markdown block carry the figures and the marks", () => {
  const lookup = [row(3, 45.25), row(10, 120, "mixed")];
  const text = lookupTable(lookup);
  assert.match(text, /\| 3 +\| +equal \| +45\.3 \|/);
  assert.match(text, /\| 10 +\| +4:2:1 \|/);
  const block = renderPlacementMarkdown(
    { load: "1.00 0.50 0.25", lookup: results(lookup) },
    machine,
  );
  assert.ok(block.startsWith(PLACEMENT_BEGIN_MARK));
  assert.ok(block.endsWith(PLACEMENT_END_MARK));
  assert.match(block, /load average 1\.00 0\.50 0\.25/);
  assert.match(block, /\*\*met\*\* — Placement lookup/);
});

Deno.test("runPlacementLookup() measures every case and spreads agents near the ideal", async () => {
  const measured = await runPlacementLookup({
    processes: 0,
    counts: [3, 10],
    runs: 3,
    runMs: 2,
    warmupMs: 2,
    pool: 256,
    spreadAgents: 20_000,
  });
  assert.deepEqual(
    measured.lookup.map((r) => `${r.weights} ${r.servers}`),
    ["equal 3", "equal 10", "mixed 3", "mixed 10"],
  );
  for (const r of measured.lookup) {
    assert.ok(r.nsPerLookup > 0 && Number.isFinite(r.nsPerLookup), JSON.stringify(r));
    assert.ok(r.minNs <= r.nsPerLookup && r.nsPerLookup <= r.maxNs);
  }
  assert.equal(measured.spread.length, 4);
  for (const s of measured.spread) {
    assert.equal(s.agents, 20_000);
    assert.ok(s.maxZ < 4.5, JSON.stringify(s));
  }
  assert.match(renderPlacementText({ load: "0", lookup: measured }), /Placement spread/);
});

Deno.test("runPlacementLookup() times the lookups in fresh processes", async () => {
  const dir = await Deno.makeTempDir({ prefix: "jw-placement-test-" });
  try {
    const measured = await runPlacementLookup({
      processes: 2,
      dir,
      counts: [3],
      runs: 3,
      runMs: 2,
      warmupMs: 2,
      pool: 256,
      spreadAgents: 1000,
    });
    assert.equal(measured.processes, 2);
    assert.deepEqual(measured.lookup.map((r) => r.weights), ["equal", "mixed"]);
    for (const r of measured.lookup) {
      assert.ok(r.nsPerLookup > 0 && Number.isFinite(r.nsPerLookup), JSON.stringify(r));
      assert.ok(r.cpuNsPerLookup > 0, JSON.stringify(r));
    }
    // Each child logged its stderr here (empty when all went well).
    assert.deepEqual(
      [...Deno.readDirSync(dir)].map((e) => e.name).sort(),
      ["placement-0.log", "placement-1.log"],
    );
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
