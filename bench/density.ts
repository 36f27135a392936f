/**
 * Density: what N connected, authenticated, idle agents cost `jw server`, next to the floor
 * (a bare Deno WebSocket server holding the same N idle sockets from the same client
 * library). For each N and each server, in a fresh process:
 *
 * 1. start the server with the V8 inspector; connect and drop 100 clients (warm-up); after a
 *    full GC read RSS (/proc VmRSS) and the V8 heap;
 * 2. connect N clients from the swarm (cold: new keys, nothing pinned) and time it;
 * 3. let it settle, GC again, read RSS and heap: per agent = delta / N;
 * 4. read the server's CPU time (utime + stime) over an idle window (jw agents keep sending
 *    `alive` at the configured heartbeat).
 *
 * @module
 */
import { Inspector } from "./_inspector.ts";
import { delay, readCpuSeconds, readRss } from "./_proc.ts";
import {
  type DenoServerOptions,
  type ServerUnderTest,
  startFloorServer,
  startJwServer,
} from "./_servers.ts";
import { ratio } from "./_stats.ts";
import { startSwarm } from "./_swarm_pool.ts";

/** Clients that connect and leave before the baseline reading. */
const WARMUP_CLIENTS = 100;

/** Options for {@link runDensity}. */
export interface DensityOptions {
  /** Agent counts to measure, e.g. [1000, 5000, 10000]. */
  counts: number[];
  /** Swarm worker processes. */
  workers: number;
  /** Connects in flight per worker. */
  concurrency: number;
  /** Wait after the last connect before the memory reading, ms. Default 5000. */
  settleMs?: number;
  /** The idle CPU window, ms. Default 10000. */
  idleWindowMs?: number;
  /** jw `agents.heartbeat` during the idle window. Default "15s" (the product default). */
  heartbeat?: string;
  /** Scratch directory (must exist); each run gets a subdirectory. */
  dir: string;
  /** Progress lines. */
  log: (line: string) => void;
}

/** One server at one N. */
export interface DensitySample {
  system: "jw" | "floor";
  agents: number;
  /** Clients the server counted as connected after the connect. */
  serverCount: number;
  rssBefore: number;
  rssAfter: number;
  /** (rssAfter - rssBefore) / agents, bytes. */
  rssPerAgent: number;
  heapBefore: number;
  heapAfter: number;
  /** (heapAfter - heapBefore) / agents, bytes (V8 heap in use after a full GC). */
  heapPerAgent: number;
  /** V8 heap reserved (committed) after the connect, bytes. */
  heapTotalAfter: number;
  /** Time to connect every client, from cold, ms. */
  connectMs: number;
  /** Clients connected (jw: handshakes completed) per second. */
  connectsPerSecond: number;
  /** Server CPU-seconds spent while the clients connected. */
  connectCpuSeconds: number;
  /** Connection attempts beyond one per client. */
  retries: number;
  /** Handshakes refused by the server. */
  failures: number;
  /** Server CPU-seconds over the idle window. */
  idleCpuSeconds: number;
  idleWindowMs: number;
  /** Heartbeats the agents sent during the idle window (0 for the floor). */
  idleAlive: number;
}

/** jw and the floor at one N. */
export interface DensityRow {
  agents: number;
  jw: DensitySample;
  floor: DensitySample;
  /** jw RSS per agent / floor RSS per agent. */
  rssRatio: number;
}

async function measure(
  system: "jw" | "floor",
  agents: number,
  options: DensityOptions,
): Promise<DensitySample> {
  const dir = await Deno.makeTempDir({ dir: options.dir, prefix: `density-${system}-${agents}-` });
  const serverOptions: DenoServerOptions = { dir, inspect: true };
  const server: ServerUnderTest = system === "jw"
    ? await startJwServer({ ...serverOptions, heartbeat: options.heartbeat })
    : await startFloorServer(serverOptions);
  try {
    // The inspector session is open only for the readings: while a session is attached,
    // Deno reports every WebSocket frame to it, which would inflate the CPU figures.
    const reading = async () => {
      await using inspector = await Inspector.connect(server.inspector!);
      await inspector.collectGarbage();
      const rss = await readRss(server.pid);
      return { rss, heap: await inspector.heapUsage() };
    };
    // Warm up: a few clients connect and leave, so code compiled on first use (handshake,
    // schemas, crypto) is in the baseline and the per-agent figure is the marginal cost.
    await server.connected();
    const warm = await startSwarm({
      mode: system,
      url: server.url,
      clients: WARMUP_CLIENTS,
      workers: 1,
      concurrency: options.concurrency,
      prefix: `warm${agents}`,
      logDir: dir,
    });
    await warm.close();
    const gone = Date.now() + 10_000;
    while (await server.connected() > 0 && Date.now() < gone) await delay(100);
    await delay(1000);
    const base = await reading();
    const cpuBeforeConnect = await readCpuSeconds(server.pid);

    await using swarm = await startSwarm({
      mode: system,
      url: server.url,
      clients: agents,
      workers: options.workers,
      concurrency: options.concurrency,
      prefix: `d${agents}`,
      logDir: dir,
      log: options.log,
    });
    const connectCpuSeconds = await readCpuSeconds(server.pid) - cpuBeforeConnect;
    const serverCount = await server.connected();
    if (serverCount !== agents) {
      throw new Error(`${system}: the server counts ${serverCount} clients, not ${agents}`);
    }
    options.log(
      `  ${system}: ${agents} connected in ${(swarm.connectMs / 1000).toFixed(1)} s ` +
        `(${swarm.connectsPerSecond.toFixed(0)}/s, keys ${(swarm.prepareMs / 1000).toFixed(1)} s)`,
    );

    await delay(options.settleMs ?? 5000);
    const after = await reading();
    const { rss: rssAfter, heap } = after;
    const { rss: rssBefore, heap: { usedSize: heapBefore } } = base;

    const idleWindowMs = options.idleWindowMs ?? 10_000;
    const before = await swarm.stats();
    const cpu0 = await readCpuSeconds(server.pid);
    await delay(idleWindowMs);
    const idleCpuSeconds = await readCpuSeconds(server.pid) - cpu0;
    const stats = await swarm.stats();
    return {
      system,
      agents,
      serverCount,
      rssBefore,
      rssAfter,
      rssPerAgent: (rssAfter - rssBefore) / agents,
      heapBefore,
      heapAfter: heap.usedSize,
      heapPerAgent: (heap.usedSize - heapBefore) / agents,
      heapTotalAfter: heap.totalSize,
      connectMs: swarm.connectMs,
      connectsPerSecond: swarm.connectsPerSecond,
      connectCpuSeconds,
      retries: stats.attempts - agents,
      failures: stats.failures,
      idleCpuSeconds,
      idleWindowMs,
      idleAlive: stats.alive - before.alive,
    };
  } finally {
    await server.close();
  }
}

/** Measures jw and the floor at every N in `options.counts`, one at a time. */
export async function runDensity(options: DensityOptions): Promise<DensityRow[]> {
  const rows: DensityRow[] = [];
  for (const agents of options.counts) {
    options.log(`density: ${agents} agents`);
    const jw = await measure("jw", agents, options);
    const floor = await measure("floor", agents, options);
    rows.push({ agents, jw, floor, rssRatio: ratio(jw.rssPerAgent, floor.rssPerAgent) });
  }
  return rows;
}
