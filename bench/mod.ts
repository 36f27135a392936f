/**
 * Benchmarks of `jw server` side by side with NATS and a bare Deno WebSocket server:
 * density ({@link runDensity}) and fan-out ({@link runFanout}), driven by a swarm of
 * simulated agents in worker processes ({@link startSwarm}). `bench/main.ts` runs them all
 * (`deno task bench`) and writes docs/benchmarks.md. None of this is part of `deno task test`.
 *
 * @module
 */
export { type DensityOptions, type DensityRow, type DensitySample, runDensity } from "./density.ts";
export {
  BENCH_KEY,
  type FanoutOptions,
  type FanoutRow,
  type FanoutSample,
  type JwProfiles,
  profileJw,
  runFanout,
} from "./fanout.ts";
export { startSwarm, type Swarm, type SwarmOptions, type SwarmStats } from "./_swarm_pool.ts";
export { type ClientMode, NATS_SUBJECT, REPLY_BYTES } from "./_swarm_clients.ts";
