/**
 * Starts a swarm: K worker processes (bench/swarm.ts) sharing N simulated clients, and
 * connects them all at once, timing the connect from the moment every worker has its keys.
 *
 * @module
 */
import { PERMISSIONS } from "../scripts/permissions.ts";
import type { ClientMode } from "./_swarm_clients.ts";
import { type BenchProcess, spawnProcess } from "./_proc.ts";

const SWARM = new URL("./swarm.ts", import.meta.url).pathname;

/** Options for {@link startSwarm}. */
export interface SwarmOptions {
  mode: ClientMode;
  /** Server URL (see the worker's `--url`). */
  url: string;
  /** Clients in total. */
  clients: number;
  /** Worker processes (never more than there are clients). */
  workers: number;
  /** Connects in flight per worker. */
  concurrency: number;
  /** Id prefix; worker w's client i is `PREFIX-wW-i`. */
  prefix: string;
  /** Directory for the workers' stderr logs. */
  logDir: string;
  /** Longest wait for keys, and again for the connect. Default 180 s. */
  timeoutMs?: number;
  /** Progress lines (connect progress, once a second). */
  log?: (line: string) => void;
}

/** Totals of a swarm's workers. */
export interface SwarmStats {
  attempts: number;
  failures: number;
  answered: number;
  /** Heartbeats sent by jw agents. */
  alive: number;
}

/** A connected swarm. */
export interface Swarm extends AsyncDisposable {
  readonly clients: number;
  /** Time for the slowest worker to prepare its clients (jw: key generation), ms. */
  readonly prepareMs: number;
  /** From "connect" to the last worker's `connected`, ms. */
  readonly connectMs: number;
  /** Clients per second over {@link connectMs}. */
  readonly connectsPerSecond: number;
  /** Connection attempts beyond one per client, during the connect. */
  readonly retries: number;
  /** Handshakes refused by the server during the connect. */
  readonly failures: number;
  /** Current totals from every worker. */
  stats(): Promise<SwarmStats>;
  /** Stops every worker (SIGKILL: the server under test sees the sockets drop). */
  close(): Promise<void>;
}

/**
 * Starts `options.workers` workers, waits until all have prepared their clients, then
 * connects them all and resolves once every client is connected.
 * @throws when a worker fails or the connect does not finish within the timeout; every
 * worker is stopped first.
 */
export async function startSwarm(options: SwarmOptions): Promise<Swarm> {
  const timeoutMs = options.timeoutMs ?? 180_000;
  const workers = Math.max(1, Math.min(options.workers, options.clients));
  const procs: BenchProcess[] = [];
  const counts: number[] = [];
  for (let w = 0; w < workers; w++) {
    counts.push(Math.floor(options.clients / workers) + (w < options.clients % workers ? 1 : 0));
  }
  try {
    for (let w = 0; w < workers; w++) {
      procs.push(spawnProcess(`swarm-${options.mode}-${w}`, [
        Deno.execPath(),
        "run",
        ...PERMISSIONS,
        SWARM,
        "--mode",
        options.mode,
        "--url",
        options.url,
        "--count",
        String(counts[w]),
        "--prefix",
        `${options.prefix}-w${w}`,
        "--concurrency",
        String(options.concurrency),
      ], { stderrFile: `${options.logDir}/swarm-${options.mode}-${w}.log`, stdin: true }));
    }
    // Rejects as soon as a worker reports an error or exits.
    const anyError = new Promise<never>((_, reject) => {
      for (const p of procs) {
        p.stdout.onLine((line) => {
          if (line.startsWith("error ")) reject(new Error(`${p.name}: ${line.slice(6)}`));
        });
        void p.status.then((s) => reject(new Error(`${p.name} exited with code ${s.code}`)));
      }
    });
    anyError.catch(() => {});
    const ready = await Promise.race([
      Promise.all(procs.map((p) => p.stdout.waitFor(/^ready \d+ (\d+)$/, timeoutMs))),
      anyError,
    ]);
    const prepareMs = Math.max(...ready.map((m) => Number(m[1])));

    let up = 0;
    const progress = new Array<number>(workers).fill(0);
    const unsubscribe = procs.map((p, w) =>
      p.stdout.onLine((line) => {
        const m = line.match(/^progress (\d+)$/);
        if (m) progress[w] = Number(m[1]);
      })
    );
    const ticker = setInterval(() => {
      const now = progress.reduce((a, b) => a + b, 0);
      if (now !== up) options.log?.(`  ${options.mode}: ${now}/${options.clients} connected`);
      up = now;
    }, 2000);
    const start = performance.now();
    let done: RegExpMatchArray[];
    try {
      await Promise.all(procs.map((p) => p.writeLine("connect")));
      done = await Promise.race([
        Promise.all(
          procs.map((p) => p.stdout.waitFor(/^connected \d+ \d+ (\d+) (\d+)$/, timeoutMs)),
        ),
        anyError,
      ]);
    } finally {
      clearInterval(ticker);
      for (const u of unsubscribe) u();
    }
    const connectMs = performance.now() - start;
    const attempts = done.reduce((n, m) => n + Number(m[1]), 0);
    const failures = done.reduce((n, m) => n + Number(m[2]), 0);
    return new SwarmImpl(procs, options.clients, prepareMs, connectMs, attempts, failures);
  } catch (err) {
    const tails = await Promise.all(procs.map(async (p) => `${p.name}: ${await p.stderrTail(5)}`));
    await Promise.all(procs.map((p) => p.stop("SIGKILL")));
    throw new Error(
      `swarm (${options.mode}) failed: ${(err as Error).message}\n${tails.join("\n")}`,
    );
  }
}

class SwarmImpl implements Swarm {
  readonly clients: number;
  readonly prepareMs: number;
  readonly connectMs: number;
  readonly retries: number;
  readonly failures: number;
  readonly #procs: BenchProcess[];

  constructor(
    procs: BenchProcess[],
    clients: number,
    prepareMs: number,
    connectMs: number,
    attempts: number,
    failures: number,
  ) {
    this.#procs = procs;
    this.clients = clients;
    this.prepareMs = prepareMs;
    this.connectMs = connectMs;
    this.retries = attempts - clients;
    this.failures = failures;
  }

  get connectsPerSecond(): number {
    return this.clients / (this.connectMs / 1000);
  }

  async stats(): Promise<SwarmStats> {
    const replies = await Promise.all(this.#procs.map(async (p) => {
      const seen = p.stdout.lines.length;
      await p.writeLine("stats");
      const m = await p.stdout.waitFor(/^stats (\d+) (\d+) (\d+) (\d+)$/, 10_000, seen);
      return m.slice(1).map(Number);
    }));
    return {
      attempts: replies.reduce((n, r) => n + r[0], 0),
      failures: replies.reduce((n, r) => n + r[1], 0),
      answered: replies.reduce((n, r) => n + r[2], 0),
      alive: replies.reduce((n, r) => n + r[3], 0),
    };
  }

  async close(): Promise<void> {
    await Promise.all(this.#procs.map((p) => p.stop("SIGKILL")));
  }

  [Symbol.asyncDispose](): Promise<void> {
    return this.close();
  }
}
