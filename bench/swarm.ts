/**
 * A swarm worker process: holds `--count` simulated clients (see _swarm_clients.ts) of one
 * `--mode` against `--url`. Run it with `deno run` and the jw permissions; a parent
 * (_swarm_pool.ts) drives it over stdin/stdout, one line per message:
 *
 * - worker → `ready COUNT MS`: every client is prepared (jw: keys generated), none connected.
 * - parent → `connect`: connect them all, at most `--concurrency` at a time.
 * - worker → `progress N` about once a second while connecting, then
 *   `connected COUNT MS ATTEMPTS FAILURES` once every client is up.
 * - parent → `stats`: worker → `stats ATTEMPTS FAILURES ANSWERED ALIVE` (ALIVE: heartbeats sent).
 * - end of stdin: close every client and exit 0. Any failure: `error MESSAGE`, exit 1.
 *
 * @module
 */
import { parseArgs } from "node:util";
import { type ClientMode, createClientFactory, type SimClient } from "./_swarm_clients.ts";

const MODES: readonly ClientMode[] = ["jw", "floor", "nats"];

/** Runs `fn` over `items` with at most `limit` calls in flight. */
async function pool<T>(items: T[], limit: number, fn: (item: T) => Promise<void>): Promise<void> {
  let next = 0;
  const lanes = Array.from({ length: Math.min(limit, items.length) }, async () => {
    while (next < items.length) await fn(items[next++]);
  });
  await Promise.all(lanes);
}

async function* stdinLines(): AsyncGenerator<string> {
  let buffered = "";
  for await (const chunk of Deno.stdin.readable.pipeThrough(new TextDecoderStream())) {
    buffered += chunk;
    let nl: number;
    while ((nl = buffered.indexOf("\n")) >= 0) {
      yield buffered.slice(0, nl).trim();
      buffered = buffered.slice(nl + 1);
    }
  }
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    args: Deno.args,
    options: {
      mode: { type: "string" },
      url: { type: "string" },
      count: { type: "string" },
      prefix: { type: "string", default: "bench" },
      concurrency: { type: "string", default: "100" },
    },
    strict: true,
  });
  const mode = values.mode as ClientMode;
  if (!MODES.includes(mode)) throw new Error(`--mode must be one of ${MODES.join(", ")}`);
  if (!values.url) throw new Error("--url is required");
  const count = Number(values.count);
  const concurrency = Number(values.concurrency);
  if (!Number.isInteger(count) || count < 1) throw new Error("--count must be a positive integer");
  if (!Number.isInteger(concurrency) || concurrency < 1) {
    throw new Error("--concurrency must be a positive integer");
  }

  const factory = createClientFactory(mode, { url: values.url, prefix: values.prefix! });
  const t0 = performance.now();
  const clients: SimClient[] = new Array(count);
  // Key generation is CPU-bound but async (WebCrypto): keep a few hundred in flight.
  await pool([...clients.keys()], 256, async (i) => {
    clients[i] = await factory.prepare(i);
  });
  console.log(`ready ${count} ${Math.round(performance.now() - t0)}`);

  const lines = stdinLines();
  for await (const line of lines) {
    if (line === "connect") {
      const start = performance.now();
      let up = 0;
      const ticker = setInterval(() => console.log(`progress ${up}`), 1000);
      try {
        await pool(clients, concurrency, async (c) => {
          await c.start();
          up++;
        });
      } finally {
        clearInterval(ticker);
      }
      const { attempts, failures } = factory.stats;
      console.log(
        `connected ${count} ${Math.round(performance.now() - start)} ${attempts} ${failures}`,
      );
    } else if (line === "stats") {
      const { attempts, failures, answered, alive } = factory.stats;
      console.log(`stats ${attempts} ${failures} ${answered} ${alive}`);
    }
  }
  await pool(clients, 500, (c) => c.close());
}

if (import.meta.main) {
  try {
    await main();
    Deno.exit(0);
  } catch (err) {
    console.log(`error ${(err as Error).message?.replace(/\s+/g, " ")}`);
    Deno.exit(1);
  }
}
