/**
 * Placement: weighted rendezvous hashing (shared/lrw.ts), the function every server and agent
 * runs to find an agent's owner.
 *
 * - **Lookup** ({@link runPlacementLookup}): nanoseconds per `createPlacement(servers).owner(id)`
 *   for N = 3, 10, 100 servers, equal weights (all healthy) and mixed weights (health 0, 1, 3
 *   in turn: weights 4, 2, 1), over a pool of distinct agent ids; after a warm-up, several
 *   timed runs of a calibrated number of lookups each. The timing runs in several fresh child
 *   processes (this file is their entry point): a tight loop's speed varies from one V8
 *   process to the next by up to half (where its code lands, not what it does), so the
 *   figure is the median over the processes of each one's median run. For comparison, the
 *   convenience `owner(id, servers)`, which hashes every server id again on each call.
 * - **Spread**: 100,000 agent ids placed on the same server lists; each server's count against
 *   its weighted ideal (largest relative deviation, largest deviation in binomial standard
 *   deviations, and Pearson's χ² per degree of freedom, about 1 for a random assignment).
 *
 * The target: a lookup costs at most 20 ns × N. {@link runPlacement} runs every section
 * (bench/main.ts calls it).
 *
 * @module
 */
import process from "node:process";
import { createPlacement, type LrwServer, owner, type Placement, weights } from "../shared/lrw.ts";
import { randomId, seededRandom } from "../shared/random.ts";
import { readProcFile, spawnProcess } from "./_proc.ts";
import { runReconnectStorm, type StormResult } from "./placement_storm.ts";
import { type MachineInfo, table } from "./_report.ts";
import { median } from "./_stats.ts";

/** Where the placement benchmark's generated block starts and ends in docs/benchmarks.md. */
export const PLACEMENT_BEGIN_MARK =
  "<!-- bench:placement:begin (bench/main.ts rewrites this block when the placement bench runs) -->";
export const PLACEMENT_END_MARK = "<!-- bench:placement:end -->";

/** The lookup target: nanoseconds per candidate server. */
export const LOOKUP_BUDGET_NS_PER_SERVER = 20;

/** The weight mixes measured. */
export type WeightMix = "equal" | "mixed";
const WEIGHT_MIXES: readonly WeightMix[] = ["equal", "mixed"];
/** Health of server i in the mixed lists (weights 4, 2, 1). */
const MIXED_HEALTH = [0, 1, 3] as const;

/** Options of {@link runPlacementLookup}. */
export interface PlacementLookupOptions {
  /** Server counts N. Default 3, 10, 100. */
  counts?: readonly number[];
  /** Timed runs per case in each process. Default 5. */
  runs?: number;
  /** Length of one timed run, ms: its lookup count is calibrated during the warm-up. Default 150. */
  runMs?: number;
  /** Warm-up of each case before its timed runs, ms. Default 200. */
  warmupMs?: number;
  /** Distinct agent ids the lookups cycle through (a power of two). Default 65,536. */
  pool?: number;
  /**
   * Fresh processes that each time every case, one after the other. Default 5; 0 times the
   * cases in this process instead.
   */
  processes?: number;
  /** Where the processes' stderr logs go. Default: a temporary directory, removed afterwards. */
  dir?: string;
  /** Agent ids placed for the spread. Default 100,000. */
  spreadAgents?: number;
  /** Progress lines. */
  log?: (line: string) => void;
}

/** Lookup cost of one server list. */
export interface LookupRow {
  servers: number;
  weights: WeightMix;
  /**
   * ns per `owner()` call of a prepared placement: the median over the processes of each
   * process's median run.
   */
  nsPerLookup: number;
  /** The lowest and highest process median (with no processes, the fastest and slowest run). */
  minNs: number;
  maxNs: number;
  /** `nsPerLookup / servers`. */
  nsPerServer: number;
  /**
   * CPU time per lookup, ns (medians like `nsPerLookup`): about `nsPerLookup` on a quiet
   * machine, less when other processes took the CPU during the runs.
   */
  cpuNsPerLookup: number;
  /** Median ns per call of the convenience `owner(id, servers)` (no prepared placement). */
  unpreparedNs: number;
}

/** How evenly one server list's agents spread. */
export interface SpreadRow {
  servers: number;
  weights: WeightMix;
  agents: number;
  /** Largest `|count - ideal| / ideal` over the servers. */
  maxDeviation: number;
  /** Largest `|count - ideal|` in binomial standard deviations. */
  maxZ: number;
  /** Pearson's χ² divided by its degrees of freedom (N − 1); about 1 for a random assignment. */
  chi2PerDf: number;
}

/** What the lookup and spread sections measured. */
export interface PlacementLookupResults {
  /** Length of the agent ids looked up (they are hashed on every lookup). */
  idLength: number;
  pool: number;
  /** Processes that timed the lookups (0: this one). */
  processes: number;
  runs: number;
  runMs: number;
  lookup: LookupRow[];
  spread: SpreadRow[];
}

/** Everything the placement benchmark measured. */
export interface PlacementResults {
  /** /proc/loadavg (1, 5, 15 min) when the placement benchmark started. */
  load: string;
  lookup: PlacementLookupResults;
  /** The reconnect storm, when it ran (it needs a scratch directory). */
  storm?: StormResult;
}

/** Options of {@link runPlacement}. */
export interface PlacementOptions extends PlacementLookupOptions {
  /** Simulated agents in the reconnect storm. Default 1,200. */
  stormAgents?: number;
  /** Swarm worker processes in the storm. Default 3. */
  stormWorkers?: number;
}

/** Runs every placement section: lookup and spread, then the reconnect storm (with `dir`). */
export async function runPlacement(options: PlacementOptions = {}): Promise<PlacementResults> {
  const load = await readProcFile("/proc/loadavg")
    .then((text) => text.split(" ").slice(0, 3).join(" "))
    .catch(() => "unknown");
  const lookup = await runPlacementLookup(options);
  if (!options.dir) return { load, lookup };
  const dir = `${options.dir}/storm`;
  await Deno.mkdir(dir, { recursive: true });
  const storm = await runReconnectStorm({
    agents: options.stormAgents ?? 1200,
    workers: options.stormWorkers ?? 3,
    dir,
    log: options.log ?? (() => {}),
  });
  return { load, lookup, storm };
}

/** Longest time displaced agents may take to be welcomed elsewhere (target). */
export const STORM_REATTACH_BUDGET_MS = 10_000;

/** Targets of the reconnect storm. */
export function stormVerdicts(storm: StormResult): PlacementVerdict[] {
  return [
    {
      target: `Every displaced agent back within ${STORM_REATTACH_BUDGET_MS / 1000} s`,
      met: storm.reattachMs <= STORM_REATTACH_BUDGET_MS,
      detail: `${storm.displaced} agents of ${storm.killed} in ${
        (storm.reattachMs / 1000).toFixed(2)
      } s`,
    },
    {
      target: "No handshake failures during the storm",
      met: storm.failures === 0,
      detail: `${storm.failures} refused; ${storm.handshakes} handshakes for ${storm.displaced} ` +
        `displaced agents (${storm.extra} extra)`,
    },
  ];
}

/** The storm as a table (text or markdown rows share this). */
export function stormTable(storm: StormResult): string {
  return table(
    [
      "agents",
      "spread before",
      "killed (agents)",
      "re-attached in",
      "peak handshakes/s",
      "handshakes",
      "failures",
    ],
    [[
      String(storm.agents),
      Object.entries(storm.spread).map(([id, n]) => `${id} ${n}`).join(", "),
      `${storm.killed} (${storm.displaced})`,
      `${(storm.reattachMs / 1000).toFixed(2)} s`,
      String(storm.peakHandshakesPerSecond),
      String(storm.handshakes),
      String(storm.failures),
    ]],
  );
}

/** The server list of `n` servers with the given weight mix (ids like real ones: `srv-…`). */
export function serverList(n: number, mix: WeightMix): LrwServer[] {
  const random = seededRandom(n);
  return Array.from({ length: n }, (_, i) => ({
    id: `srv-${randomId(random, 6)}`,
    health: mix === "equal" ? 0 : MIXED_HEALTH[i % MIXED_HEALTH.length],
  }));
}

/** Agent id `i`: 12 characters, flat (as ids arrive from the wire, not concatenated ropes). */
export function agentId(i: number): string {
  return JSON.parse(`"agent-${String(i).padStart(6, "0")}"`);
}

/** Keeps results alive so the timed loops cannot be optimized away. */
let sink = 0;

/** ns per `placement.owner()` over `iterations` lookups cycling through `ids`. */
function timePrepared(
  placement: Placement<LrwServer>,
  ids: readonly string[],
  iterations: number,
): number {
  const mask = ids.length - 1;
  let hits = 0;
  const start = performance.now();
  for (let i = 0; i < iterations; i++) {
    if (placement.owner(ids[i & mask]) !== undefined) hits++;
  }
  const elapsed = performance.now() - start;
  sink += hits;
  return (elapsed * 1e6) / iterations;
}

/** ns per convenience `owner(id, servers)` call. */
function timeUnprepared(
  servers: readonly LrwServer[],
  ids: readonly string[],
  iterations: number,
): number {
  const mask = ids.length - 1;
  let hits = 0;
  const start = performance.now();
  for (let i = 0; i < iterations; i++) {
    if (owner(ids[i & mask], servers) !== undefined) hits++;
  }
  const elapsed = performance.now() - start;
  sink += hits;
  return (elapsed * 1e6) / iterations;
}

/**
 * Runs `time(batch)` for `warmupMs` (doubling the batch while it is short) and returns the
 * iteration count that takes about `runMs`.
 */
function calibrate(time: (batch: number) => number, warmupMs: number, runMs: number): number {
  let batch = 256;
  let ns = NaN;
  const until = performance.now() + warmupMs;
  do {
    ns = time(batch);
    if (ns * batch < 20e6) batch *= 2;
  } while (performance.now() < until);
  return Math.max(256, Math.round((runMs * 1e6) / ns));
}

/** What one process measured for the lookup cases. */
export interface LookupTiming {
  /** Server count and weight mix of each case, in {@link lookupCases} order. */
  cases: {
    servers: number;
    weights: WeightMix;
    iterations: number;
    ns: number[];
    cpuNs: number[];
  }[];
}

/** Settings of {@link timeLookups} (what a child process is given). */
export interface LookupSettings {
  counts: readonly number[];
  runs: number;
  runMs: number;
  warmupMs: number;
  pool: number;
}

/** The cases measured: every weight mix at every server count. */
export function lookupCases(
  counts: readonly number[],
): { mix: WeightMix; n: number; servers: LrwServer[] }[] {
  return WEIGHT_MIXES.flatMap((mix) =>
    counts.map((n) => ({ mix, n, servers: serverList(n, mix) }))
  );
}

/** Times prepared lookups of every case in this process: wall and CPU ns per lookup of each run. */
export function timeLookups(settings: LookupSettings): LookupTiming {
  const ids = Array.from({ length: settings.pool }, (_, i) => agentId(i));
  return {
    cases: lookupCases(settings.counts).map(({ mix, n, servers }) => {
      const placement = createPlacement(servers);
      const prepared = (batch: number) => timePrepared(placement, ids, batch);
      const iterations = calibrate(prepared, settings.warmupMs, settings.runMs);
      const ns: number[] = [];
      const cpuNs: number[] = [];
      for (let r = 0; r < settings.runs; r++) {
        const before = process.cpuUsage();
        ns.push(prepared(iterations));
        const used = process.cpuUsage(before);
        cpuNs.push(((used.user + used.system) * 1e3) / iterations);
      }
      return { servers: n, weights: mix, iterations, ns, cpuNs };
    }),
  };
}

/** The line a child process prints its {@link LookupTiming} on. */
const TIMING_LINE = "placement-lookup ";

/** Times the lookups in a fresh `deno run` of this file. */
async function timeLookupsInChild(
  settings: LookupSettings,
  dir: string,
  index: number,
): Promise<LookupTiming> {
  await using child = spawnProcess(`placement-${index}`, [
    Deno.execPath(),
    "run",
    "--no-prompt",
    new URL(import.meta.url).pathname,
    JSON.stringify(settings),
  ], { stderrFile: `${dir}/placement-${index}.log` });
  const expectedMs = 10_000 + 4 * settings.counts.length * 2 *
      (settings.warmupMs + settings.runs * settings.runMs);
  const [, json] = await child.stdout.waitFor(new RegExp(`^${TIMING_LINE}(.*)$`), expectedMs);
  return JSON.parse(json) as LookupTiming;
}

/** The spread of `agents` agent ids over `servers`, against the weighted ideal. */
export function spreadOf(servers: readonly LrwServer[], agents: number, mix: WeightMix): SpreadRow {
  const placement = createPlacement(servers);
  const index = new Map(servers.map((s, i) => [s, i]));
  const counts = new Array<number>(servers.length).fill(0);
  for (let i = 0; i < agents; i++) counts[index.get(placement.owner(agentId(i))!)!]++;
  return { servers: servers.length, weights: mix, agents, ...spreadStats(servers, counts) };
}

/** Deviation figures of per-server `counts` from the weighted ideal (see {@link SpreadRow}). */
export function spreadStats(
  servers: readonly LrwServer[],
  counts: readonly number[],
): Pick<SpreadRow, "maxDeviation" | "maxZ" | "chi2PerDf"> {
  const w = weights(servers).map((s) => s.weight);
  const total = w.reduce((a, b) => a + b, 0);
  const agents = counts.reduce((a, b) => a + b, 0);
  let maxDeviation = 0;
  let maxZ = 0;
  let chi2 = 0;
  for (let i = 0; i < servers.length; i++) {
    const p = w[i] / total;
    const ideal = agents * p;
    const diff = counts[i] - ideal;
    maxDeviation = Math.max(maxDeviation, Math.abs(diff) / ideal);
    maxZ = Math.max(maxZ, Math.abs(diff) / Math.sqrt(agents * p * (1 - p)));
    chi2 += (diff * diff) / ideal;
  }
  return { maxDeviation, maxZ, chi2PerDf: servers.length > 1 ? chi2 / (servers.length - 1) : 0 };
}

/** Measures lookup cost and spread (see the module doc). */
export async function runPlacementLookup(
  options: PlacementLookupOptions = {},
): Promise<PlacementLookupResults> {
  const settings: LookupSettings = {
    counts: options.counts ?? [3, 10, 100],
    runs: options.runs ?? 5,
    runMs: options.runMs ?? 150,
    warmupMs: options.warmupMs ?? 200,
    pool: options.pool ?? 65_536,
  };
  const processes = options.processes ?? 5;
  const spreadAgents = options.spreadAgents ?? 100_000;
  const log = options.log ?? (() => {});
  const pool = settings.pool;
  if (pool < 1 || (pool & (pool - 1)) !== 0) throw new Error("pool must be a power of two");

  const timings: LookupTiming[] = [];
  if (processes === 0) {
    timings.push(timeLookups(settings));
  } else {
    const dir = options.dir ?? await Deno.makeTempDir({ prefix: "jw-placement-" });
    try {
      for (let p = 0; p < processes; p++) {
        timings.push(await timeLookupsInChild(settings, dir, p));
        const first = timings[p].cases[0];
        log(
          `placement: process ${p + 1}/${processes}: ${first.weights} N=${first.servers} ` +
            `${median(first.ns).toFixed(1)} ns/lookup`,
        );
      }
    } finally {
      if (!options.dir) await Deno.remove(dir, { recursive: true }).catch(() => {});
    }
  }

  const ids = Array.from({ length: pool }, (_, i) => agentId(i));
  const cases = lookupCases(settings.counts);
  const lookup = cases.map(({ mix, n, servers }, i): LookupRow => {
    // One process: the runs themselves; several: each process's median run.
    const ns = processes === 0 ? timings[0].cases[i].ns : timings.map((t) => median(t.cases[i].ns));
    const cpu = timings.map((t) => median(t.cases[i].cpuNs));
    const unprepared = (batch: number) => timeUnprepared(servers, ids, batch);
    const iterations = calibrate(unprepared, settings.warmupMs / 4, settings.runMs / 4);
    const nsPerLookup = median(ns);
    return {
      servers: n,
      weights: mix,
      nsPerLookup,
      minNs: Math.min(...ns),
      maxNs: Math.max(...ns),
      nsPerServer: nsPerLookup / n,
      cpuNsPerLookup: median(cpu),
      unpreparedNs: median(Array.from({ length: 3 }, () => unprepared(iterations))),
    };
  });
  const spread = cases.map(({ mix, servers }) => spreadOf(servers, spreadAgents, mix));
  if (sink < 0) log("placement: unreachable");
  return {
    idLength: ids[0].length,
    pool,
    processes,
    runs: settings.runs,
    runMs: settings.runMs,
    lookup,
    spread,
  };
}

const mixLabel = (mix: WeightMix) => (mix === "equal" ? "equal" : "4:2:1");
const ns1 = (v: number) => v.toFixed(1);

/** The lookup table. */
export function lookupTable(rows: readonly LookupRow[]): string {
  return table(
    [
      "servers (N)",
      "weights",
      "ns/lookup",
      "min–max",
      "ns/server",
      "CPU ns/lookup",
      "budget 20 ns × N",
      "owner(id, list) ns",
    ],
    rows.map((r) => [
      String(r.servers),
      mixLabel(r.weights),
      ns1(r.nsPerLookup),
      `${ns1(r.minNs)}–${ns1(r.maxNs)}`,
      ns1(r.nsPerServer),
      ns1(r.cpuNsPerLookup),
      String(LOOKUP_BUDGET_NS_PER_SERVER * r.servers),
      r.unpreparedNs.toFixed(0),
    ]),
  );
}

/** The spread table. */
export function spreadTable(rows: readonly SpreadRow[]): string {
  return table(
    ["servers (N)", "weights", "agents", "max deviation", "max deviation σ", "χ²/df"],
    rows.map((r) => [
      String(r.servers),
      mixLabel(r.weights),
      r.agents.toLocaleString("en-US"),
      `${(r.maxDeviation * 100).toFixed(2)}%`,
      r.maxZ.toFixed(2),
      r.chi2PerDf.toFixed(2),
    ]),
  );
}

/** A target and whether this run met it. */
export interface PlacementVerdict {
  target: string;
  met: boolean;
  detail: string;
}

/** The lookup target (≤ 20 ns × N for every N and weight mix). */
export function placementVerdicts(results: PlacementLookupResults): PlacementVerdict[] {
  const rows = results.lookup;
  const over = (r: LookupRow) => r.nsPerLookup > LOOKUP_BUDGET_NS_PER_SERVER * r.servers;
  return [{
    target: `Placement lookup ≤ ${LOOKUP_BUDGET_NS_PER_SERVER} ns × N (prepared placement, ` +
      `${results.idLength}-character agent ids)`,
    met: rows.length > 0 && !rows.some(over),
    detail: rows.map((r) =>
      `${mixLabel(r.weights)} N=${r.servers}: ${ns1(r.nsPerLookup)} ns ` +
      `(budget ${LOOKUP_BUDGET_NS_PER_SERVER * r.servers}${over(r) ? ", over" : ""})`
    ).join("; "),
  }];
}

/** How the lookup figures were taken, in words. */
function timingNote(l: PlacementLookupResults): string {
  return l.processes === 0
    ? `median of ${l.runs} runs in one process, min–max the runs`
    : `median over ${l.processes} fresh processes of each one's median of ${l.runs} runs, ` +
      "min–max the process medians";
}

function verdictLines(vs: readonly PlacementVerdict[]): string {
  return vs.map((v) => `- **${v.met ? "met" : "missed"}** — ${v.target}: ${v.detail}`).join("\n");
}

/** The placement results as plain text for the terminal. */
export function renderPlacementText(results: PlacementResults): string {
  const l = results.lookup;
  const storm = results.storm;
  return [
    `Placement lookup: ${l.idLength}-character agent ids; ${timingNote(l)}`,
    lookupTable(l.lookup),
    "",
    `Placement spread: ${l.spread[0]?.agents.toLocaleString("en-US") ?? 0} agent ids`,
    spreadTable(l.spread),
    "",
    ...(storm
      ? [
        `Reconnect storm (agents fail over within ${storm.failoverMs / 1000} s)`,
        stormTable(storm),
        "",
      ]
      : []),
    "Placement targets",
    verdictLines([...placementVerdicts(l), ...(storm ? stormVerdicts(storm) : [])]),
  ].join("\n");
}

/** The generated placement block of docs/benchmarks.md. */
export function renderPlacementMarkdown(
  results: PlacementResults,
  machine: MachineInfo,
  quick = false,
): string {
  const l = results.lookup;
  return [
    PLACEMENT_BEGIN_MARK,
    "",
    `### Latest placement run (${machine.date}${quick ? ", quick" : ""})`,
    "",
    `- Machine: ${machine.cpus} × ${machine.cpuModel}, Linux ${machine.kernel}; load average ` +
    `${results.load} at the start. Deno ${machine.deno}, V8 ${machine.v8}.`,
    `- Lookups: ${l.idLength}-character agent ids cycling through ${
      l.pool.toLocaleString("en-US")
    } distinct ids; runs of about ${l.runMs} ms after a warm-up; ${timingNote(l)}. ` +
    "Mixed weights: health 0, 1, 3 in turn (weights 4, 2, 1). `owner(id, list)`: the " +
    "convenience function without a prepared placement.",
    "",
    lookupTable(l.lookup),
    "",
    `Spread of ${l.spread[0]?.agents.toLocaleString("en-US") ?? 0} agent ids against the ` +
    "weighted ideal (σ: binomial standard deviations; χ²/df about 1 for a random assignment):",
    "",
    spreadTable(l.spread),
    "",
    ...(results.storm
      ? [
        `Reconnect storm: ${results.storm.agents} simulated agents (real WebSocket clients with ` +
        "their own Ed25519 keys and the agent's connection code, in " +
        "worker processes) all given the first of three clustered servers; placement spreads " +
        "them; then one server is killed with SIGKILL. Its agents wait a random delay below " +
        `the agent's \`reconnect.failover\` (${results.storm.failoverMs / 1000} s, the default) ` +
        "and connect to their next-ranked server. Peak: the most handshakes the two survivors " +
        "completed in any 1 s window.",
        "",
        stormTable(results.storm),
        "",
      ]
      : []),
    "#### Placement targets",
    "",
    verdictLines([
      ...placementVerdicts(l),
      ...(results.storm ? stormVerdicts(results.storm) : []),
    ]),
    "",
    PLACEMENT_END_MARK,
  ].join("\n");
}

if (import.meta.main) {
  // A child process of timeLookupsInChild(): time the cases, print one line, exit.
  const timing = timeLookups(JSON.parse(Deno.args[0]) as LookupSettings);
  console.log(TIMING_LINE + JSON.stringify(timing));
}
