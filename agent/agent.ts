/**
 * `startAgent`: wires identity, database, executor, registry (behind the command ACL), job
 * runner, durable outbox, server discovery and the remembered server list, and the
 * connection into one running agent.
 *
 * @module
 */
import { type Clock, realClock } from "../shared/clock.ts";
import type { AgentConfig } from "../shared/config/mod.ts";
import { AuditLog } from "../shared/db/mod.ts";
import { type Fs, realFs } from "../shared/fs/mod.ts";
import { createLogger, type Logger } from "../shared/log.ts";
import type { DnsBackend } from "../shared/dns.ts";
import { cryptoRandom, type Random } from "../shared/random.ts";
import { JwError } from "../shared/errors.ts";
import { startConnection } from "./connection.ts";
import { FILES_AUDIENCE, signAgentToken } from "../shared/crypto/agent_token.ts";
import { httpOrigin } from "./url.ts";
import { AGENT_DB_FILE, openAgentDatabase } from "./db.ts";
import { createDiscovery } from "./discovery.ts";
import { createServerStore } from "./servers.ts";
import { createDenoExecutor } from "./deno_executor.ts";
import { createDenoTransport } from "./deno_transport.ts";
import { type CommandExecutor, createWhitelistExecutor } from "./executor.ts";
import { loadIdentity } from "./identity.ts";
import { createCommandAcl, withAcl } from "./acl.ts";
import { createJobRunner, createJobStore } from "./jobs/mod.ts";
import { createOutbox } from "./outbox.ts";
import { createRegistry, registerBuiltins } from "./payload/mod.ts";
import { createScriptStore, loadTrustedSigners } from "./scripts/mod.ts";
import { runSandboxed, type SandboxResult, type SandboxRun } from "../shared/sandbox/mod.ts";
import type { Transport } from "./transport.ts";

/** Seams for tests; each defaults to the real thing. */
export interface AgentDeps {
  /** Default `realClock`. */
  clock?: Clock;
  /** Default `cryptoRandom`. */
  random?: Random;
  /** Default `createLogger("agent:<id>", {level: config.logLevel})`. */
  logger?: Logger;
  /** Default the Deno executor. Always wrapped in the `allowRun` whitelist. */
  executor?: CommandExecutor;
  /** Default the Deno WebSocket transport. */
  transport?: Transport;
  /**
   * Where the key files live and what commands see as `ctx.fs`. Default `realFs`. (The
   * sqlite file is always on the real disk.)
   */
  fs?: Fs;
  /** How long `close()` waits for onStop jobs before killing them. Default 5000 ms. */
  stopTimeoutMs?: number;
  /** Runs a script. Default `runSandboxed` (a child process and a Worker). */
  sandbox?: (run: SandboxRun) => Promise<SandboxResult>;
  /** The DNS seam for `config.dns`. Default `Deno.resolveDns`. */
  dns?: DnsBackend;
}

/** A running agent. */
export interface JwAgent extends AsyncDisposable {
  /** The agent id from the config. */
  readonly id: string;
  /** RFC 7638 thumbprint of its public key. */
  readonly kid: string;
  /** True between a welcome and the end of that connection. */
  readonly connected: boolean;
  /** Resolves at the next welcome, or at once while connected; rejects (`closed`) on close. */
  welcomed(): Promise<void>;
  /**
   * Stops: disarms job triggers, kills running processes (their runs end with error
   * `closed`), runs `onStop` jobs (at most `stopTimeoutMs`) while the socket is still open,
   * then stops reconnecting, closes the socket with 1000 and the database. Replies that
   * could not be sent stay in the outbox for the next start. Idempotent.
   */
  close(): Promise<void>;
}

/**
 * Starts an agent: loads or creates its key pair in `config.data`, opens `agent.db`, starts
 * the connection loop, reloads persistent jobs and fires `onStart` jobs (their replies wait
 * in the outbox for the first welcome). Returns without waiting for a connection (see
 * {@link JwAgent.welcomed}). Each welcome sends the outbox, then fires `onConnect` jobs;
 * each lost connection fires `onDisconnect` jobs. Each `servers` frame replaces the server
 * list kept in `agent.db`, which the next start falls back on after DNS and the seeds.
 * @throws JwError `config` when the key file is unsafe or unreadable, the database cannot
 *   be opened, or there is no server to connect to (no `dns`, no seed, none remembered).
 */
export async function startAgent(config: AgentConfig, deps: AgentDeps = {}): Promise<JwAgent> {
  const clock = deps.clock ?? realClock;
  const random = deps.random ?? cryptoRandom;
  const fs = deps.fs ?? realFs;
  const logger = deps.logger ?? createLogger(`agent:${config.id}`, { level: config.logLevel });
  const startedAt = clock.now();

  const trusted = await loadTrustedSigners(fs, config.trust.signers);
  const allowRun = [...new Set([...config.allowRun, ...config.policy.run])];
  const identity = await loadIdentity(fs, config.data);
  const { keyPair } = identity;
  if (identity.created) {
    logger.info("created a key pair", { kid: keyPair.kid, path: identity.keyPath });
  }

  const db = openAgentDatabase(config.data);
  try {
    const serverStore = createServerStore(db, () => clock.now());
    const remembered = serverStore.load();
    const seeds = [...new Set([...(config.server ? [config.server] : []), ...config.seeds])];
    const discovery = createDiscovery({
      dns: config.dns,
      seeds,
      logger: logger.child("discovery"),
      clock,
      random,
      dnsBackend: deps.dns,
    });
    if (!discovery.configured && remembered.length === 0) {
      throw new JwError(
        "config",
        "no server to connect to: give --seed URL (or --server URL, JW_SEEDS, JW_SERVER, " +
          `"seeds" in the config) or --dns NAME (JW_DNS); no server list is remembered in ` +
          `${config.data}/${AGENT_DB_FILE}`,
      );
    }
    const audit = new AuditLog(db, clock);
    const executor = createWhitelistExecutor(
      deps.executor ?? createDenoExecutor({ clock }),
      allowRun,
      logger.child("exec"),
    );
    const registry = createRegistry();
    const tags: Record<string, string> = { ...config.tags };
    const outbox = createOutbox({
      db,
      maxFrames: config.outbox.maxFrames,
      maxSize: config.outbox.maxSize,
      send: (frame) => connection.send(frame),
      clock,
      random,
      logger: logger.child("outbox"),
    });
    const commands = withAcl(registry, createCommandAcl(config.allowCommands));
    /** The connection, once started (jobs may run before: onStart). */
    let linked: { readonly url: string | undefined } | undefined;
    const runner = createJobRunner({
      agentId: config.id,
      registry: commands,
      executor,
      fs,
      paths: { read: config.policy.read, write: config.policy.write },
      server: {
        url: () => (linked?.url ? httpOrigin(linked.url) : null),
        authorization: async () =>
          `Bearer ${await signAgentToken(keyPair, config.id, FILES_AUDIENCE, clock.now())}`,
      },
      store: createJobStore(db, config.jobs.keepRuns, logger),
      keepRuns: config.jobs.keepRuns,
      maxJobs: config.jobs.max,
      maxRunning: config.jobs.maxRunning,
      clock,
      random,
      logger,
      audit,
      stopTimeoutMs: deps.stopTimeoutMs,
      send: (frame) => outbox.deliver(frame),
      setTags: (changes) => {
        for (const [name, value] of Object.entries(changes)) {
          if (value === null) delete tags[name];
          else tags[name] = value;
        }
      },
    });
    registerBuiltins(registry, {
      exec: { defaultTimeoutMs: config.execTimeout, allowEnv: config.allowEnv },
      jobs: runner,
      scripts: {
        agentId: config.id,
        store: createScriptStore(db),
        trusted,
        policy: { ...config.policy, run: allowRun },
        memoryMb: Math.floor(config.scripts.memory / 2 ** 20),
        registry: commands,
        audit,
        sandbox: deps.sandbox ?? runSandboxed,
      },
    });
    const connection = linked = startConnection({
      agentId: config.id,
      discovery,
      servers: remembered,
      onServers: (servers) => serverStore.replace(servers),
      failoverMs: config.reconnect.failover,
      keyPair,
      tags: () => ({ ...tags }),
      reconnect: config.reconnect,
      maxFrame: config.maxFrame,
      transport: deps.transport ?? createDenoTransport(),
      clock,
      random,
      logger,
      audit,
      running: () => runner.running,
      startedAt,
      onWelcome: (welcome) => {
        outbox.limitFrames(welcome.maxFrameBytes);
        const waiting = outbox.size;
        void outbox.drain().then((sent) => {
          if (sent > 0) {
            logger.info("sent replies queued while disconnected", { frames: sent, waiting });
          }
        });
        runner.connected();
      },
      onDisconnect: () => {
        outbox.disconnected();
        runner.disconnected();
      },
      onAck: (upTo) => outbox.ack(upTo),
      stream: () => outbox.stream,
      onCommand: (frame, serverId) => void runner.run(frame, serverId),
    });
    runner.start();

    let closing: Promise<void> | undefined;
    const close = (): Promise<void> =>
      closing ??= (async () => {
        await runner.close();
        outbox.close();
        await connection.close();
        db.close();
        logger.info("stopped");
      })();

    logger.info("started", {
      kid: keyPair.kid,
      seeds: seeds.length ? seeds.join(",") : undefined,
      dns: config.dns?.name,
      rememberedServers: remembered.length || undefined,
      ...(trusted.kids.length ? { trustedSigners: trusted.kids } : {}),
    });
    return {
      id: config.id,
      kid: keyPair.kid,
      get connected() {
        return connection.connected;
      },
      welcomed: () => connection.welcomed(),
      close,
      [Symbol.asyncDispose]: close,
    };
  } catch (err) {
    db.close();
    throw err;
  }
}
