/**
 * A test fleet of real processes on loopback: one `jw server` with a known operator
 * password, any number of `jw agent`s, and `jw client` runs against them. Everything is
 * stopped by `await using`.
 *
 * @module
 */
import bcrypt from "bcryptjs";
import { DatabaseSync } from "node:sqlite";
import { AuditLog } from "../../shared/db/audit.ts";
import { realClock } from "../../shared/clock.ts";
import { owner } from "../../shared/lrw.ts";
import { ApiClient } from "../../cli/_api.ts";
import type { AgentInfo, AuditRecord } from "../../shared/protocol/operator.ts";
import { type JsonLine, JwProcess, type JwResult, runJw } from "./process.ts";

let root: string | undefined;

/** A fresh directory under this test process's scratch root (removed when the process ends). */
export async function scratchDir(prefix: string): Promise<string> {
  if (!root) {
    root = await Deno.makeTempDir({ prefix: "jw-e2e-" });
    const dir = root;
    globalThis.addEventListener("unload", () => {
      try {
        Deno.removeSync(dir, { recursive: true });
      } catch {
        // best effort
      }
    });
  }
  return await Deno.makeTempDir({ dir: root, prefix });
}

/** The operator used by every e2e test. */
export const ADMIN = { user: "admin", password: "correct horse battery staple" };
const ADMIN_HASH = bcrypt.hashSync(ADMIN.password, 4);

/** Polls `check` every 25 ms until it returns a value or `timeoutMs` passes. */
export async function eventually<T>(
  what: string,
  check: () => Promise<T | undefined>,
  timeoutMs = 15_000,
): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let last: unknown;
  while (Date.now() < deadline) {
    try {
      const v = await check();
      if (v !== undefined) return v;
    } catch (err) {
      last = err;
    }
    await new Promise((r) => setTimeout(r, 25));
  }
  throw new Error(`timed out waiting for ${what}${last ? `: ${last}` : ""}`);
}

/** Options for {@link startServer}. */
export interface ServerOptions {
  /** Extra config merged into the YAML file (e.g. `{agents: {challengeTtl: "1s"}}`). */
  config?: Record<string, unknown>;
  /** Reuse a data dir (server restart). */
  dataDir?: string;
  /** Listen address, default 127.0.0.1:0. */
  http?: string;
  /** Extra flags (e.g. `--seed HOST:PORT`). */
  flags?: string[];
}

/** A running server process with an API client for the test operator. */
export class TestServer implements AsyncDisposable {
  constructor(
    readonly process: JwProcess,
    readonly url: string,
    readonly dataDir: string,
    readonly api: ApiClient,
    /** Gossip "host:port" when the server has a cluster key. */
    readonly gossip?: string,
  ) {}

  /** Runs `jw client --server URL --user admin ARGS...` with the password in JW_PASSWORD. */
  client(...args: string[]): Promise<JwResult> {
    return runJw(["client", "--server", this.url, "--user", ADMIN.user, ...args], {
      JW_PASSWORD: ADMIN.password,
    });
  }

  /** The agent's row once `predicate` holds for it. */
  waitForAgent(
    id: string,
    predicate: (a: AgentInfo) => boolean = (a) => a.connected,
    timeoutMs?: number,
  ): Promise<AgentInfo> {
    return eventually(`agent ${id}`, async () => {
      const a = (await this.api.agents()).find((x) => x.id === id);
      return a && predicate(a) ? a : undefined;
    }, timeoutMs);
  }

  /** The first audit entry (newest first) matching `predicate`, once it exists. */
  waitForAudit(predicate: (e: AuditRecord) => boolean): Promise<AuditRecord> {
    return eventually(
      "audit entry",
      async () => (await this.api.audit({ limit: 1000 })).find(predicate),
    );
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.process.stop("SIGTERM");
  }
}

/** Starts `jw server` on a free loopback port with the test operator configured. */
export async function startServer(options: ServerOptions = {}): Promise<TestServer> {
  const dataDir = options.dataDir ?? await scratchDir("server-");
  const configFile = `${await scratchDir("config-")}/server.yaml`;
  const config = { auth: { users: [{ name: ADMIN.user, bcrypt: ADMIN_HASH }] }, ...options.config };
  await Deno.writeTextFile(configFile, JSON.stringify(config));
  const proc = new JwProcess([
    "server",
    "--config",
    configFile,
    "--http",
    options.http ?? "127.0.0.1:0",
    "--data",
    dataDir,
    "--log-level",
    "debug",
    ...(options.flags ?? []),
  ]);
  try {
    const m = await proc.stdout.waitFor(/listening on (http:\/\/[^\s,]+)(?:, gossip on (\S+))?/);
    const url = m[1];
    return new TestServer(proc, url, dataDir, new ApiClient({ server: url, ...ADMIN }), m[2]);
  } catch (err) {
    await proc.stop("SIGKILL");
    throw new Error(`server did not start: ${err}\nstderr:\n${proc.stderr}`);
  }
}

/** Options for {@link startAgent}. */
export interface AgentOptions {
  allowRun?: string[];
  dataDir?: string;
  tags?: Record<string, string>;
  /** Extra agent config, written to a YAML file passed with --config. */
  config?: Record<string, unknown>;
  /** Extra flags. */
  flags?: string[];
  /** Connect through this URL instead of the server's (e.g. a proxy). */
  serverUrl?: string;
  /** Pass the server's URL as `--server` (default true); off to test other discovery. */
  seed?: boolean;
  /**
   * Wait until `server` lists the agent as connected (default true). Off for agents that
   * may be redirected to another server of a cluster.
   */
  wait?: boolean;
}

/** A running agent process. */
export class TestAgent implements AsyncDisposable {
  constructor(readonly id: string, readonly process: JwProcess, readonly dataDir: string) {}
  async [Symbol.asyncDispose](): Promise<void> {
    await this.process.stop("SIGTERM");
  }
}

/** Starts `jw agent --id ID --server URL` and waits until the server lists it connected. */
export async function startAgent(
  server: TestServer,
  id: string,
  options: AgentOptions = {},
): Promise<TestAgent> {
  const dataDir = options.dataDir ?? await scratchDir(`${id}-`);
  const args = [
    "agent",
    "--id",
    id,
    ...(options.seed === false ? [] : ["--server", options.serverUrl ?? server.url]),
    "--data",
    dataDir,
    "--log-level",
    "debug",
    ...(options.flags ?? []),
  ];
  if (options.config) {
    const file = `${await scratchDir("agent-config-")}/agent.yaml`;
    await Deno.writeTextFile(file, JSON.stringify(options.config));
    args.push("--config", file);
  }
  for (const p of options.allowRun ?? ["/bin/echo", "/bin/sh", "/bin/sleep"]) {
    args.push("--allow-run", p);
  }
  for (const [k, v] of Object.entries(options.tags ?? {})) args.push("--tag", `${k}=${v}`);
  const proc = new JwProcess(args);
  if (options.wait === false) return new TestAgent(id, proc, dataDir);
  try {
    await server.waitForAgent(id);
  } catch (err) {
    await proc.stop("SIGKILL");
    throw new Error(
      `agent ${id} did not connect: ${err}\nstdout:\n${proc.stdout}\nstderr:\n${proc.stderr}`,
    );
  }
  return new TestAgent(id, proc, dataDir);
}

/**
 * An agent id starting with `prefix` that weighted rendezvous hashing places on `serverId`
 * when `serverIds` are all healthy, so a test can start an agent that stays where it is
 * started.
 */
export function agentOwnedBy(
  serverId: string,
  serverIds: readonly string[],
  prefix: string,
): string {
  const servers = serverIds.map((id) => ({ id, health: 0 }));
  for (let i = 1; i < 10_000; i++) {
    if (owner(`${prefix}-${i}`, servers)?.id === serverId) return `${prefix}-${i}`;
  }
  throw new Error(`no ${prefix}-N id lands on ${serverId}`);
}

/** An agent's own audit log, read from its sqlite file (newest first). */
export function agentAudit(dataDir: string): AuditRecord[] {
  const db = new DatabaseSync(`${dataDir}/agent.db`, { readOnly: true });
  try {
    return new AuditLog(db, realClock).list({ limit: 10_000 });
  } finally {
    db.close();
  }
}

/** The first entry of an agent's audit log matching `predicate`, once it exists. */
export function waitForAgentAudit(
  dataDir: string,
  predicate: (e: AuditRecord) => boolean,
): Promise<AuditRecord> {
  return eventually(
    "agent audit entry",
    () => Promise.resolve(agentAudit(dataDir).find(predicate)),
  );
}

/** A running `jw client --json tail`, with its replies parsed. */
export class TestTail implements AsyncDisposable {
  constructor(readonly process: JwProcess) {}

  /** Every reply seen so far. */
  get replies(): JsonLine[] {
    return this.process.stdout.lines.filter((l) => l.startsWith("{")).map((l) => JSON.parse(l));
  }

  /** Replies matching `predicate`, once there are at least `count` of them. */
  waitFor(predicate: (r: JsonLine) => boolean, count = 1, timeoutMs = 20_000): Promise<JsonLine[]> {
    return eventually(`${count} matching replies`, () => {
      const found = this.replies.filter(predicate);
      return Promise.resolve(found.length >= count ? found : undefined);
    }, timeoutMs);
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.process.stop("SIGINT");
  }
}

/** Starts `jw client --json tail [--agent ID]` and waits until it is following. */
export async function startTail(server: TestServer, agent?: string): Promise<TestTail> {
  const args = ["client", "--server", server.url, "--user", ADMIN.user, "--json", "tail"];
  if (agent) args.push("--agent", agent);
  const proc = new JwProcess(args, { JW_PASSWORD: ADMIN.password });
  await proc.stderr.waitFor(/following live output/);
  return new TestTail(proc);
}
