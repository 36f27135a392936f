/**
 * Gossip: a cluster of N `jw server` processes next to a cluster of N `serf agent`s
 * (Debian's serf, memberlist with Lifeguard), both with memberlist's LAN timing (probe 1 s,
 * probe timeout 500 ms, suspicion multiplier 4, gossip 200 ms, push-pull 30 s), on loopback,
 * in one run. For each N:
 *
 * - **Timed runs** (repeated): both clusters are started fresh (nodes 2..N−1 join node 1;
 *   node N runs but is not joined), then, one system after the other (which goes first
 *   alternates between runs):
 *   1. **join**: node N is told to join node 1 (jw: `POST /v1/cluster/join`, serf: the RPC
 *      `join`); the time until every node lists all N alive;
 *   2. **leave**: node N gets the signal that makes it leave gracefully (jw SIGTERM, serf
 *      SIGINT); the time until every remaining node lists it as left, and until no node
 *      lists it as alive (or suspect);
 *   3. **failure**: node N − 1 gets SIGKILL; the time until every remaining node lists it
 *      as failed (jw `dead`, serf `failed`).
 * - **Traffic**: a second pair of clusters, all N joined, started before the timed runs
 *   and left alone; once it has run for two push-pull periods and the timed runs are over,
 *   tcpdump captures its gossip ports on `lo` over consecutive windows (one per repeat),
 *   with nothing else running and nothing polled: UDP + TCP payload bytes per node per
 *   second (and IP bytes, packets, push-pull sizes).
 *
 * Membership is polled on every observing node (jw: `GET /v1/members`, serf: RPC `members`
 * on an open connection) every `pollMs`; a node's time is the midpoint between the last
 * answer that did not show the change and the first that did, and a step's time is the
 * slowest node's. Each figure is the median over the runs (windows).
 *
 * @module
 */
import { JwError } from "../shared/errors.ts";
import { type Capture, startCapture, tcpdumpVersion } from "./_capture.ts";
import {
  type GossipNode,
  type GossipSystem,
  type MemberState,
  newClusterKey,
  operatorHash,
  startJwNode,
  startSerfNode,
} from "./_gossip_nodes.ts";
import { summarizeTraffic, type TrafficSummary } from "./_pcap.ts";
import { delay } from "./_proc.ts";
import { serfVersion } from "./_serf.ts";
import { median, ratio } from "./_stats.ts";

/** Both systems, in the order of the report. */
export const GOSSIP_SYSTEMS: readonly GossipSystem[] = ["jw", "serf"];

/** The figures compared jw/serf (the targets). */
export const GOSSIP_METRICS = ["joinMs", "failedMs", "leftMs", "notAliveMs", "bytes"] as const;
export type GossipMetric = typeof GOSSIP_METRICS[number];

/** What one run of one system at one N measured (NaN: not measured or timed out). */
export interface GossipFigures {
  /** Join convergence, ms. */
  joinMs: number;
  /** kill -9 until every other node lists the node as failed, ms. */
  failedMs: number;
  /** Graceful leave until every other node lists the node as left, ms. */
  leftMs: number;
  /** Graceful leave until no other node lists the node as alive (or suspect), ms. */
  notAliveMs: number;
  /** Gossip UDP + TCP payload bytes per node per second. */
  bytes: number;
  /** The same traffic counted as IP bytes (headers and bare TCP ACKs included). */
  ipBytes: number;
  /** UDP packets per node per second. */
  udpPackets: number;
  /** Mean UDP payload, bytes per packet. */
  udpPayloadMean: number;
  /** TCP payload (push-pull, joins) per node per second. */
  tcpBytes: number;
  /** Mean TCP payload per connection (one push-pull exchange, both ways), bytes. */
  tcpBytesPerConnection: number;
}

/** One system at one N over every repeat. */
export interface GossipSample {
  system: GossipSystem;
  nodes: number;
  runs: GossipFigures[];
  /** Per figure: the median of the runs (NaN runs left out), and the range. */
  median: GossipFigures;
  min: GossipFigures;
  max: GossipFigures;
}

/** jw and serf at one N. */
export interface GossipRow {
  nodes: number;
  jw: GossipSample;
  serf: GossipSample;
  /** jw median / serf median, per target figure. */
  ratio: Record<GossipMetric, number>;
}

/** Everything the gossip benchmark produced. */
export interface GossipResults {
  /** The serf package and binary version. */
  serf: string;
  tcpdump: string;
  repeats: number;
  /** One capture window, ms (0: no capture). */
  captureMs: number;
  /** How long the traffic clusters had run before the capture, at least, ms. */
  trafficAfterMs: number;
  /** The poll interval used at each N. */
  pollMs: Record<number, number>;
  /** Packets the kernel dropped during captures (should be 0). */
  dropped: number;
  rows: GossipRow[];
}

/** Options for {@link runGossip}. */
export interface GossipOptions {
  /** Cluster sizes, e.g. [5, 10, 20]. */
  counts: number[];
  /** Runs per N. */
  repeats: number;
  /** One traffic capture window, ms (longer than one push-pull period, 30 s). */
  captureMs: number;
  /**
   * The traffic clusters run at least this long before the capture, ms. Default 60000: two
   * push-pull periods, since memberlist's first periodic push-pull comes one period after a
   * random stagger of up to one period.
   */
  trafficAfterMs?: number;
  /** Membership poll interval per node at `nodes` members. Default {@link pollInterval}. */
  pollMs?: (nodes: number) => number;
  /** Capture traffic (needs tcpdump and root). Default true. */
  capture?: boolean;
  /** Scratch directory (must exist); each cluster gets a subdirectory. */
  dir: string;
  /** Progress lines. */
  log: (line: string) => void;
}

/**
 * The default membership poll interval per node: 25 ms, longer for big clusters so the
 * polling itself stays a small load (about 200 requests per second over all nodes).
 */
export function pollInterval(nodes: number): number {
  return Math.max(25, nodes * 5);
}

/** The part of a node the watcher needs. */
export type Observer = Pick<GossipNode, "name" | "members">;

/** A membership condition, checked against one node's member list. */
export type Condition = (members: Map<string, MemberState>) => boolean;

/** Options for {@link watchNodes}. */
export interface WatchOptions {
  /** When the change was caused (same time base as `now`). */
  t0: number;
  /** Time between two polls of one node, ms. */
  pollMs: number;
  /** Give up after this long from `t0`, ms. */
  timeoutMs: number;
  /** Clock, ms. Default `performance.now`. */
  now?: () => number;
  /** Waits between polls. Default a timer. */
  sleep?: (ms: number) => Promise<void>;
}

/** What {@link watchNodes} saw. */
export interface WatchResult<K extends string> {
  /** Per condition: ms from `t0` until every node showed it; NaN when some never did. */
  times: Record<K, number>;
  /** "node: condition" for each node and condition that timed out, with its last list. */
  missing: string[];
}

/**
 * Polls every node until each shows every condition, independently per node. A node's time
 * for a condition is the midpoint between the last poll that did not show it (or `t0`) and
 * the first that did, a poll's own time being the middle of its request; a failed poll
 * counts for nothing. Conditions are taken to stay true once seen.
 */
export async function watchNodes<K extends string>(
  nodes: readonly Observer[],
  conditions: Record<K, Condition>,
  options: WatchOptions,
): Promise<WatchResult<K>> {
  const now = options.now ?? (() => performance.now());
  const sleep = options.sleep ?? delay;
  const keys = Object.keys(conditions) as K[];
  const missing: string[] = [];
  const perNode = await Promise.all(nodes.map(async (node) => {
    const seen = new Map<K, number>();
    let previous = options.t0;
    let last = "no answer";
    while (seen.size < keys.length) {
      if (now() - options.t0 > options.timeoutMs) {
        for (const k of keys) if (!seen.has(k)) missing.push(`${node.name}: ${k} (${last})`);
        break;
      }
      const sent = now();
      try {
        const members = await node.members();
        const at = (sent + now()) / 2;
        for (const k of keys) {
          if (!seen.has(k) && conditions[k](members)) seen.set(k, (previous + at) / 2 - options.t0);
        }
        previous = at;
        last = [...members].map(([name, state]) => `${name}=${state}`).join(" ");
      } catch (err) {
        last = `error: ${(err as Error).message}`;
      }
      if (seen.size < keys.length) await sleep(options.pollMs);
    }
    return seen;
  }));
  const times = {} as Record<K, number>;
  for (const k of keys) {
    const all = perNode.map((seen) => seen.get(k) ?? NaN);
    times[k] = all.some((t) => Number.isNaN(t)) ? NaN : Math.max(...all);
  }
  return { times, missing };
}

/** True when `members` lists every name in `names` as alive. */
export function allAlive(names: readonly string[]): Condition {
  return (members) => names.every((n) => members.get(n) === "alive");
}

/** True when `members` lists `name` as `state`. */
export function listedAs(name: string, state: MemberState): Condition {
  return (members) => members.get(name) === state;
}

/** True when `members` does not list `name` as alive or suspect (a missing name counts). */
export function notAlive(name: string): Condition {
  return (members) => {
    const s = members.get(name);
    return s !== "alive" && s !== "suspect";
  };
}

/** Per-node-per-second traffic figures from a capture summary. */
export function trafficFigures(
  sum: TrafficSummary,
  nodes: number,
): Omit<GossipFigures, "joinMs" | "failedMs" | "leftMs" | "notAliveMs"> {
  const perNodeSecond = (v: number) => v / nodes / (sum.windowUs / 1e6);
  return {
    bytes: perNodeSecond(sum.udpPayload + sum.tcpPayload),
    ipBytes: perNodeSecond(sum.ipBytes),
    udpPackets: perNodeSecond(sum.udpPackets),
    udpPayloadMean: sum.udpPackets ? sum.udpPayload / sum.udpPackets : NaN,
    tcpBytes: perNodeSecond(sum.tcpPayload),
    tcpBytesPerConnection: sum.tcpConnections ? sum.tcpPayload / sum.tcpConnections : NaN,
  };
}

/** Median, min and max of each figure over the runs, NaN runs left out. */
export function summarizeRuns(
  system: GossipSystem,
  nodes: number,
  runs: GossipFigures[],
): GossipSample {
  const pick = (f: (v: number[]) => number) => {
    const out = {} as GossipFigures;
    for (const key of Object.keys(emptyFigures()) as (keyof GossipFigures)[]) {
      const values = runs.map((r) => r[key]).filter((v) => Number.isFinite(v));
      out[key] = values.length ? f(values) : NaN;
    }
    return out;
  };
  return {
    system,
    nodes,
    runs,
    median: pick(median),
    min: pick((v) => Math.min(...v)),
    max: pick((v) => Math.max(...v)),
  };
}

function emptyFigures(): GossipFigures {
  return {
    joinMs: NaN,
    failedMs: NaN,
    leftMs: NaN,
    notAliveMs: NaN,
    bytes: NaN,
    ipBytes: NaN,
    udpPackets: NaN,
    udpPayloadMean: NaN,
    tcpBytes: NaN,
    tcpBytesPerConnection: NaN,
  };
}

/** How long a cluster may take to form, and a timed step to finish, ms. */
const FORM_TIMEOUT_MS = 60_000;
const STEP_TIMEOUT_MS = 60_000;
/** Quiet time before each timed step, ms. */
const STEP_PAUSE_MS = 1000;
/** Capture a little past the last window, so the packets in it are surely written. */
const CAPTURE_TAIL_MS = 500;
/** jw servers started at once while a cluster forms (each start costs CPU). */
const JW_START_CONCURRENCY = 4;

interface Context {
  hash: string;
  pollMs: number;
  dir: string;
  log: (line: string) => void;
}

/**
 * Starts a cluster of `n` nodes in `dir`: node 1, then nodes 2..n−1 joining it, and waits
 * until those agree. Node n joins as well when `joinAll`; otherwise it is started last and
 * left alone, to be told to join. Every node started is pushed to `started` (for cleanup)
 * at once. Each cluster has its own key.
 */
async function formCluster(
  system: GossipSystem,
  n: number,
  joinAll: boolean,
  ctx: Context,
  started: GossipNode[],
): Promise<GossipNode[]> {
  const key = newClusterKey();
  const start = async (name: string, seeds: string[]) => {
    const dir = `${ctx.dir}/${system}-${name}`;
    await Deno.mkdir(dir, { recursive: true });
    const node = system === "jw"
      ? await startJwNode({ name, dir, key, operatorHash: ctx.hash, seeds })
      : await startSerfNode({ name, dir, seeds });
    started.push(node);
    return node;
  };
  const names = Array.from({ length: n }, (_, i) => `${system}${i + 1}`);
  const first = await start(names[0], []);
  const joining = joinAll ? names.slice(1) : names.slice(1, n - 1);
  const batch = system === "jw" ? JW_START_CONCURRENCY : joining.length || 1;
  const nodes = [first];
  for (let i = 0; i < joining.length; i += batch) {
    nodes.push(
      ...await Promise.all(joining.slice(i, i + batch).map((name) => start(name, [first.gossip]))),
    );
  }
  const agreed = names.slice(0, nodes.length);
  const formed = await watchNodes(nodes, { formed: allAlive(agreed) }, {
    t0: performance.now(),
    pollMs: 100,
    timeoutMs: FORM_TIMEOUT_MS,
  });
  if (formed.missing.length) {
    throw new JwError(
      "timeout",
      `${system}: ${agreed.length} nodes did not agree within ${FORM_TIMEOUT_MS} ms: ${
        formed.missing.join("; ")
      }`,
    );
  }
  if (!joinAll) nodes.push(await start(names[n - 1], []));
  return nodes;
}

function reportMissing(ctx: Context, system: GossipSystem, step: string, missing: string[]) {
  if (missing.length) {
    ctx.log(`  ${system} ${step}: timed out after ${STEP_TIMEOUT_MS} ms: ${missing.join("; ")}`);
  }
}

async function measureJoin(system: GossipSystem, nodes: GossipNode[], ctx: Context) {
  const names = nodes.map((n) => n.name);
  const joiner = nodes[nodes.length - 1];
  const t0 = performance.now();
  const told = joiner.join([nodes[0].gossip]);
  const watched = watchNodes(nodes, { join: allAlive(names) }, {
    t0,
    pollMs: ctx.pollMs,
    timeoutMs: STEP_TIMEOUT_MS,
  });
  await told;
  const { times, missing } = await watched;
  reportMissing(ctx, system, "join", missing);
  return times.join;
}

async function measureLeave(system: GossipSystem, nodes: GossipNode[], ctx: Context) {
  const victim = nodes[nodes.length - 1];
  const observers = nodes.slice(0, -1);
  const t0 = performance.now();
  const gone = victim.leave();
  const { times, missing } = await watchNodes(observers, {
    left: listedAs(victim.name, "left"),
    notAlive: notAlive(victim.name),
  }, { t0, pollMs: ctx.pollMs, timeoutMs: STEP_TIMEOUT_MS });
  await gone;
  reportMissing(ctx, system, "leave", missing);
  return times;
}

async function measureFailure(system: GossipSystem, nodes: GossipNode[], ctx: Context) {
  const victim = nodes[nodes.length - 2];
  const observers = nodes.slice(0, -2);
  const t0 = performance.now();
  const gone = victim.kill();
  const { times, missing } = await watchNodes(observers, {
    failed: listedAs(victim.name, "failed"),
  }, { t0, pollMs: ctx.pollMs, timeoutMs: STEP_TIMEOUT_MS });
  await gone;
  reportMissing(ctx, system, "kill -9", missing);
  return times.failed;
}

type Times = Pick<GossipFigures, "joinMs" | "failedMs" | "leftMs" | "notAliveMs">;

/**
 * One timed run at `n` nodes: both clusters formed (node n not joined), then join, leave
 * and kill -9, one system after the other (which goes first alternates with `repeat`).
 */
async function timedRun(
  n: number,
  repeat: number,
  ctx: Context,
): Promise<Record<GossipSystem, Times>> {
  const order: GossipSystem[] = repeat % 2 === 0 ? ["serf", "jw"] : ["jw", "serf"];
  const times: Record<GossipSystem, Times> = {
    jw: { joinMs: NaN, failedMs: NaN, leftMs: NaN, notAliveMs: NaN },
    serf: { joinMs: NaN, failedMs: NaN, leftMs: NaN, notAliveMs: NaN },
  };
  const started: GossipNode[] = [];
  try {
    const clusters = {} as Record<GossipSystem, GossipNode[]>;
    for (const system of order) {
      clusters[system] = await formCluster(system, n, false, ctx, started);
    }
    for (const system of order) {
      await delay(STEP_PAUSE_MS);
      times[system].joinMs = await measureJoin(system, clusters[system], ctx);
    }
    for (const system of order) {
      await delay(STEP_PAUSE_MS);
      const { left, notAlive } = await measureLeave(system, clusters[system], ctx);
      times[system].leftMs = left;
      times[system].notAliveMs = notAlive;
    }
    for (const system of order) {
      await delay(STEP_PAUSE_MS);
      times[system].failedMs = await measureFailure(system, clusters[system], ctx);
    }
  } finally {
    await Promise.all(started.map((node) => node.kill().catch(() => {})));
  }
  return times;
}

type Traffic = Omit<GossipFigures, keyof Times>;

/**
 * Captures both clusters' gossip ports for `windows` consecutive windows of `windowMs` and
 * sums each window per system.
 */
async function captureWindows(
  clusters: Record<GossipSystem, GossipNode[]>,
  windows: number,
  windowMs: number,
  ctx: Context,
): Promise<{ traffic: Record<GossipSystem, Traffic[]>; dropped: number }> {
  const ports = Object.fromEntries(
    GOSSIP_SYSTEMS.map((s) => [s, new Set(clusters[s].map((n) => n.port))]),
  ) as Record<GossipSystem, Set<number>>;
  const capture: Capture = await startCapture({
    ports: GOSSIP_SYSTEMS.flatMap((s) => [...ports[s]]),
    dir: ctx.dir,
    name: "traffic",
  });
  const fromUs = Date.now() * 1000;
  let result;
  try {
    await delay(windows * windowMs + CAPTURE_TAIL_MS);
  } finally {
    result = await capture.stop();
  }
  const traffic: Record<GossipSystem, Traffic[]> = { jw: [], serf: [] };
  for (let w = 0; w < windows; w++) {
    const from = fromUs + w * windowMs * 1000;
    for (const s of GOSSIP_SYSTEMS) {
      const sum = summarizeTraffic(result.packets, ports[s], from, from + windowMs * 1000);
      traffic[s].push(trafficFigures(sum, clusters[s].length));
    }
  }
  return { traffic, dropped: result.dropped };
}

const s = (ms: number) => (Number.isFinite(ms) ? (ms / 1000).toFixed(2) : "–");
const b = (v: number) => (Number.isFinite(v) ? v.toFixed(0) : "–");

/**
 * Measures jw and serf clusters at every N in `options.counts`: `options.repeats` timed
 * runs, each on freshly started clusters, and `options.repeats` traffic windows on a
 * separate pair of clusters (all N joined) that has been running for at least
 * `options.trafficAfterMs` while the timed runs went on; nothing else runs during the
 * capture.
 * @throws JwError `spawn_failed` when serf or tcpdump cannot run.
 */
export async function runGossip(options: GossipOptions): Promise<GossipResults> {
  const serf = await serfVersion();
  if (serf === "not installed") {
    throw new JwError("spawn_failed", "serf is not installed (scripts/install-bench-deps.sh)");
  }
  const capture = options.capture ?? true;
  const trafficAfterMs = options.trafficAfterMs ?? 60_000;
  const results: GossipResults = {
    serf,
    tcpdump: capture ? await tcpdumpVersion() : "not used",
    repeats: options.repeats,
    captureMs: capture ? options.captureMs : 0,
    trafficAfterMs,
    pollMs: {},
    dropped: 0,
    rows: [],
  };
  const hash = operatorHash();
  for (const n of options.counts) {
    if (n < 3) throw new JwError("usage", "gossip: clusters need at least 3 nodes");
    const pollMs = (options.pollMs ?? pollInterval)(n);
    results.pollMs[n] = pollMs;
    const dir = await Deno.makeTempDir({ dir: options.dir, prefix: `gossip-${n}-` });
    const ctx: Context = { hash, pollMs, dir, log: options.log };
    const times: Record<GossipSystem, Times[]> = { jw: [], serf: [] };
    let traffic: Record<GossipSystem, Traffic[]> = { jw: [], serf: [] };
    const background: GossipNode[] = [];
    try {
      // The traffic clusters age (past their first push-pulls) while the timed runs go on.
      const steady = {} as Record<GossipSystem, GossipNode[]>;
      let since = 0;
      if (capture) {
        const trafficCtx = { ...ctx, dir: `${dir}/traffic` };
        for (const system of GOSSIP_SYSTEMS) {
          steady[system] = await formCluster(system, n, true, trafficCtx, background);
        }
        since = performance.now();
      }
      for (let r = 0; r < options.repeats; r++) {
        options.log(`gossip: ${n} nodes, timed run ${r + 1} of ${options.repeats}`);
        const run = await timedRun(n, r, { ...ctx, dir: `${dir}/run${r + 1}` });
        for (const system of GOSSIP_SYSTEMS) {
          const t = run[system];
          times[system].push(t);
          options.log(
            `  ${system}: join ${s(t.joinMs)} s, kill -9 ${s(t.failedMs)} s, left ${
              s(t.leftMs)
            } s (not alive ${s(t.notAliveMs)} s)`,
          );
        }
      }
      if (capture) {
        const wait = since + trafficAfterMs - performance.now();
        options.log(
          `gossip: ${n} nodes, traffic over ${options.repeats} × ${options.captureMs / 1000} s` +
            (wait > 0 ? ` after ${(wait / 1000).toFixed(0)} s more of running` : ""),
        );
        if (wait > 0) await delay(wait);
        const captured = await captureWindows(steady, options.repeats, options.captureMs, ctx);
        traffic = captured.traffic;
        results.dropped += captured.dropped;
        for (const system of GOSSIP_SYSTEMS) {
          options.log(`  ${system}: ${traffic[system].map((t) => b(t.bytes)).join(", ")} B/node/s`);
        }
      }
    } finally {
      await Promise.all(background.map((node) => node.kill().catch(() => {})));
    }
    const samples = Object.fromEntries(GOSSIP_SYSTEMS.map((system) => {
      const runs = times[system].map((t, r) => ({
        ...emptyFigures(),
        ...traffic[system][r],
        ...t,
      }));
      return [system, summarizeRuns(system, n, runs)];
    })) as Record<GossipSystem, GossipSample>;
    const ratios = {} as Record<GossipMetric, number>;
    for (const m of GOSSIP_METRICS) {
      ratios[m] = ratio(samples.jw.median[m], samples.serf.median[m]);
    }
    results.rows.push({ nodes: n, jw: samples.jw, serf: samples.serf, ratio: ratios });
  }
  return results;
}
