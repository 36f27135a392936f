/**
 * `startServer`: wires the database, agent handshake and registry, reply bus, dispatcher,
 * script store and HTTP app together and serves them with `Deno.serve`. This is the Deno
 * adapter of the server; the parts it wires take a Clock and Random and never touch `Deno.*`.
 *
 * @module
 */
import { join } from "node:path";
import { type Clock, realClock } from "../shared/clock.ts";
import type { ServerConfig } from "../shared/config/mod.ts";
import { AuditLog, type DatabaseSync, openDatabase } from "../shared/db/mod.ts";
import { JwError } from "../shared/errors.ts";
import { createLogger, type Logger } from "../shared/log.ts";
import { cryptoRandom, type Random, randomId } from "../shared/random.ts";
import { createAgentStore } from "./agents/agent_store.ts";
import { createAgentGateway } from "./agents/gateway.ts";
import { createHandshake } from "./agents/handshake.ts";
import { createRegistry } from "./agents/registry.ts";
import { serverMigrations } from "./db.ts";
import { createReplyBus } from "./delegate/bus.ts";
import { createDispatcher } from "./delegate/dispatch.ts";
import { createApp } from "./http/app.ts";
import { createDenoAgentSockets } from "./http/deno_agent_socket.ts";
import { createScriptExpander } from "./scripts/expand.ts";
import { createScriptStore } from "./scripts/store.ts";

/** Seams for tests; each defaults to the real thing. */
export interface ServerDeps {
  /** Default `realClock`. */
  clock?: Clock;
  /** Default `cryptoRandom`. */
  random?: Random;
  /** Default: a stderr logger at `config.logLevel`. */
  logger?: Logger;
}

/** A running server. */
export interface JwServer extends AsyncDisposable {
  /** Server id: `config.id`, else generated once and kept in `DATA/server-id`. */
  readonly id: string;
  /**
   * Base URL for agents and operators: `config.publicUrl` (without a trailing slash) if
   * set, else `http://HOST:PORT` with the port actually bound.
   */
  readonly url: string;
  /** The server's audit log. */
  readonly audit: AuditLog;
  /**
   * Graceful stop: refuses new connections, closes agent sockets with 1001, finishes open
   * runs (pending agents: status `error`, code `closed`) and streams, waits for the HTTP
   * server, then closes the database. Idempotent; concurrent calls share one shutdown.
   */
  close(): Promise<void>;
}

const SERVER_ID_FILE = "server-id";
const SERVER_ID_RE = /^[A-Za-z0-9._-]{1,64}$/;
/** How long close() waits for agent sockets to finish their close handshake. */
const SOCKET_DRAIN_MS = 2_000;
/** How long close() lets HTTP responses finish before cutting connections. */
const HTTP_DRAIN_MS = 5_000;

async function loadServerId(config: ServerConfig, random: Random): Promise<string> {
  if (config.id) return config.id;
  const path = join(config.data, SERVER_ID_FILE);
  try {
    const id = (await Deno.readTextFile(path)).trim();
    if (!SERVER_ID_RE.test(id)) {
      throw new JwError("config", `${path} does not hold a valid server id`);
    }
    return id;
  } catch (err) {
    if (!(err instanceof Deno.errors.NotFound)) {
      if (err instanceof JwError) throw err;
      throw new JwError("config", `cannot read ${path}: ${(err as Error).message}`, { cause: err });
    }
  }
  const id = `srv-${randomId(random, 6)}`;
  await Deno.writeTextFile(path, id + "\n");
  return id;
}

function baseUrl(config: ServerConfig, addr: Deno.NetAddr): string {
  if (config.publicUrl) return config.publicUrl.replace(/\/+$/, "");
  const host = addr.hostname.includes(":") ? `[${addr.hostname}]` : addr.hostname;
  return `http://${host}:${addr.port}`;
}

/**
 * Starts a server for `config` (already parsed). Creates `config.data` if missing, opens
 * `DATA/server.db`, and listens on `config.http` (port 0 picks a free port; see
 * {@link JwServer.url}). Resolves once listening.
 * @throws JwError `config` when the data directory, id file or database is unusable, or the
 * address cannot be bound.
 */
export async function startServer(config: ServerConfig, deps: ServerDeps = {}): Promise<JwServer> {
  const clock = deps.clock ?? realClock;
  const random = deps.random ?? cryptoRandom;
  const logger = deps.logger ?? createLogger("server", { level: config.logLevel });

  try {
    await Deno.mkdir(config.data, { recursive: true });
  } catch (err) {
    throw new JwError(
      "config",
      `cannot create data directory ${config.data}: ${(err as Error).message}`,
      {
        cause: err,
      },
    );
  }
  const id = await loadServerId(config, random);
  const db: DatabaseSync = openDatabase(join(config.data, "server.db"), serverMigrations);
  try {
    return new Server(config, id, db, clock, random, logger);
  } catch (err) {
    db.close();
    throw err;
  }
}

class Server implements JwServer {
  readonly id: string;
  readonly url: string;
  readonly audit: AuditLog;
  readonly #db: DatabaseSync;
  readonly #logger: Logger;
  readonly #abort = new AbortController();
  readonly #http: Deno.HttpServer<Deno.NetAddr>;
  readonly #shutdown: () => Promise<void>;
  #closing?: Promise<void>;
  /** Deferred work (fan-out audit batches) not yet run; flushed before the database closes. */
  readonly #deferred = new Set<() => void>();

  constructor(
    config: ServerConfig,
    id: string,
    db: DatabaseSync,
    clock: Clock,
    random: Random,
    logger: Logger,
  ) {
    this.id = id;
    this.#db = db;
    this.#logger = logger;
    this.audit = new AuditLog(db, clock);
    const store = createAgentStore(db, clock);
    const registry = createRegistry({
      serverId: id,
      store,
      clock,
      logger: logger.child("registry"),
    });
    const handshake = createHandshake({
      serverId: id,
      challengeTtlMs: config.agents.challengeTtl,
      keys: store,
      clock,
      random,
    });
    const bus = createReplyBus({ logger: logger.child("bus") });
    const scripts = createScriptStore(db, clock);
    const dispatcher = createDispatcher({
      // The only place the server's core gets a real timer: after the sends, audit on the
      // next turn (see DispatcherOptions.defer).
      defer: (fn) => {
        this.#deferred.add(fn);
        setTimeout(() => {
          if (this.#deferred.delete(fn)) fn();
        }, 0);
      },
      registry,
      bus,
      audit: this.audit,
      clock,
      random,
      logger: logger.child("dispatch"),
      // `script.register {name, version?}` goes out with the stored file filled in.
      expand: createScriptExpander(scripts),
    });
    const gateway = createAgentGateway({
      serverId: id,
      limits: {
        maxFrameBytes: config.agents.maxFrame,
        handshakeTimeoutMs: config.agents.handshakeTimeout,
        heartbeatMs: config.agents.heartbeat,
      },
      handshake,
      registry,
      bus,
      audit: this.audit,
      clock,
      random,
      logger: logger.child("agents"),
      onAgentError: (agentId, ref, error) => dispatcher.rejected(agentId, ref, error),
      delivery: store,
    });
    const sockets = createDenoAgentSockets(gateway);
    const app = createApp({
      serverId: id,
      users: config.auth.users,
      registry,
      dispatcher,
      bus,
      audit: this.audit,
      acceptAgent: sockets.accept,
      scripts,
      logger: logger.child("http"),
    });

    try {
      this.#http = Deno.serve({
        hostname: config.http.hostname,
        port: config.http.port,
        signal: this.#abort.signal,
        onListen: () => {},
      }, (request, info) => {
        const remote = info.remoteAddr as Deno.NetAddr;
        return app.fetch(request, { remoteAddress: `${remote.hostname}:${remote.port}` });
      });
    } catch (err) {
      throw new JwError(
        "config",
        `cannot listen on ${config.http.hostname}:${config.http.port}: ${(err as Error).message}`,
        { cause: err },
      );
    }
    this.url = baseUrl(config, this.#http.addr);
    logger.info("listening", {
      id,
      url: this.url,
      addr: `${this.#http.addr.hostname}:${this.#http.addr.port}`,
    });

    this.#shutdown = async () => {
      gateway.close();
      dispatcher.close();
      registry.closeAll(1001, "server closing");
      bus.close();
      // Graceful: lets the streams just ended flush to their clients; abort is the backstop.
      const deadline = setTimeout(() => this.#abort.abort(), HTTP_DRAIN_MS);
      try {
        await Promise.all([this.#http.shutdown(), sockets.drained(SOCKET_DRAIN_MS)]);
        await this.#http.finished;
      } finally {
        clearTimeout(deadline);
      }
    };
  }

  close(): Promise<void> {
    this.#closing ??= (async () => {
      try {
        await this.#shutdown();
      } catch (err) {
        this.#logger.error("shutdown failed", { error: String(err) });
      } finally {
        for (const fn of this.#deferred) fn();
        this.#deferred.clear();
        this.#db.close();
        this.#logger.info("stopped", { id: this.id });
      }
    })();
    return this.#closing;
  }

  [Symbol.asyncDispose](): Promise<void> {
    return this.close();
  }
}
