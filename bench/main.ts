/**
 * `deno task bench`: density, then fan-out, then (full runs) a CPU profile of the jw server,
 * then gossip (a jw server cluster next to a serf cluster), then placement (weighted
 * rendezvous lookup cost and spread), then outputs (the outputs pipeline against RabbitMQ and
 * Mosquitto: throughput next to the raw clients, latency, memory while a broker is down); prints a table per benchmark, the performance targets
 * and a final line of ratios, and rewrites the generated blocks of docs/benchmarks.md (the
 * main block when density or fan-out ran, the gossip block when gossip ran, the placement
 * block when placement ran, the outputs block when outputs ran).
 *
 * @module
 */
import { parseArgs } from "node:util";
import denoJson from "../deno.json" with { type: "json" };
import { runDensity } from "./density.ts";
import { type FanoutOptions, type JwProfiles, profileJw, runFanout } from "./fanout.ts";
import { runGossip } from "./gossip.ts";
import {
  PLACEMENT_BEGIN_MARK,
  PLACEMENT_END_MARK,
  type PlacementResults,
  renderPlacementMarkdown,
  renderPlacementText,
  runPlacement,
} from "./placement.ts";
import {
  OUTPUTS_BEGIN_MARK,
  OUTPUTS_END_MARK,
  type OutputsResults,
  renderOutputsMarkdown,
  renderOutputsText,
  runOutputs,
} from "./outputs.ts";
import { stopAll } from "./_proc.ts";
import {
  GOSSIP_BEGIN_MARK,
  GOSSIP_END_MARK,
  machineInfo,
  renderGossipMarkdown,
  renderMarkdown,
  renderText,
  type Results,
  type RunSettings,
  writeDoc,
} from "./_report.ts";
import { natsServerVersion } from "./_servers.ts";

const USAGE = `Usage: deno task bench [options]

Benchmarks jw server against nats-server and a bare Deno WebSocket server (the floor):
density (memory and idle CPU per connected agent, handshakes/s) and fan-out (one command
to all N agents, p50/p99 round trip, server CPU per round); and a cluster of jw servers
against a cluster of serf agents: gossip (join convergence, kill -9 detection, graceful
leave, gossip bytes per node per second); and placement (weighted rendezvous hashing:
ns per owner lookup at 3, 10, 100 servers, spread of 100,000 agent ids, and a reconnect
storm: 1,200 simulated agents on three servers, one killed); and outputs (the outputs
pipeline's msg/s through file, AMQP and MQTT outputs next to amqplib and mqtt.js alone,
reply-to-consumer latency, memory while the MQTT broker is down). Needs nats-server,
serf and tcpdump, and root for the capture (scripts/install-bench-deps.sh); rabbitmq-server
and mosquitto for outputs (scripts/install-test-deps.sh).

Options:
  --n LIST            agent counts, default 1000,5000,10000
  --rounds N          measured fan-out rounds, default 20
  --warmup N          fan-out warm-up rounds, default 3
  --workers N         swarm worker processes, default 4
  --concurrency N     connects in flight per worker, default 100
  --settle MS         wait before the density memory reading, default 5000
  --idle MS           idle CPU window, default 10000
  --only NAME         density, fanout, gossip, placement or outputs
  --gossip-n LIST     gossip cluster sizes, default 5,10,20
  --gossip-repeats N  gossip runs per cluster size (the median is reported), default 3
  --gossip-capture S  gossip traffic capture window in seconds, default 35; 0 skips the
                      capture (tcpdump needs root or CAP_NET_RAW)
  --outputs-messages N  messages per outputs throughput run, default 20000
  --outputs-stall S   seconds of replies while the MQTT broker is down, default 60
  --no-profile        skip the CPU profile pass of the jw server
  --out FILE          where to write the report, default docs/benchmarks.md
  --no-write          do not write a report file
  --keep              keep the scratch directory (logs, .cpuprofile files)
  --quick             smoke run: N 200,500, 5 rounds, 1 warm-up, short windows, no profile;
                      gossip at 5 nodes, 1 run, a 10 s capture without waiting for the
                      steady state; placement timed in 2 processes, 3 short runs per
                      case, a storm of 300 agents; outputs with 5,000 messages, 2 s latency
                      runs and a 10 s stall; no report file unless --out is given`;

function int(name: string, text: string | undefined, fallback: number): number {
  if (text === undefined) return fallback;
  const v = Number(text);
  if (!Number.isInteger(v) || v < 0) throw new Error(`--${name} must be a whole number`);
  return v;
}

async function main(): Promise<number> {
  const { values } = parseArgs({
    args: Deno.args,
    options: {
      n: { type: "string" },
      rounds: { type: "string" },
      warmup: { type: "string" },
      workers: { type: "string" },
      concurrency: { type: "string" },
      settle: { type: "string" },
      idle: { type: "string" },
      only: { type: "string" },
      "gossip-n": { type: "string" },
      "gossip-repeats": { type: "string" },
      "gossip-capture": { type: "string" },
      "outputs-messages": { type: "string" },
      "outputs-stall": { type: "string" },
      "no-profile": { type: "boolean" },
      out: { type: "string" },
      "no-write": { type: "boolean" },
      keep: { type: "boolean" },
      quick: { type: "boolean" },
      help: { type: "boolean", short: "h" },
    },
    strict: true,
  });
  if (values.help) {
    console.log(USAGE);
    return 0;
  }
  const quick = values.quick ?? false;
  const counts = (values.n ?? (quick ? "200,500" : "1000,5000,10000")).split(",").map((s) => {
    const v = Number(s.trim());
    if (!Number.isInteger(v) || v < 1) throw new Error(`--n: bad count "${s}"`);
    return v;
  });
  const only = values.only;
  const names = ["density", "fanout", "gossip", "placement", "outputs"] as const;
  if (only && !(names as readonly string[]).includes(only)) {
    throw new Error("--only must be density, fanout, gossip, placement or outputs");
  }
  const runs = (name: typeof names[number]) => only === undefined || only === name;
  const gossipCounts = (values["gossip-n"] ?? (quick ? "5" : "5,10,20")).split(",").map((s) => {
    const v = Number(s.trim());
    if (!Number.isInteger(v) || v < 3) throw new Error(`--gossip-n: bad cluster size "${s}"`);
    return v;
  });
  const gossipRepeats = int("gossip-repeats", values["gossip-repeats"], quick ? 1 : 3);
  const gossipCaptureS = int("gossip-capture", values["gossip-capture"], quick ? 10 : 35);
  if (gossipRepeats < 1) throw new Error("--gossip-repeats must be at least 1");
  const outputsMessages = int(
    "outputs-messages",
    values["outputs-messages"],
    quick ? 5000 : 20_000,
  );
  const outputsStallS = int("outputs-stall", values["outputs-stall"], quick ? 10 : 60);
  if (outputsMessages < 1) throw new Error("--outputs-messages must be at least 1");
  if (outputsStallS < 1) throw new Error("--outputs-stall must be at least 1");
  const settings: RunSettings = {
    quick,
    counts,
    rounds: int("rounds", values.rounds, quick ? 5 : 20),
    warmup: int("warmup", values.warmup, quick ? 1 : 3),
    workers: int("workers", values.workers, 4),
    concurrency: int("concurrency", values.concurrency, 100),
    settleMs: int("settle", values.settle, quick ? 1000 : 5000),
    idleWindowMs: int("idle", values.idle, quick ? 2000 : 10_000),
    heartbeat: "15s",
  };
  const out = values["no-write"]
    ? undefined
    : values.out ?? (quick ? undefined : "docs/benchmarks.md");
  const profile = !quick && !values["no-profile"] && runs("fanout");

  const natsClient = denoJson.imports.nats.replace(/^npm:nats@/, "");
  const results: Results = {
    machine: await machineInfo(await natsServerVersion(), natsClient),
    settings,
  };
  let placement: PlacementResults | undefined;
  let outputs: OutputsResults | undefined;
  const dir = await Deno.makeTempDir({ prefix: "jw-bench-" });
  const log = (line: string) => console.error(line);
  const started = performance.now();
  log(`bench: scratch directory ${dir}`);
  try {
    if (runs("density")) {
      results.density = await runDensity({
        counts,
        workers: settings.workers,
        concurrency: settings.concurrency,
        settleMs: settings.settleMs,
        idleWindowMs: settings.idleWindowMs,
        heartbeat: settings.heartbeat,
        dir,
        log,
      });
    }
    const fanoutOptions: FanoutOptions = {
      counts,
      rounds: settings.rounds,
      warmup: settings.warmup,
      workers: settings.workers,
      concurrency: settings.concurrency,
      dir,
      log,
    };
    if (runs("fanout")) results.fanout = await runFanout(fanoutOptions);
    if (profile) {
      const agents = Math.max(...counts);
      const profiles: JwProfiles = await profileJw(agents, settings.rounds, fanoutOptions);
      results.profiles = profiles;
      await Deno.writeTextFile(`${dir}/connect.cpuprofile`, JSON.stringify(profiles.connect));
      await Deno.writeTextFile(`${dir}/fanout.cpuprofile`, JSON.stringify(profiles.fanout));
      log(`bench: profiles in ${dir}/connect.cpuprofile and ${dir}/fanout.cpuprofile`);
    }
    if (runs("gossip")) {
      results.gossip = await runGossip({
        counts: gossipCounts,
        repeats: gossipRepeats,
        captureMs: gossipCaptureS * 1000,
        capture: gossipCaptureS > 0,
        // A smoke run does not wait for the traffic clusters to reach their steady state.
        trafficAfterMs: quick ? 0 : undefined,
        dir,
        log,
      });
    }
    if (runs("placement")) {
      placement = await runPlacement(
        quick
          ? { processes: 2, runs: 3, runMs: 50, warmupMs: 100, stormAgents: 300, dir, log }
          : { dir, log },
      );
    }
    if (runs("outputs")) {
      outputs = await runOutputs({
        messages: outputsMessages,
        latencyMs: quick ? 2000 : 5000,
        stallMs: outputsStallS * 1000,
        dir,
        log,
      });
    }
  } finally {
    await stopAll();
  }
  const keep = values.keep || profile;
  if (keep) {
    const { profiles: _, ...numbers } = results;
    await Deno.writeTextFile(
      `${dir}/results.json`,
      JSON.stringify({ ...numbers, placement, outputs }, null, 2),
    );
    log(`bench: kept ${dir} (logs, results.json${profile ? ", .cpuprofile files" : ""})`);
  } else {
    await Deno.remove(dir, { recursive: true }).catch(() => {});
  }
  log(`bench: finished in ${((performance.now() - started) / 1000).toFixed(0)} s`);
  if (results.density || results.fanout || results.gossip) console.log(renderText(results));
  if (placement) console.log(renderPlacementText(placement));
  if (outputs) console.log(renderOutputsText(outputs));
  if (out) {
    if (results.density || results.fanout) await writeDoc(out, renderMarkdown(results));
    if (results.gossip) {
      await writeDoc(out, renderGossipMarkdown({ ...results, gossip: results.gossip }), [
        GOSSIP_BEGIN_MARK,
        GOSSIP_END_MARK,
      ]);
    }
    if (placement) {
      await writeDoc(out, renderPlacementMarkdown(placement, results.machine, quick), [
        PLACEMENT_BEGIN_MARK,
        PLACEMENT_END_MARK,
      ]);
    }
    if (outputs) {
      await writeDoc(out, renderOutputsMarkdown(outputs, results.machine, quick), [
        OUTPUTS_BEGIN_MARK,
        OUTPUTS_END_MARK,
      ]);
    }
    log(`bench: wrote ${out}`);
  }
  return 0;
}

if (import.meta.main) {
  const interrupted = async () => {
    await stopAll();
    Deno.exit(130);
  };
  Deno.addSignalListener("SIGINT", interrupted);
  Deno.addSignalListener("SIGTERM", interrupted);
  let code = 1;
  try {
    code = await main();
  } catch (err) {
    console.error(`bench: ${(err as Error).stack ?? err}`);
    await stopAll();
  }
  Deno.exit(code);
}
