/**
 * The servers under test, each started as its own process on a free loopback port:
 * `jw server` (from source, with the jw permissions), the floor (_floor_server.ts) and
 * Debian's `nats-server`.
 *
 * @module
 */
import bcrypt from "bcryptjs";
import { PERMISSIONS } from "../scripts/permissions.ts";
import { INSPECT_FLAG, inspectorUrl } from "./_inspector.ts";
import { type BenchProcess, spawnProcess } from "./_proc.ts";

const MAIN = new URL("../main.ts", import.meta.url).pathname;
const FLOOR = new URL("./_floor_server.ts", import.meta.url).pathname;

/** The operator the benchmarks log in as. */
export const OPERATOR = { user: "bench", password: "bench-operator-password" };

/** Which server. */
export type System = "jw" | "floor" | "nats";

/** A running server under test. */
export interface ServerUnderTest extends AsyncDisposable {
  readonly system: System;
  /** Base URL: `http://127.0.0.1:PORT` (jw, floor) or `127.0.0.1:PORT` (nats). */
  readonly url: string;
  /** The server's own pid (for /proc readings). */
  readonly pid: number;
  /** Its inspector WebSocket URL, when started with `inspect`. */
  readonly inspector?: string;
  /** jw with a cluster key: its gossip "host:port". */
  readonly gossip?: string;
  /** The process, for tests of crashes (`kill -9`). */
  readonly process: BenchProcess;
  /** Clients the server itself counts as connected (jw: welcomed agents). */
  connected(): Promise<number>;
  /** Stops the server (SIGTERM, then SIGKILL). */
  close(): Promise<void>;
}

/** Options for the Deno servers. */
export interface DenoServerOptions {
  /** Directory for data, config and logs (must exist). */
  dir: string;
  /** Start with the V8 inspector on a free port (heap readings, CPU profiles). */
  inspect?: boolean;
}

/** Options for {@link startJwServer}. */
export interface JwServerOptions extends DenoServerOptions {
  /** `agents.heartbeat`. Default "15s" (the product default). */
  heartbeat?: string;
  /** More config (e.g. `id`, `cluster`, `placement`), merged over the bench's own. */
  config?: Record<string, unknown>;
  /** Listen address. Default "127.0.0.1:0". */
  http?: string;
}

class Running implements ServerUnderTest {
  constructor(
    readonly system: System,
    readonly url: string,
    readonly process: BenchProcess,
    readonly connected: () => Promise<number>,
    readonly inspector?: string,
    readonly gossip?: string,
  ) {}

  get pid(): number {
    return this.process.pid;
  }

  async close(): Promise<void> {
    await this.process.stop("SIGTERM");
  }

  [Symbol.asyncDispose](): Promise<void> {
    return this.close();
  }
}

async function started(
  proc: BenchProcess,
  re: RegExp,
  what: string,
  timeoutMs = 60_000,
): Promise<string> {
  try {
    return (await proc.stdout.waitFor(re, timeoutMs))[1];
  } catch (err) {
    const tail = await proc.stderrTail();
    await proc.stop("SIGKILL");
    throw new Error(`${what} did not start: ${(err as Error).message}\n${tail}`);
  }
}

/**
 * Starts `jw server` with a fresh data directory under `options.dir`, the bench operator
 * (bcrypt cost 4) and default settings otherwise (log level info; stderr goes to
 * `DIR/server.log`).
 */
export async function startJwServer(options: JwServerOptions): Promise<ServerUnderTest> {
  const config = {
    auth: { users: [{ name: OPERATOR.user, bcrypt: bcrypt.hashSync(OPERATOR.password, 4) }] },
    agents: { heartbeat: options.heartbeat ?? "15s" },
    ...options.config,
  };
  const configFile = `${options.dir}/server.json`;
  await Deno.writeTextFile(configFile, JSON.stringify(config));
  const stderrFile = `${options.dir}/server.log`;
  const proc = spawnProcess("jw-server", [
    Deno.execPath(),
    "run",
    ...PERMISSIONS,
    ...(options.inspect ? [INSPECT_FLAG] : []),
    MAIN,
    "server",
    "--config",
    configFile,
    "--http",
    options.http ?? "127.0.0.1:0",
    "--data",
    `${options.dir}/data`,
  ], { stderrFile });
  const url = await started(proc, /listening on (http:\/\/[^\s,]+)/, "jw server");
  const gossip = (options.config?.cluster as { key?: string } | undefined)?.key
    ? await started(proc, /gossip on (\S+)/, "jw server gossip")
    : undefined;
  const inspector = options.inspect ? await inspectorUrl(stderrFile) : undefined;
  const connected = async () => {
    const res = await fetch(`${url}/healthz`);
    return (await res.json()).agents as number;
  };
  return new Running("jw", url, proc, connected, inspector, gossip);
}

/** Starts the floor server (stderr to `DIR/floor.log`). */
export async function startFloorServer(options: DenoServerOptions): Promise<ServerUnderTest> {
  const stderrFile = `${options.dir}/floor.log`;
  const proc = spawnProcess("floor-server", [
    Deno.execPath(),
    "run",
    ...PERMISSIONS,
    ...(options.inspect ? [INSPECT_FLAG] : []),
    FLOOR,
  ], { stderrFile });
  const url = await started(proc, /floor listening on (http:\/\/\S+)/, "floor server");
  const inspector = options.inspect ? await inspectorUrl(stderrFile) : undefined;
  const connected = async () => {
    const res = await fetch(`${url}/count`);
    return (await res.json()).open as number;
  };
  return new Running("floor", url, proc, connected, inspector);
}

/** Starts `nats-server` on a free loopback port (log in `DIR/nats.log`). */
export async function startNatsServer(options: { dir: string }): Promise<ServerUnderTest> {
  const stderrFile = `${options.dir}/nats.log`;
  // -p -1: any free port; the log line names it. Logging goes to stderr by default.
  const proc = spawnProcess("nats-server", ["nats-server", "-a", "127.0.0.1", "-p", "-1"], {
    stderrFile,
  });
  const deadline = Date.now() + 15_000;
  let url: string | undefined;
  while (!url) {
    const text = await Deno.readTextFile(stderrFile).catch(() => "");
    url = text.match(/Listening for client connections on (\S+:\d+)/)?.[1];
    if (url) break;
    if (Date.now() > deadline) {
      await proc.stop("SIGKILL");
      throw new Error(`nats-server did not start:\n${text}`);
    }
    await new Promise((r) => setTimeout(r, 50));
  }
  // The operator side counts replies; the server's own count is not needed.
  return new Running("nats", url, proc, () => Promise.resolve(NaN));
}

/** `nats-server --version`, e.g. "v2.9.10"; "not installed" when missing. */
export async function natsServerVersion(): Promise<string> {
  try {
    const out = await new Deno.Command("nats-server", { args: ["--version"] }).output();
    return new TextDecoder().decode(out.stdout).trim().replace(/^nats-server:\s*/, "");
  } catch {
    return "not installed";
  }
}
