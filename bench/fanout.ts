/**
 * Fan-out: one request to all N clients and all N answers back at the operator, timed from
 * the request's start to the last answer, over warm-up rounds then measured rounds.
 *
 * - jw: `POST /v1/run` `{target: "all", job: {key: "bench.ping"}}`; the round ends when the
 *   NDJSON stream has delivered its `summary` (every agent `ok`).
 * - NATS: one publish on {@link NATS_SUBJECT} with a reply inbox; the round ends at the Nth
 *   200-byte reply on the inbox subscription.
 * - floor: `POST /broadcast` on the bare Deno server; it answers once every socket replied.
 *
 * Server CPU-seconds per round come from /proc (utime + stime) over the measured rounds.
 * Optionally records a CPU profile of the jw server (connect and fan-out) through its
 * inspector, in a separate pass so the timed rounds run without a profiler attached.
 *
 * @module
 */
import { connect as natsConnect, createInbox, type NatsConnection } from "nats";
import { type CpuProfile, Inspector } from "./_inspector.ts";
import { delay, readCpuSeconds } from "./_proc.ts";
import {
  OPERATOR,
  type ServerUnderTest,
  startFloorServer,
  startJwServer,
  startNatsServer,
  type System,
} from "./_servers.ts";
import { percentile, ratio } from "./_stats.ts";
import { NATS_SUBJECT } from "./_swarm_clients.ts";
import { startSwarm, type Swarm } from "./_swarm_pool.ts";

/** The command key the swarm agents answer (any key is answered at once). */
export const BENCH_KEY = "bench.ping";

/** Longest a round may take before the benchmark fails, ms. */
const ROUND_TIMEOUT_MS = 60_000;

/** Options for {@link runFanout}. */
export interface FanoutOptions {
  /** Agent counts, e.g. [1000, 5000, 10000]. */
  counts: number[];
  /** Measured rounds per system and N (at least 20 for a real run). */
  rounds: number;
  /** Rounds run first and not measured. */
  warmup: number;
  workers: number;
  concurrency: number;
  /** Systems to run, in order. Default jw, nats, floor. */
  systems?: System[];
  dir: string;
  log: (line: string) => void;
}

/** One system at one N. */
export interface FanoutSample {
  system: System;
  agents: number;
  /** Each measured round, ms. */
  roundsMs: number[];
  p50: number;
  p99: number;
  /** Server CPU-seconds per measured round. */
  cpuPerRound: number;
  /** Mean wall time per measured round, s (compare with {@link cpuPerRound}). */
  wallPerRound: number;
  /** Time to connect the swarm, ms. */
  connectMs: number;
  /** Connection attempts beyond one per client over the whole run (reconnects). */
  retries: number;
}

/** Every system at one N, with the ratios. */
export interface FanoutRow {
  agents: number;
  samples: Partial<Record<System, FanoutSample>>;
  /** jw p50 / NATS p50, jw p99 / NATS p99. */
  natsRatio: { p50: number; p99: number };
  /** jw p50 / floor p50, jw p99 / floor p99. */
  floorRatio: { p50: number; p99: number };
}

/** One round: resolves with its duration in ms; throws if any client did not answer. */
type Round = () => Promise<number>;

function jwRound(server: ServerUnderTest, agents: number): Round {
  const authorization = "Basic " + btoa(`${OPERATOR.user}:${OPERATOR.password}`);
  const body = JSON.stringify({
    target: "all",
    job: { key: BENCH_KEY, args: {} },
    timeoutMs: ROUND_TIMEOUT_MS,
  });
  return async () => {
    const start = performance.now();
    const res = await fetch(`${server.url}/v1/run`, {
      method: "POST",
      headers: { authorization, "content-type": "application/json" },
      body,
      signal: AbortSignal.timeout(ROUND_TIMEOUT_MS + 10_000),
    });
    if (!res.ok) throw new Error(`POST /v1/run: ${res.status} ${await res.text()}`);
    // Only the last line (the summary) is parsed; the replies before it are just counted.
    const text = await res.text();
    const ms = performance.now() - start;
    const last = text.trimEnd();
    const summary = JSON.parse(last.slice(last.lastIndexOf("\n") + 1));
    if (summary.type !== "summary") throw new Error("the run stream did not end with a summary");
    const outcomes = Object.values(summary.agents) as { status: string }[];
    const ok = outcomes.filter((o) => o.status === "ok").length;
    if (ok !== agents) {
      const other = outcomes.find((o) => o.status !== "ok");
      throw new Error(`jw round: ${ok}/${agents} ok (e.g. ${JSON.stringify(other)})`);
    }
    return ms;
  };
}

function natsRound(nc: NatsConnection, agents: number): Round {
  const request = new TextEncoder().encode("ping:".padEnd(150, "x"));
  return async () => {
    const inbox = createInbox();
    let replies = 0;
    const all = Promise.withResolvers<void>();
    const sub = nc.subscribe(inbox, {
      callback: () => {
        if (++replies === agents) all.resolve();
      },
    });
    // The subscription is in place on the server before the clock starts.
    await nc.flush();
    const timer = setTimeout(
      () => all.reject(new Error(`nats round: ${replies}/${agents} replies`)),
      ROUND_TIMEOUT_MS,
    );
    const start = performance.now();
    nc.publish(NATS_SUBJECT, request, { reply: inbox });
    try {
      await all.promise;
      return performance.now() - start;
    } finally {
      clearTimeout(timer);
      sub.unsubscribe();
    }
  };
}

function floorRound(server: ServerUnderTest, agents: number): Round {
  return async () => {
    const start = performance.now();
    const res = await fetch(`${server.url}/broadcast`, {
      method: "POST",
      signal: AbortSignal.timeout(ROUND_TIMEOUT_MS + 10_000),
    });
    const body = await res.json();
    const ms = performance.now() - start;
    if (body.replies !== agents) {
      throw new Error(`floor round: ${body.replies}/${agents} replies (${body.expected} sockets)`);
    }
    return ms;
  };
}

async function startServer(system: System, dir: string, inspect = false) {
  switch (system) {
    case "jw":
      return await startJwServer({ dir, inspect });
    case "floor":
      return await startFloorServer({ dir, inspect });
    case "nats":
      return await startNatsServer({ dir });
  }
}

async function runRounds(
  round: Round,
  count: number,
): Promise<number[]> {
  const out: number[] = [];
  for (let i = 0; i < count; i++) out.push(await round());
  return out;
}

async function withSwarm<T>(
  system: System,
  agents: number,
  options: FanoutOptions,
  fn: (server: ServerUnderTest, swarm: Swarm, round: Round) => Promise<T>,
  inspect = false,
): Promise<T> {
  const dir = await Deno.makeTempDir({ dir: options.dir, prefix: `fanout-${system}-${agents}-` });
  const server = await startServer(system, dir, inspect);
  let nc: NatsConnection | undefined;
  try {
    await using swarm = await startSwarm({
      mode: system,
      url: server.url,
      clients: agents,
      workers: options.workers,
      concurrency: options.concurrency,
      prefix: `f${agents}`,
      logDir: dir,
      log: options.log,
    });
    let round: Round;
    if (system === "nats") {
      nc = await natsConnect({ servers: server.url, reconnect: false });
      round = natsRound(nc, agents);
    } else {
      round = system === "jw" ? jwRound(server, agents) : floorRound(server, agents);
      const counted = await server.connected();
      if (counted !== agents) throw new Error(`${system}: server counts ${counted}, not ${agents}`);
    }
    return await fn(server, swarm, round);
  } finally {
    await nc?.close();
    await server.close();
  }
}

async function measure(
  system: System,
  agents: number,
  options: FanoutOptions,
): Promise<FanoutSample> {
  return await withSwarm(system, agents, options, async (server, swarm, round) => {
    await runRounds(round, options.warmup);
    // Let the warm-up's garbage and stream tails settle before the clock starts.
    await delay(500);
    const cpu0 = await readCpuSeconds(server.pid);
    const wall0 = performance.now();
    const roundsMs = await runRounds(round, options.rounds);
    const wall = (performance.now() - wall0) / 1000;
    const cpu = await readCpuSeconds(server.pid) - cpu0;
    const stats = await swarm.stats();
    const sample: FanoutSample = {
      system,
      agents,
      roundsMs,
      p50: percentile(roundsMs, 50),
      p99: percentile(roundsMs, 99),
      cpuPerRound: cpu / options.rounds,
      wallPerRound: wall / options.rounds,
      connectMs: swarm.connectMs,
      retries: stats.attempts - agents,
    };
    options.log(
      `  ${system}: p50 ${sample.p50.toFixed(1)} ms, p99 ${sample.p99.toFixed(1)} ms, ` +
        `${sample.cpuPerRound.toFixed(3)} CPU-s/round`,
    );
    return sample;
  });
}

/** Measures every system at every N, one at a time. */
export async function runFanout(options: FanoutOptions): Promise<FanoutRow[]> {
  const systems = options.systems ?? ["jw", "nats", "floor"];
  const rows: FanoutRow[] = [];
  for (const agents of options.counts) {
    options.log(`fan-out: ${agents} agents`);
    const samples: FanoutRow["samples"] = {};
    for (const system of systems) samples[system] = await measure(system, agents, options);
    const { jw, nats, floor } = samples;
    rows.push({
      agents,
      samples,
      natsRatio: {
        p50: ratio(jw?.p50 ?? NaN, nats?.p50 ?? NaN),
        p99: ratio(jw?.p99 ?? NaN, nats?.p99 ?? NaN),
      },
      floorRatio: {
        p50: ratio(jw?.p50 ?? NaN, floor?.p50 ?? NaN),
        p99: ratio(jw?.p99 ?? NaN, floor?.p99 ?? NaN),
      },
    });
  }
  return rows;
}

/** CPU profiles of the jw server: while N agents connect, and over fan-out rounds. */
export interface JwProfiles {
  agents: number;
  rounds: number;
  connect: CpuProfile;
  fanout: CpuProfile;
}

/**
 * Profiles the jw server (through its inspector) while `agents` agents connect and then
 * over `rounds` fan-out rounds after the warm-up. Timings from this pass are not reported.
 */
export async function profileJw(
  agents: number,
  rounds: number,
  options: FanoutOptions,
): Promise<JwProfiles> {
  options.log(`profile: jw server, ${agents} agents`);
  const dir = await Deno.makeTempDir({ dir: options.dir, prefix: `profile-jw-${agents}-` });
  const server = await startJwServer({ dir, inspect: true });
  try {
    await using inspector = await Inspector.connect(server.inspector!);
    await inspector.startProfile();
    // Held (and stopped at the end of this block) only for its connected agents.
    await using _swarm = await startSwarm({
      mode: "jw",
      url: server.url,
      clients: agents,
      workers: options.workers,
      concurrency: options.concurrency,
      prefix: `p${agents}`,
      logDir: dir,
      log: options.log,
    });
    const connect = await inspector.stopProfile();
    const round = jwRound(server, agents);
    await runRounds(round, options.warmup);
    await inspector.startProfile();
    await runRounds(round, rounds);
    const fanout = await inspector.stopProfile();
    return { agents, rounds, connect, fanout };
  } finally {
    await server.close();
  }
}
