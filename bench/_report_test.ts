import assert from "node:assert/strict";
import type { DensityRow, DensitySample } from "./density.ts";
import type { FanoutRow, FanoutSample } from "./fanout.ts";
import { type GossipFigures, type GossipResults, summarizeRuns } from "./gossip.ts";
import {
  BEGIN_MARK,
  END_MARK,
  GOSSIP_BEGIN_MARK,
  GOSSIP_END_MARK,
  gossipTable,
  gossipVerdicts,
  marginalMemory,
  ratioLine,
  renderGossipMarkdown,
  renderMarkdown,
  renderText,
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

function figures(joinMs: number, bytes: number): GossipFigures {
  return {
    joinMs,
    failedMs: 6000,
    leftMs: 300,
    notAliveMs: 200,
    bytes,
    ipBytes: bytes + 60,
    udpPackets: 2,
    udpPayloadMean: bytes / 2,
    tcpBytes: 0,
    tcpBytesPerConnection: NaN,
  };
}

function gossip(): GossipResults {
  const jw = summarizeRuns("jw", 5, [figures(200, 450), figures(240, 470), figures(220, 460)]);
  const serf = summarizeRuns("serf", 5, [figures(100, 230), figures(120, 230)]);
  return {
    serf: "0.9.4",
    tcpdump: "tcpdump version 4.99.3",
    repeats: 3,
    captureMs: 35_000,
    trafficAfterMs: 60_000,
    pollMs: { 5: 25 },
    dropped: 0,
    rows: [{
      nodes: 5,
      jw,
      serf,
      ratio: { joinMs: 2, failedMs: 1, leftMs: 1, notAliveMs: 1, bytes: 2 },
    }],
  };
}

Deno.test("gossipTable() shows the median with its range, per system", () => {
  const text = gossipTable(gossip().rows);
  assert.match(text, /\| jw @ 5 +\| +0\.22 \(0\.20–0\.24\) \|/);
  assert.match(text, /\| serf @ 5 +\| +0\.11 \(0\.10–0\.12\) \|/);
  assert.match(text, /460 \(450–470\)/);
});

Deno.test("gossipVerdicts() says by how much each ratio is over 1.0", () => {
  const vs = new Map(gossipVerdicts(gossip()).map((v) => [v.target, v]));
  const join = vs.get("Gossip join convergence: jw/serf ≤ 1.0 at every N")!;
  assert.equal(join.met, false);
  assert.match(join.detail, /5: 2\.00× \(jw 0\.22 s vs serf 0\.11 s; 110 ms \(100%\) over\)/);
  assert.equal(vs.get("Gossip kill -9 detection: jw/serf ≤ 1.0 at every N")!.met, true);
  const bytes = vs.get("Gossip bytes per node per second: jw/serf ≤ 1.0 at every N")!;
  assert.match(bytes.detail, /230 B\/node\/s \(100%\) over/);
});

Deno.test("the gossip report has its own block; the main block keeps its ratio line", () => {
  const all = { ...results(), gossip: gossip() };
  assert.match(ratioLine(all), /gossip jw\/serf join\/kill-9\/left\/not-alive\/bytes 5=2\.00×/);
  assert.doesNotMatch(renderMarkdown(all), /gossip/);
  const block = renderGossipMarkdown(all);
  assert.ok(block.startsWith(GOSSIP_BEGIN_MARK) && block.endsWith(GOSSIP_END_MARK));
  assert.match(block, /3 runs per N, each figure the \*\*median\*\*/);
  // A gossip-only run lists only the gossip targets.
  const { density: _d, fanout: _f, ...gossipOnly } = all;
  const text = renderText(gossipOnly);
  assert.match(text, /Gossip join convergence/);
  assert.doesNotMatch(text, /Memory per idle/);
});

Deno.test("writeDoc() with the gossip marks leaves the main block alone", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const path = `${dir}/benchmarks.md`;
    await writeDoc(path, `${BEGIN_MARK}\nmain\n${END_MARK}`);
    const marks = [GOSSIP_BEGIN_MARK, GOSSIP_END_MARK] as const;
    await writeDoc(path, `${GOSSIP_BEGIN_MARK}\ngossip one\n${GOSSIP_END_MARK}`, marks);
    await writeDoc(path, `${GOSSIP_BEGIN_MARK}\ngossip two\n${GOSSIP_END_MARK}`, marks);
    const text = await Deno.readTextFile(path);
    assert.match(text, /main/);
    assert.doesNotMatch(text, /gossip one/);
    assert.match(text, /gossip two/);
    assert.equal(text.split(GOSSIP_BEGIN_MARK).length, 2);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
