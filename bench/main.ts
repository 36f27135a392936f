/**
 * `deno task bench`: density, then fan-out, then (full runs) a CPU profile of the jw server;
 * prints a table per benchmark, the performance targets and a final line of ratios, and
 * rewrites the generated block of docs/benchmarks.md.
 *
 * @module
 */
import { parseArgs } from "node:util";
import denoJson from "../deno.json" with { type: "json" };
import { runDensity } from "./density.ts";
import { type FanoutOptions, type JwProfiles, profileJw, runFanout } from "./fanout.ts";
import { stopAll } from "./_proc.ts";
import {
  machineInfo,
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
to all N agents, p50/p99 round trip, server CPU per round). Needs nats-server
(scripts/install-bench-deps.sh).

Options:
  --n LIST            agent counts, default 1000,5000,10000
  --rounds N          measured fan-out rounds, default 20
  --warmup N          fan-out warm-up rounds, default 3
  --workers N         swarm worker processes, default 4
  --concurrency N     connects in flight per worker, default 100
  --settle MS         wait before the density memory reading, default 5000
  --idle MS           idle CPU window, default 10000
  --only NAME         density or fanout
  --no-profile        skip the CPU profile pass of the jw server
  --out FILE          where to write the report, default docs/benchmarks.md
  --no-write          do not write a report file
  --keep              keep the scratch directory (logs, .cpuprofile files)
  --quick             smoke run: N 200,500, 5 rounds, 1 warm-up, short windows, no profile,
                      no report file unless --out is given`;

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
  if (values.only && values.only !== "density" && values.only !== "fanout") {
    throw new Error("--only must be density or fanout");
  }
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
  const profile = !quick && !values["no-profile"] && values.only !== "density";

  const natsClient = denoJson.imports.nats.replace(/^npm:nats@/, "");
  const results: Results = {
    machine: await machineInfo(await natsServerVersion(), natsClient),
    settings,
  };
  const dir = await Deno.makeTempDir({ prefix: "jw-bench-" });
  const log = (line: string) => console.error(line);
  const started = performance.now();
  log(`bench: scratch directory ${dir}`);
  try {
    if (values.only !== "fanout") {
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
    if (values.only !== "density") results.fanout = await runFanout(fanoutOptions);
    if (profile) {
      const agents = Math.max(...counts);
      const profiles: JwProfiles = await profileJw(agents, settings.rounds, fanoutOptions);
      results.profiles = profiles;
      await Deno.writeTextFile(`${dir}/connect.cpuprofile`, JSON.stringify(profiles.connect));
      await Deno.writeTextFile(`${dir}/fanout.cpuprofile`, JSON.stringify(profiles.fanout));
      log(`bench: profiles in ${dir}/connect.cpuprofile and ${dir}/fanout.cpuprofile`);
    }
  } finally {
    await stopAll();
  }
  const keep = values.keep || profile;
  if (keep) {
    const { profiles: _, ...numbers } = results;
    await Deno.writeTextFile(`${dir}/results.json`, JSON.stringify(numbers, null, 2));
    log(`bench: kept ${dir} (logs, results.json${profile ? ", .cpuprofile files" : ""})`);
  } else {
    await Deno.remove(dir, { recursive: true }).catch(() => {});
  }
  log(`bench: finished in ${((performance.now() - started) / 1000).toFixed(0)} s`);
  console.log(renderText(results));
  if (out) {
    await writeDoc(out, renderMarkdown(results));
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
