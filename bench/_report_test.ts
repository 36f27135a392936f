import assert from "node:assert/strict";
import type { DensityRow, DensitySample } from "./density.ts";
import type { FanoutRow, FanoutSample } from "./fanout.ts";
import {
  BEGIN_MARK,
  END_MARK,
  marginalMemory,
  type Results,
  table,
  verdicts,
  writeDoc,
} from "./_report.ts";

function density(system: "jw" | "floor", rssPerAgent: number): DensitySample {
  return {
    system,
    agents: 10_000,
    serverCount: 10_000,
    rssBefore: 60 << 20,
    rssAfter: (60 << 20) + rssPerAgent * 10_000,
    rssPerAgent,
    heapBefore: 4 << 20,
    heapAfter: 60 << 20,
    heapPerAgent: 6000,
    heapTotalAfter: 70 << 20,
    connectMs: system === "jw" ? 12_000 : 2_000,
    connectsPerSecond: system === "jw" ? 833 : 5000,
    connectCpuSeconds: 6,
    retries: 0,
    failures: 0,
    idleCpuSeconds: 0.5,
    idleWindowMs: 10_000,
    idleAlive: system === "jw" ? 6000 : 0,
  };
}

function fanout(system: "jw" | "nats" | "floor", p50: number, p99: number): FanoutSample {
  return {
    system,
    agents: 1000,
    roundsMs: [p50, p99],
    p50,
    p99,
    cpuPerRound: 0.05,
    wallPerRound: 0.1,
    connectMs: 1000,
    retries: 0,
  };
}

function results(): Results {
  const row: DensityRow = {
    agents: 10_000,
    jw: density("jw", 30 * 1024),
    floor: density("floor", 20 * 1024),
    rssRatio: 1.5,
  };
  const fan: FanoutRow = {
    agents: 1000,
    samples: {
      jw: fanout("jw", 100, 160),
      nats: fanout("nats", 50, 80),
      floor: fanout("floor", 40, 60),
    },
    natsRatio: { p50: 2, p99: 2 },
    floorRatio: { p50: 2.5, p99: 160 / 60 },
  };
  return {
    machine: {
      date: "2026-11-27 06:00 UTC",
      cpus: 2,
      cpuModel: "test",
      memoryGiB: 24,
      kernel: "6",
      load: "0 0 0",
      deno: "2.9.6",
      v8: "15",
      natsServer: "v2.9.10",
      natsClient: "2.29.3",
    },
    settings: {
      quick: false,
      counts: [1000, 10_000],
      rounds: 20,
      warmup: 3,
      workers: 4,
      concurrency: 100,
      settleMs: 5000,
      idleWindowMs: 10_000,
      heartbeat: "15s",
    },
    density: [row],
    fanout: [fan],
  };
}

Deno.test("table() right-aligns every column but the first", () => {
  assert.equal(
    table(["name", "ms"], [["jw", "5"], ["nats", "10"]]),
    "| name | ms |\n| ---- | -: |\n| jw   |  5 |\n| nats | 10 |",
  );
});

Deno.test("verdicts() says by how much each target is missed", () => {
  const vs = new Map(verdicts(results()).map((v) => [v.target, v]));
  const memory = vs.get("Memory per idle authenticated agent ≤ 1.25 × the Deno WebSocket floor")!;
  assert.equal(memory.met, false);
  assert.match(memory.detail, /5\.0 KiB per agent over the 1\.25× budget \(25\.0 KiB\)/);
  const p99 = vs.get("Fan-out p99 ≤ 150 ms at 1,000 agents")!;
  assert.equal(p99.met, false);
  assert.match(p99.detail, /p99 160 ms \(10 ms over\)/);
  const cold = vs.get("10,000 agents connect from cold in ≤ 20 s with no failed handshake")!;
  assert.equal(cold.met, true);
  assert.equal(vs.get("Fan-out round trip: jw/NATS ≤ 1.0 at every N (p50 and p99)")!.met, false);
});

Deno.test("marginalMemory() takes the RSS step between consecutive agent counts", () => {
  const row = (agents: number, jwMiB: number, floorMiB: number): DensityRow => {
    const sample = (system: "jw" | "floor", mib: number) => ({
      ...density(system, 0),
      agents,
      rssAfter: mib * 2 ** 20,
    });
    return { agents, jw: sample("jw", jwMiB), floor: sample("floor", floorMiB), rssRatio: 1 };
  };
  // Given out of order; 1,024 more agents cost 20 MiB (jw) and 16 MiB (floor).
  const steps = marginalMemory([row(2048, 140, 116), row(1024, 120, 100)]);
  assert.equal(steps.length, 1);
  assert.equal(steps[0].from, 1024);
  assert.equal(steps[0].to, 2048);
  assert.equal(steps[0].jw, 20 * 1024);
  assert.equal(steps[0].floor, 16 * 1024);
  assert.equal(steps[0].ratio, 1.25);
  assert.deepEqual(marginalMemory([row(1024, 120, 100)]), []);
});

Deno.test("writeDoc() replaces only the generated block", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const path = `${dir}/benchmarks.md`;
    await writeDoc(path, `${BEGIN_MARK}\nfirst\n${END_MARK}`);
    const created = await Deno.readTextFile(path);
    assert.match(created, /^# Benchmarks/);
    assert.match(created, /first/);
    await Deno.writeTextFile(path, created + "\n## Analysis\n\nwritten by hand\n");
    await writeDoc(path, `${BEGIN_MARK}\nsecond\n${END_MARK}`);
    const updated = await Deno.readTextFile(path);
    assert.doesNotMatch(updated, /first/);
    assert.match(updated, /second/);
    assert.match(updated, /## Analysis\n\nwritten by hand/);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
