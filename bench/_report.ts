/**
 * Turns benchmark results into tables, a verdict per performance target, and the
 * generated part of docs/benchmarks.md (the hand-written analysis around it is kept).
 *
 * @module
 */
import type { DensityRow } from "./density.ts";
import {
  GOSSIP_METRICS,
  GOSSIP_SYSTEMS,
  type GossipFigures,
  type GossipMetric,
  type GossipResults,
  type GossipRow,
  type GossipSample,
} from "./gossip.ts";
import { readProcFile } from "./_proc.ts";
import type { FanoutRow, FanoutSample, JwProfiles } from "./fanout.ts";
import { type ProfileSummary, summarizeProfile } from "./_profile.ts";
import type { System } from "./_servers.ts";
import { median } from "./_stats.ts";

/** Where the generated block starts and ends in docs/benchmarks.md. */
export const BEGIN_MARK = "<!-- bench:generated:begin (bench/main.ts rewrites this block) -->";
export const END_MARK = "<!-- bench:generated:end -->";
/** Where the gossip benchmark's generated block starts and ends. */
export const GOSSIP_BEGIN_MARK =
  "<!-- bench:gossip:begin (bench/main.ts rewrites this block when the gossip bench runs) -->";
export const GOSSIP_END_MARK = "<!-- bench:gossip:end -->";

/** The machine and software a run was made on. */
export interface MachineInfo {
  date: string;
  cpus: number;
  cpuModel: string;
  memoryGiB: number;
  kernel: string;
  /** /proc/loadavg (1, 5, 15 min) when the run started. */
  load: string;
  deno: string;
  v8: string;
  natsServer: string;
  natsClient: string;
}

/** Settings of a run, printed with the results. */
export interface RunSettings {
  quick: boolean;
  counts: number[];
  rounds: number;
  warmup: number;
  workers: number;
  concurrency: number;
  settleMs: number;
  idleWindowMs: number;
  heartbeat: string;
}

/** Everything one run produced. */
export interface Results {
  machine: MachineInfo;
  settings: RunSettings;
  density?: DensityRow[];
  fanout?: FanoutRow[];
  profiles?: JwProfiles;
  gossip?: GossipResults;
}

/** Reads the machine description. */
export async function machineInfo(natsServer: string, natsClient: string): Promise<MachineInfo> {
  let cpuModel = "unknown";
  let load = "unknown";
  try {
    const text = await readProcFile("/proc/cpuinfo");
    cpuModel = text.match(/^model name\s*:\s*(.+)$/m)?.[1] ?? cpuModel;
    load = (await readProcFile("/proc/loadavg")).split(" ").slice(0, 3).join(" ");
  } catch {
    // not Linux
  }
  return {
    date: new Date().toISOString().slice(0, 16).replace("T", " ") + " UTC",
    cpus: navigator.hardwareConcurrency,
    cpuModel,
    memoryGiB: Deno.systemMemoryInfo().total / 2 ** 30,
    kernel: Deno.osRelease(),
    load,
    deno: Deno.version.deno,
    v8: Deno.version.v8,
    natsServer,
    natsClient,
  };
}

const kib = (bytes: number) => (bytes / 1024).toFixed(1);
const mib = (bytes: number) => (bytes / 2 ** 20).toFixed(1);
const ms = (v: number) => (Number.isFinite(v) ? v.toFixed(v < 10 ? 1 : 0) : "–");
const x = (v: number) => (Number.isFinite(v) ? `${v.toFixed(2)}×` : "–");
const n = (v: number) => v.toLocaleString("en-US");

/** A Markdown table (also readable as plain text in a terminal). */
export function table(head: string[], rows: string[][]): string {
  const widths = head.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i].length)));
  const line = (cells: string[]) =>
    "| " + cells.map((c, i) => (i === 0 ? c.padEnd(widths[i]) : c.padStart(widths[i])))
      .join(" | ") +
    " |";
  const rule = "| " + widths.map((w, i) => (i === 0 ? "-".repeat(w) : "-".repeat(w - 1) + ":"))
    .join(" | ") +
    " |";
  return [line(head), rule, ...rows.map(line)].join("\n");
}

/** The density table. */
export function densityTable(rows: DensityRow[]): string {
  const body: string[][] = [];
  for (const row of rows) {
    for (const s of [row.jw, row.floor]) {
      body.push([
        `${s.system} @ ${n(s.agents)}`,
        mib(s.rssBefore),
        mib(s.rssAfter),
        kib(s.rssPerAgent),
        kib(s.heapPerAgent),
        (s.connectMs / 1000).toFixed(1),
        s.connectsPerSecond.toFixed(0),
        (s.connectCpuSeconds * 1000 / s.agents).toFixed(2),
        `${s.retries}/${s.failures}`,
        (s.idleCpuSeconds / (s.idleWindowMs / 1000) * 100).toFixed(1),
        s.idleAlive ? n(s.idleAlive) : "–",
        s.system === "jw" ? x(row.rssRatio) : "",
      ]);
    }
  }
  return table([
    "server @ agents",
    "RSS before MiB",
    "RSS after MiB",
    "RSS/agent KiB",
    "heap/agent KiB",
    "connect s",
    "connects/s",
    "server CPU ms/connect",
    "retries/refused",
    "idle CPU %",
    "alive in window",
    "RSS jw/floor",
  ], body);
}

/** Memory one more agent costs, from the step between two agent counts. */
export interface MarginalMemory {
  from: number;
  to: number;
  /** RSS per added agent, bytes. */
  jw: number;
  floor: number;
  ratio: number;
}

/**
 * The slope of RSS between consecutive agent counts: what each further agent costs, without
 * the one-time growth (JIT code, sqlite pages, allocator arenas) that the per-N figure spreads
 * over N agents and that weighs most at the smallest N.
 */
export function marginalMemory(rows: DensityRow[]): MarginalMemory[] {
  const sorted = [...rows].sort((a, b) => a.agents - b.agents);
  const out: MarginalMemory[] = [];
  for (let i = 1; i < sorted.length; i++) {
    const a = sorted[i - 1];
    const b = sorted[i];
    const added = b.agents - a.agents;
    if (added <= 0) continue;
    const jw = (b.jw.rssAfter - a.jw.rssAfter) / added;
    const floor = (b.floor.rssAfter - a.floor.rssAfter) / added;
    out.push({ from: a.agents, to: b.agents, jw, floor, ratio: jw / floor });
  }
  return out;
}

/** The marginal memory table. */
export function marginalTable(steps: MarginalMemory[]): string {
  return table(
    ["agents", "jw KiB/added agent", "floor KiB/added agent", "jw/floor"],
    steps.map((m) => [`${n(m.from)} → ${n(m.to)}`, kib(m.jw), kib(m.floor), x(m.ratio)]),
  );
}

/** The fan-out table. */
export function fanoutTable(rows: FanoutRow[]): string {
  const body: string[][] = [];
  for (const row of rows) {
    for (const system of ["jw", "nats", "floor"] as System[]) {
      const s: FanoutSample | undefined = row.samples[system];
      if (!s) continue;
      body.push([
        `${system} @ ${n(s.agents)}`,
        ms(s.p50),
        ms(s.p99),
        ms(median(s.roundsMs)),
        String(s.roundsMs.length),
        s.cpuPerRound.toFixed(3),
        s.wallPerRound.toFixed(3),
        system === "jw" ? `${x(row.natsRatio.p50)} / ${x(row.natsRatio.p99)}` : "",
        system === "jw" ? `${x(row.floorRatio.p50)} / ${x(row.floorRatio.p99)}` : "",
      ]);
    }
  }
  return table([
    "server @ agents",
    "p50 ms",
    "p99 ms",
    "median ms",
    "rounds",
    "server CPU-s/round",
    "wall s/round",
    "jw/NATS p50 / p99",
    "jw/floor p50 / p99",
  ], body);
}

/** The one-line summary of every ratio. */
export function ratioLine(results: Results): string {
  const parts: string[] = [];
  if (results.density?.length) {
    parts.push(
      "RSS/agent jw/floor " +
        results.density.map((r) => `${n(r.agents)}=${x(r.rssRatio)}`).join(" "),
    );
  }
  if (results.fanout?.length) {
    parts.push(
      "fan-out p50/p99 jw/NATS " +
        results.fanout.map((r) => `${n(r.agents)}=${x(r.natsRatio.p50)}/${x(r.natsRatio.p99)}`)
          .join(" "),
    );
    parts.push(
      "jw/floor " +
        results.fanout.map((r) => `${n(r.agents)}=${x(r.floorRatio.p50)}/${x(r.floorRatio.p99)}`)
          .join(" "),
    );
  }
  if (results.gossip?.rows.length) {
    parts.push(
      "gossip jw/serf join/kill-9/left/not-alive/bytes " +
        results.gossip.rows.map((r) =>
          `${r.nodes}=${GOSSIP_METRICS.map((m) => x(r.ratio[m])).join("/")}`
        ).join(" "),
    );
  }
  return `ratios: ${parts.join("; ")}`;
}

/** One performance target and how this run did against it. */
export interface Verdict {
  target: string;
  /** true met, false missed, undefined not measured in this run. */
  met: boolean | undefined;
  detail: string;
}

/** Checks each performance target against the results. */
export function verdicts(results: Results): Verdict[] {
  const out: Verdict[] = [];
  const density = results.density ?? [];
  const fanout = results.fanout ?? [];

  if (density.length) {
    const worst = density.reduce((a, b) => (b.rssRatio > a.rssRatio ? b : a));
    const met = density.every((r) => r.rssRatio <= 1.25);
    const perN = density.map((r) =>
      `${n(r.agents)}: ${kib(r.jw.rssPerAgent)} vs ${kib(r.floor.rssPerAgent)} KiB (${
        x(r.rssRatio)
      })`
    ).join("; ");
    const budget = worst.floor.rssPerAgent * 1.25;
    const steps = marginalMemory(density);
    const slope = steps.length
      ? `; per added agent ${
        steps.map((m) => `${n(m.from)} → ${n(m.to)}: ${x(m.ratio)}`).join(", ")
      }`
      : "";
    out.push({
      target: "Memory per idle authenticated agent ≤ 1.25 × the Deno WebSocket floor",
      met,
      detail: met
        ? perN + slope
        : `${perN}${slope}. Worst at ${n(worst.agents)}: ${
          kib(worst.jw.rssPerAgent - budget)
        } KiB per agent over the 1.25× budget (${kib(budget)} KiB)`,
    });
  } else {
    out.push({ target: "Memory per idle agent ≤ 1.25 × floor", met: undefined, detail: "not run" });
  }

  if (fanout.length) {
    const withNats = fanout.filter((r) => Number.isFinite(r.natsRatio.p50));
    const met = withNats.length > 0 &&
      withNats.every((r) => r.natsRatio.p50 <= 1 && r.natsRatio.p99 <= 1);
    out.push({
      target: "Fan-out round trip: jw/NATS ≤ 1.0 at every N (p50 and p99)",
      met: withNats.length ? met : undefined,
      detail: withNats.map((r) =>
        `${n(r.agents)}: p50 ${x(r.natsRatio.p50)}, p99 ${x(r.natsRatio.p99)}` +
        (r.natsRatio.p99 > 1 || r.natsRatio.p50 > 1
          ? ` (jw ${ms(r.samples.jw!.p50)}/${ms(r.samples.jw!.p99)} ms vs NATS ${
            ms(r.samples.nats!.p50)
          }/${ms(r.samples.nats!.p99)} ms)`
          : "")
      ).join("; ") || "NATS not run",
    });
    const withFloor = fanout.filter((r) => Number.isFinite(r.floorRatio.p50));
    const floorMet = withFloor.length > 0 &&
      withFloor.every((r) => r.floorRatio.p50 <= 2 && r.floorRatio.p99 <= 2);
    out.push({
      target: "Fan-out round trip: jw ≤ 2.0 × the Deno WebSocket floor",
      met: withFloor.length ? floorMet : undefined,
      detail: withFloor.map((r) =>
        `${n(r.agents)}: p50 ${x(r.floorRatio.p50)}, p99 ${x(r.floorRatio.p99)}`
      ).join("; ") || "floor not run",
    });
    const at1k = fanout.find((r) => r.agents === 1000)?.samples.jw;
    out.push({
      target: "Fan-out p99 ≤ 150 ms at 1,000 agents",
      met: at1k ? at1k.p99 <= 150 : undefined,
      detail: at1k
        ? `p99 ${ms(at1k.p99)} ms` +
          (at1k.p99 > 150 ? ` (${ms(at1k.p99 - 150)} ms over)` : "")
        : "not run at 1,000 agents",
    });
  }

  const cold = density.find((r) => r.agents === 10_000)?.jw;
  out.push({
    target: "10,000 agents connect from cold in ≤ 20 s with no failed handshake",
    met: cold ? cold.connectMs <= 20_000 && cold.failures === 0 && cold.retries === 0 : undefined,
    detail: cold
      ? `${(cold.connectMs / 1000).toFixed(1)} s (${
        cold.connectsPerSecond.toFixed(0)
      } handshakes/s), ` +
        `${cold.failures} refused, ${cold.retries} retried` +
        (cold.connectMs > 20_000 ? `; ${((cold.connectMs - 20_000) / 1000).toFixed(1)} s over` : "")
      : "not run at 10,000 agents",
  });
  return out;
}

/** How each gossip target figure is named in tables and verdicts. */
const GOSSIP_LABELS: Record<GossipMetric, string> = {
  joinMs: "join convergence",
  failedMs: "kill -9 detection",
  leftMs: "graceful leave, shown as left everywhere",
  notAliveMs: "graceful leave, no longer alive anywhere",
  bytes: "bytes per node per second",
};

const seconds = (v: number) => (Number.isFinite(v) ? (v / 1000).toFixed(2) : "–");
const whole = (v: number) => (Number.isFinite(v) ? v.toFixed(0) : "–");
const oneDecimal = (v: number) => (Number.isFinite(v) ? v.toFixed(1) : "–");

/** A gossip figure in its unit: seconds for times, whole bytes otherwise. */
function gossipValue(metric: keyof GossipFigures, v: number): string {
  if (metric.endsWith("Ms")) return seconds(v);
  return metric === "udpPackets" ? oneDecimal(v) : whole(v);
}

/** "median (min–max)" over the runs, or just the value for a single run. */
function spread(sample: GossipSample, metric: keyof GossipFigures): string {
  const med = gossipValue(metric, sample.median[metric]);
  const runs = sample.runs.filter((r) => Number.isFinite(r[metric])).length;
  if (runs < 2) return med;
  return `${med} (${gossipValue(metric, sample.min[metric])}–${
    gossipValue(metric, sample.max[metric])
  })`;
}

/** The gossip table: one row per system and N, medians with their range. */
export function gossipTable(rows: GossipRow[]): string {
  const body: string[][] = [];
  for (const row of rows) {
    for (const system of GOSSIP_SYSTEMS) {
      const sample = row[system];
      body.push([
        `${system} @ ${row.nodes}`,
        spread(sample, "joinMs"),
        spread(sample, "failedMs"),
        spread(sample, "leftMs"),
        spread(sample, "notAliveMs"),
        spread(sample, "bytes"),
        gossipValue("ipBytes", sample.median.ipBytes),
        gossipValue("udpPackets", sample.median.udpPackets),
        gossipValue("udpPayloadMean", sample.median.udpPayloadMean),
        gossipValue("tcpBytes", sample.median.tcpBytes),
        gossipValue("tcpBytesPerConnection", sample.median.tcpBytesPerConnection),
      ]);
    }
  }
  return table([
    "system @ nodes",
    "join s",
    "kill -9 → failed s",
    "leave → left s",
    "leave → not alive s",
    "B/node/s",
    "IP B/node/s",
    "UDP pkt/node/s",
    "B/UDP pkt",
    "TCP B/node/s",
    "B/TCP conn",
  ], body);
}

/** The jw/serf ratio of each target figure at each N. */
export function gossipRatioTable(rows: GossipRow[]): string {
  return table(
    ["nodes", "join", "kill -9", "left", "not alive", "B/node/s"],
    rows.map((r) => [String(r.nodes), ...GOSSIP_METRICS.map((m) => x(r.ratio[m]))]),
  );
}

/** One verdict per gossip figure: jw/serf ≤ 1.0 at every N, and by how much it is missed. */
export function gossipVerdicts(gossip: GossipResults): Verdict[] {
  return GOSSIP_METRICS.map((metric) => {
    const measured = gossip.rows.filter((r) => Number.isFinite(r.ratio[metric]));
    const unit = metric === "bytes" ? " B/node/s" : " s";
    const value = (v: number) => gossipValue(metric, v) + unit;
    const detail = measured.map((r) => {
      const jw = r.jw.median[metric];
      const serf = r.serf.median[metric];
      const percent = (r.ratio[metric] - 1) * 100;
      const over = r.ratio[metric] > 1
        ? `; ${metric === "bytes" ? `${whole(jw - serf)} B/node/s` : `${whole(jw - serf)} ms`} (${
          percent.toFixed(percent < 10 ? 1 : 0)
        }%) over`
        : "";
      return `${r.nodes}: ${x(r.ratio[metric])} (jw ${value(jw)} vs serf ${value(serf)}${over})`;
    }).join("; ");
    return {
      target: `Gossip ${GOSSIP_LABELS[metric]}: jw/serf ≤ 1.0 at every N`,
      met: measured.length ? measured.every((r) => r.ratio[metric] <= 1) : undefined,
      detail: detail || "not measured",
    };
  });
}

/** The gossip part of the terminal report. */
function gossipText(gossip: GossipResults): string {
  return [
    `Gossip (jw server cluster vs serf ${gossip.serf}; median (min–max) of ${gossip.repeats} ` +
    `run${gossip.repeats === 1 ? "" : "s"})`,
    gossipTable(gossip.rows),
    "",
    "jw/serf",
    gossipRatioTable(gossip.rows),
  ].join("\n");
}

/** The generated gossip block of docs/benchmarks.md. */
export function renderGossipMarkdown(results: Results & { gossip: GossipResults }): string {
  const { machine: m, gossip: g } = results;
  const polls = Object.entries(g.pollMs).map(([nodes, ms]) => `${ms} ms at ${nodes}`).join(", ");
  const lines = [
    GOSSIP_BEGIN_MARK,
    "",
    `### Latest gossip run (${m.date}${results.settings.quick ? ", quick" : ""})`,
    "",
    `- Machine: ${m.cpus} × ${m.cpuModel}, ${
      m.memoryGiB.toFixed(1)
    } GiB memory, Linux ${m.kernel}; ` +
    `load average ${m.load} at the start.`,
    `- Software: Deno ${m.deno}, serf ${g.serf}, ${g.tcpdump}.`,
    `- Nodes (N): ${g.rows.map((r) => r.nodes).join(", ")}; ${g.repeats} run${
      g.repeats === 1 ? "" : "s"
    } per N, each figure the **median** (range in parentheses); both systems with memberlist's ` +
    "LAN timing (probe 1 s, probe timeout 500 ms, suspicion multiplier 4, gossip 200 ms, " +
    "push-pull 30 s).",
    `- Membership polled on every observing node every ${polls}. ` +
    (g.captureMs > 0
      ? `Traffic: ${g.repeats} consecutive capture windows of ${g.captureMs / 1000} s on ` +
        `clusters that had run for at least ${g.trafficAfterMs / 1000} s, with nothing else ` +
        `running and nothing polled; ${g.dropped} packets dropped by the kernel.`
      : "Traffic not captured."),
    "",
    gossipTable(g.rows),
    "",
    "jw/serf (≤ 1.0 is the target):",
    "",
    gossipRatioTable(g.rows),
    "",
    "#### Gossip targets",
    "",
    verdictLines(gossipVerdicts(g)),
    "",
    "```",
    ratioLine({ machine: results.machine, settings: results.settings, gossip: g }),
    "```",
    "",
    GOSSIP_END_MARK,
  ];
  return lines.join("\n");
}

function verdictLines(vs: Verdict[]): string {
  return vs.map((v) =>
    `- **${
      v.met === undefined ? "not measured" : v.met ? "met" : "missed"
    }** — ${v.target}: ${v.detail}`
  ).join("\n");
}

function hotSpots(title: string, s: ProfileSummary, count = 12): string {
  const busy = s.totalMs - s.idleMs - s.inspectorMs;
  const rows = (list: typeof s.self) =>
    list.slice(0, count).map((h) => [h.name, h.ms.toFixed(0), `${(h.share * 100).toFixed(1)}%`]);
  return [
    `#### ${title}: ${(busy / 1000).toFixed(2)} s busy of ${
      (s.totalMs / 1000).toFixed(2)
    } s sampled`,
    "",
    `(Shares are of the busy time. The inspector's own reporting of WebSocket frames, ` +
    `${(s.inspectorMs / 1000).toFixed(2)} s, exists only while profiling and is left out.)`,
    "",
    "Self time by function:",
    "",
    table(["function (file:line)", "ms", "share"], rows(s.self)),
    "",
    "Inclusive time (callees counted) by function:",
    "",
    table(["function (file:line)", "ms", "share"], rows(s.inclusive)),
    "",
    "Self time by file:",
    "",
    table(["file", "ms", "share"], rows(s.files)),
  ].join("\n");
}

/** The terminal report: tables, verdicts, profile summaries. */
export function renderText(results: Results): string {
  const parts: string[] = [];
  if (results.density) {
    parts.push("Density (idle agents)\n" + densityTable(results.density));
    const steps = marginalMemory(results.density);
    if (steps.length) parts.push("Memory per added agent\n" + marginalTable(steps));
  }
  if (results.fanout) {
    parts.push("Fan-out (all agents, one command)\n" + fanoutTable(results.fanout));
  }
  if (results.gossip) parts.push(gossipText(results.gossip));
  const targets = [
    ...(results.density || results.fanout ? verdicts(results) : []),
    ...(results.gossip ? gossipVerdicts(results.gossip) : []),
  ];
  parts.push("Targets\n" + verdictLines(targets));
  if (results.profiles) {
    const p = results.profiles;
    parts.push(
      hotSpots(`jw server while ${n(p.agents)} agents connect`, summarizeProfile(p.connect), 8),
    );
    parts.push(
      hotSpots(
        `jw server over ${p.rounds} fan-out rounds to ${n(p.agents)} agents`,
        summarizeProfile(p.fanout),
        8,
      ),
    );
  }
  parts.push(ratioLine(results));
  return parts.join("\n\n");
}

/** The generated block of docs/benchmarks.md. */
export function renderMarkdown(results: Results): string {
  const { machine: m, settings: s } = results;
  const lines = [
    BEGIN_MARK,
    "",
    `## Latest run (${m.date}${s.quick ? ", quick" : ""})`,
    "",
    `- Machine: ${m.cpus} × ${m.cpuModel}, ${
      m.memoryGiB.toFixed(1)
    } GiB memory, Linux ${m.kernel}; ` +
    `load average ${m.load} at the start.`,
    `- Software: Deno ${m.deno} (V8 ${m.v8}), nats-server ${m.natsServer}, npm nats ${m.natsClient}.`,
    `- Agents (N): ${s.counts.map(n).join(", ")}; swarm: ${s.workers} worker processes, ` +
    `${s.concurrency} connects in flight per worker.`,
    `- Fan-out: ${s.warmup} warm-up rounds, then ${s.rounds} measured rounds per server and N.`,
    `- Density: settle ${s.settleMs / 1000} s and a full GC before each memory reading; idle CPU ` +
    `over ${s.idleWindowMs / 1000} s with heartbeats every ${s.heartbeat}.`,
    `- **The swarm clients run on the same ${m.cpus} cores as the server under test**: client ` +
    "CPU competes with the server, so wall times include client work. Server CPU-seconds " +
    "per round are the server process's own (utime + stime from /proc).",
    "",
  ];
  if (results.density) {
    lines.push(
      "### Density (connected, authenticated, idle agents)",
      "",
      densityTable(results.density),
      "",
    );
    const steps = marginalMemory(results.density);
    if (steps.length) {
      lines.push(
        "Memory per added agent (the RSS step between two agent counts, each read from a fresh " +
          "server; one-time growth cancels out):",
        "",
        marginalTable(steps),
        "",
      );
    }
  }
  if (results.fanout) {
    lines.push(
      "### Fan-out (one command to all N, all N replies back)",
      "",
      fanoutTable(results.fanout),
      "",
    );
  }
  lines.push("### Targets", "", verdictLines(verdicts(results)), "");
  lines.push("```", ratioLine({ ...results, gossip: undefined }), "```", "");
  if (results.profiles) {
    const p = results.profiles;
    lines.push(
      "### Profile of the jw server (V8 sampling profiler, separate pass)",
      "",
      hotSpots(`While ${n(p.agents)} agents connect`, summarizeProfile(p.connect)),
      "",
      hotSpots(
        `Over ${p.rounds} fan-out rounds to ${n(p.agents)} agents`,
        summarizeProfile(p.fanout),
      ),
      "",
    );
  }
  lines.push(END_MARK);
  return lines.join("\n");
}

const DEFAULT_DOC = `# Benchmarks

How many agents one \`jw server\` holds and how fast a command reaches all of them and comes back,
measured side by side with NATS (\`nats-server\` from Debian, npm \`nats\` clients) and with the
runtime's floor (a bare \`Deno.serve\` WebSocket server), on the same machine, in one run; and
how a cluster of \`jw server\`s gossips next to a cluster of Serf agents.
Run it with \`npx -y deno@2.9.6 task bench\` (about 15 minutes on the 2-core machine; \`--quick\`
for a smoke run, \`--help\` for the flags). \`scripts/install-bench-deps.sh\` installs nats-server,
serf and tcpdump.

`;

/**
 * Writes `block` into `path`, replacing the previous block between `marks` (default: the
 * main generated block) and keeping everything else; a block not yet in the file is added
 * at its end. Creates the file with a short header when missing.
 */
export async function writeDoc(
  path: string,
  block: string,
  marks: readonly [string, string] = [BEGIN_MARK, END_MARK],
): Promise<void> {
  const [beginMark, endMark] = marks;
  let text: string;
  try {
    text = await Deno.readTextFile(path);
  } catch {
    text = DEFAULT_DOC + beginMark + "\n" + endMark + "\n";
  }
  const begin = text.indexOf(beginMark);
  const end = text.indexOf(endMark);
  const next = begin >= 0 && end > begin
    ? text.slice(0, begin) + block + text.slice(end + endMark.length)
    : text.trimEnd() + "\n\n" + block + "\n";
  await Deno.writeTextFile(path, next);
}
