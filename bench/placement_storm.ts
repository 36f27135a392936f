/**
 * The reconnect storm: N simulated agents (real WebSocket clients with their own Ed25519 keys,
 * the agent's own connection code, in a few worker processes) all given the first of three
 * clustered `jw server` processes; placement spreads them. Then one server is killed with
 * SIGKILL and the bench measures how long its agents take to be welcomed by the other two,
 * the peak handshakes per second the survivors took, handshake failures, and whether any
 * agent that was not on the killed server moved.
 *
 * @module
 */
import { OPERATOR, type ServerUnderTest, startJwServer } from "./_servers.ts";
import { startSwarm, type Swarm } from "./_swarm_pool.ts";

/** Options for {@link runReconnectStorm}. */
export interface StormOptions {
  /** Simulated agents. */
  agents: number;
  /** Swarm worker processes. */
  workers: number;
  /** Scratch directory (must exist). */
  dir: string;
  /** Progress lines. */
  log: (line: string) => void;
}

/** What one storm measured. */
export interface StormResult {
  agents: number;
  /** Agents per server before the kill, by server id. */
  spread: Record<string, number>;
  /** The server killed and how many agents it had. */
  killed: string;
  displaced: number;
  /** From the kill to the last displaced agent welcomed elsewhere, ms. */
  reattachMs: number;
  /** Most handshakes the survivors completed in any 1 s window after the kill. */
  peakHandshakesPerSecond: number;
  /** Handshakes the survivors completed after the kill (displaced agents, plus any extra). */
  handshakes: number;
  /** Handshakes refused by the survivors after the kill. */
  failures: number;
  /**
   * Handshakes beyond one per displaced agent (an agent of a survivor that reconnected, or a
   * displaced agent that needed two tries). 0 when exactly the killed server's agents moved.
   */
  extra: number;
  /** The agents' failover spread (reconnect.failover, the product default), ms. */
  failoverMs: number;
}

const KEY = btoa(String.fromCharCode(...crypto.getRandomValues(new Uint8Array(32))));
const IDS = ["pl-1", "pl-2", "pl-3"];

interface AuditEntry {
  ts: number;
  action: string;
  target: string | null;
}

async function audit(server: ServerUnderTest, action: string): Promise<AuditEntry[]> {
  const res = await fetch(`${server.url}/v1/audit?action=${action}&limit=10000`, {
    headers: { authorization: "Basic " + btoa(`${OPERATOR.user}:${OPERATOR.password}`) },
  });
  if (!res.ok) throw new Error(`audit on ${server.url}: HTTP ${res.status}`);
  return (await res.json()).entries as AuditEntry[];
}

async function waitUntil(
  what: string,
  timeoutMs: number,
  check: () => Promise<boolean>,
): Promise<void> {
  const deadline = performance.now() + timeoutMs;
  while (!(await check())) {
    if (performance.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** The most entries in any window of `windowMs` (entries' `ts` sorted ascending). */
export function peakPerWindow(times: readonly number[], windowMs = 1000): number {
  const sorted = [...times].sort((a, b) => a - b);
  let best = 0;
  let start = 0;
  for (let end = 0; end < sorted.length; end++) {
    while (sorted[end] - sorted[start] >= windowMs) start++;
    best = Math.max(best, end - start + 1);
  }
  return best;
}

/** Runs one storm (see the module doc). Every process it starts is stopped. */
export async function runReconnectStorm(options: StormOptions): Promise<StormResult> {
  const { log } = options;
  const servers: ServerUnderTest[] = [];
  let swarm: Swarm | undefined;
  try {
    for (const id of IDS) {
      const dir = `${options.dir}/${id}`;
      await Deno.mkdir(dir, { recursive: true });
      servers.push(
        await startJwServer({
          dir,
          config: {
            id,
            cluster: {
              key: KEY,
              gossip: "127.0.0.1:0",
              seeds: servers.length ? [servers[0].gossip!] : [],
            },
            // Health never moves agents during the measurement.
            placement: { healthRise: "10m" },
          },
        }),
      );
    }
    await waitUntil("three servers alive everywhere", 30_000, async () => {
      for (const s of servers) {
        const res = await fetch(`${s.url}/v1/members`, {
          headers: { authorization: "Basic " + btoa(`${OPERATOR.user}:${OPERATOR.password}`) },
        });
        const members = (await res.json()).members as { state: string; url: string | null }[];
        if (members.filter((m) => m.state === "alive" && m.url).length !== 3) return false;
      }
      return true;
    });
    log(`storm: 3 servers up; connecting ${options.agents} agents to ${IDS[0]}`);
    swarm = await startSwarm({
      mode: "jw",
      url: servers[0].url,
      clients: options.agents,
      workers: options.workers,
      concurrency: 100,
      prefix: "storm",
      logDir: options.dir,
    });
    const counts = async () => await Promise.all(servers.map((s) => s.connected()));
    await waitUntil("every agent placed", 60_000, async () => {
      const c = await counts();
      return c.reduce((a, b) => a + b, 0) === options.agents;
    });
    const before = await counts();
    const spread = Object.fromEntries(IDS.map((id, i) => [id, before[i]]));
    log(`storm: placed ${JSON.stringify(spread)}`);
    // Let the agents' first server lists arrive and the last handoffs settle.
    await new Promise((r) => setTimeout(r, 2000));

    const victim = 1;
    const survivors = servers.filter((_, i) => i !== victim);
    const displaced = (await counts())[victim];

    const start = Date.now();
    const t0 = performance.now();
    await servers[victim].process.stop("SIGKILL");
    await waitUntil("displaced agents welcomed elsewhere", 60_000, async () => {
      const c = await Promise.all(survivors.map((s) => s.connected()));
      return c.reduce((a, b) => a + b, 0) === options.agents;
    });
    const reattachMs = performance.now() - t0;
    log(`storm: ${displaced} agents of ${IDS[victim]} back in ${Math.round(reattachMs)} ms`);
    // Late stragglers (a second reconnect) would show here.
    await new Promise((r) => setTimeout(r, 1000));
    const ok = (await Promise.all(survivors.map((s) => audit(s, "handshake.ok"))))
      .flat().filter((e) => e.ts >= start);
    const failed = (await Promise.all(survivors.map((s) => audit(s, "handshake.failed"))))
      .flat().filter((e) => e.ts >= start);
    return {
      agents: options.agents,
      spread,
      killed: IDS[victim],
      displaced,
      reattachMs,
      peakHandshakesPerSecond: peakPerWindow(ok.map((e) => e.ts)),
      handshakes: ok.length,
      failures: failed.length,
      extra: ok.length - displaced,
      failoverMs: 5000,
    };
  } finally {
    await swarm?.close();
    for (const s of servers) await s.close().catch(() => {});
  }
}
