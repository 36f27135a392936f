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
import { verifySelfSigned } from "../shared/crypto/script.ts";
import { type ScriptInfo, sha256Text } from "../shared/protocol/mod.ts";
import { createLogger, type Logger } from "../shared/log.ts";
import { cryptoRandom, type Random, randomId } from "../shared/random.ts";
import { createAgentStore } from "./agents/agent_store.ts";
import { createMailbox } from "./agents/mailbox.ts";
import { createAgentGateway } from "./agents/gateway.ts";
import { createHandshake } from "./agents/handshake.ts";
import { createRegistry } from "./agents/registry.ts";
import { serverMigrations } from "./db.ts";
import { createReplyBus } from "./delegate/bus.ts";
import { createDispatcher } from "./delegate/dispatch.ts";
import { createApp } from "./http/app.ts";
import { createDenoAgentSockets } from "./http/deno_agent_socket.ts";
import { type Cluster, startCluster } from "./cluster/cluster.ts";
import { createKeyring, type Keyring } from "./cluster/keyring.ts";
import { peerToken, verifyPeerToken } from "./cluster/peer_auth.ts";
import { createPeerStore, type PeerStore } from "./cluster/peers.ts";
import { createNetTransport, type NetTransport } from "./cluster/net_transport.ts";
import { type SealedTransport, sealTransport } from "./cluster/seal.ts";
import { resolveSeeds } from "./cluster/seeds.ts";
import { keyringSsdpAuth, type Ssdp, startSsdp } from "./cluster/ssdp.ts";
import type { AgentRecord, CommandRecord, ScriptRecord } from "./cluster/state.ts";
import { type Handoff, startHandoff } from "./routing/handoff.ts";
import { createPlacement } from "./routing/placement.ts";
import { createSettledHealth } from "./routing/settled_health.ts";
import { createBackend } from "./outputs/backends.ts";
import { loadFormatter } from "./outputs/format.ts";
import { OutputQueue } from "./outputs/outbox.ts";
import { type Outputs, startOutputs } from "./outputs/pipeline.ts";
import { createScriptExpander } from "./scripts/expand.ts";
import { createScriptStore, type ScriptStore } from "./scripts/store.ts";
import { createFilesHandler } from "./files/mod.ts";
import { filesCacheDir } from "../shared/config/files.ts";
import { FILES_AUDIENCE, verifyAgentToken } from "../shared/crypto/agent_token.ts";

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
  /** Gossip "host:port", or undefined when the server runs alone (no cluster key). */
  readonly gossip?: string;
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
  const gossip = await openGossip(config, clock, random, logger);
  let db: DatabaseSync | undefined;
  let outputs: Outputs | undefined;
  try {
    db = openDatabase(join(config.data, "server.db"), serverMigrations);
    outputs = await startOutputs({
      serverId: id,
      outputs: config.outputs,
      queue: new OutputQueue(db, id),
      backend: (output) =>
        createBackend(output, {
          serverId: id,
          clock,
          logger: logger.child(`output:${output.name}`),
        }),
      formatter: (path) => loadFormatter(path),
      deadLetterDir: join(config.data, "outputs"),
      clock,
      random,
      logger: logger.child("outputs"),
    });
    const server = new Server(config, id, db, clock, random, logger, outputs, gossip);
    if (gossip) {
      server.joinSeeds(config, clock);
      await server.startSsdp(config, clock, random);
    }
    return server;
  } catch (err) {
    await outputs?.close();
    db?.close();
    await gossip?.transport.close();
    throw err;
  }
}

/**
 * The sealed gossip transport when the config has a cluster key; undefined for a lone
 * server (which refuses seeds: they need a key).
 */
async function openGossip(
  config: ServerConfig,
  clock: Clock,
  random: Random,
  logger: Logger,
): Promise<Gossip | undefined> {
  const c = config.cluster;
  if (!c.key) {
    if (c.seeds.length || c.dns) {
      throw new JwError(
        "config",
        "cluster.key is required to join other servers: make one with `jw server gen-key` " +
          "and give every server of the cluster the same (cluster.key or JW_CLUSTER_KEY)",
      );
    }
    return undefined;
  }
  const keyring = createKeyring({ cluster: c.name, keys: [c.key, ...c.keys], primary: c.key });
  const host = c.gossip.hostname.includes(":") ? `[${c.gossip.hostname}]` : c.gossip.hostname;
  const net = await createNetTransport({
    bind: `${host}:${c.gossip.port}`,
    advertise: c.advertise,
    clock,
    logger: logger.child("gossip-net"),
  });
  return {
    transport: sealTransport(net, { keyring, clock, random, encrypt: c.encrypt }),
    net,
    keyring,
  };
}

/** The gossip sockets: the sealed transport the cluster uses, the sockets under it, the keys. */
interface Gossip {
  transport: SealedTransport;
  net: NetTransport;
  keyring: Keyring;
}

class Server implements JwServer {
  readonly id: string;
  readonly url: string;
  readonly audit: AuditLog;
  readonly gossip?: string;
  readonly #cluster?: Cluster;
  readonly #handoff: Handoff;
  readonly #peers?: PeerStore;
  readonly #keyring?: Keyring;
  #ssdp?: Ssdp;
  readonly #clock: Clock;
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
    outputs: Outputs,
    gossip?: Gossip,
  ) {
    const transport = gossip?.transport;
    this.#keyring = gossip?.keyring;
    this.#clock = clock;
    this.id = id;
    this.gossip = transport?.address;
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
    // Every reply, heartbeat and audit record also goes to the configured outputs.
    const hasOutputs = config.outputs.length > 0;
    if (hasOutputs) {
      bus.subscribe({}, (reply) => outputs.reply(reply, registry.get(reply.agent)?.tags ?? {}));
      this.audit.onAppend((event, ts) => outputs.audit(event, ts));
    }
    const localScripts = createScriptStore(db, clock);
    // Uploads and deletes here are gossiped (name, version, sha256, signer, and this server
    // as the holder); other servers fetch the content when they need it.
    const scripts: ScriptStore = {
      ...localScripts,
      put: (script, uploadedBy) => {
        const uploaded = localScripts.put(script, uploadedBy);
        this.#announceScript(uploaded.script);
        return uploaded;
      },
      delete: (name, version) => {
        const versions = localScripts.delete(name, version);
        for (const v of versions) this.#cluster?.publish("script", `${name}@${v}`, null);
        return versions;
      },
    };
    const placement = createPlacement({
      serverId: id,
      url: () => this.url,
      members: transport ? () => this.#cluster?.members() ?? [] : undefined,
      clock,
      maxHops: config.placement.maxHops,
    });
    const dispatcher = createDispatcher({
      serverId: id,
      mailbox: createMailbox(db),
      // Agents seen here that are not connected now (none, cheaply, when all are).
      known: (agentId) => {
        const offline = (row: NonNullable<ReturnType<typeof store.get>>) => ({
          id: row.id,
          tags: row.tags,
          connected: false,
          server: row.server,
        });
        if (agentId !== undefined) {
          const row = registry.get(agentId) ? undefined : store.get(agentId);
          return row ? [offline(row)] : [];
        }
        return store.count() <= registry.connected
          ? []
          : store.all().filter((row) => !registry.get(row.id)).map(offline);
      },
      cluster: transport
        ? {
          agents: () => this.#cluster?.state.list("agent") ?? [],
          owner: (agentId) => placement.owner(agentId)?.id,
          url: (serverId) => placement.servers().find((s) => s.id === serverId)?.url,
        }
        : undefined,
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
      forward: transport
        ? (command) => {
          const cluster = this.#cluster;
          if (!cluster) return [];
          cluster.publish("command", command.id, {
            id: command.id,
            target: command.target,
            job: command.job as Record<string, unknown>,
            ...(command.meta === undefined ? {} : { meta: command.meta }),
            actor: command.actor,
            origin: id,
            expires: clock.now() + command.timeoutMs,
            ...(command.ttlMs ? { ttl: command.ttlMs } : {}),
          }, true);
          return cluster.members().filter((m) => !m.self && m.state === "alive").map((m) => m.id);
        }
        : undefined,
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
      onWelcomed: (agentId) => dispatcher.welcomed(agentId),
      onAlive: hasOutputs
        ? (agentId, frame, tags) => outputs.alive(agentId, frame, tags)
        : undefined,
      beforeAck: hasOutputs ? () => outputs.flush() : undefined,
      delivery: store,
      placement: {
        decide: (agentId, hints) => placement.decide(agentId, hints),
        serversFrame: () => this.#handoff.serversFrame(),
      },
    });
    const sockets = createDenoAgentSockets(gateway);
    const files = createFilesHandler({
      config: config.files,
      cacheDir: filesCacheDir(config.files, config.data),
      clock,
      logger: logger.child("files"),
    });
    const app = createApp({
      serverId: id,
      users: config.auth.users,
      registry,
      dispatcher,
      bus,
      audit: this.audit,
      acceptAgent: sockets.accept,
      scripts,
      url: () => this.url,
      outputs,
      files: {
        handler: files,
        verifyAgent: (token) =>
          verifyAgentToken(
            token,
            (agentId) => store.pinnedKey(agentId),
            FILES_AUDIENCE,
            clock.now(),
          ),
      },
      cluster: transport
        ? {
          members: () => this.#cluster?.members() ?? [],
          join: (addresses) => this.#cluster!.join(addresses),
          agents: () => this.#cluster?.state.list("agent") ?? [],
          stats: () => ({
            membership: this.#cluster?.stats() ?? {},
            security: transport.stats(),
            network: gossip!.net.stats(),
          }),
          ensureScript: (name, version) => this.#ensureScript(localScripts, name, version),
          verifyPeer: (token, subject) =>
            verifyPeerToken(gossip!.keyring, token, subject, clock.now()),
        }
        : undefined,
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
    if (transport) {
      const peers = createPeerStore(db);
      const cluster = startCluster({
        onJoin: (m) => peers.remember(m.name, m.address, clock.now()),
        serverId: id,
        url: this.url,
        transport,
        clock,
        random,
        logger: logger.child("cluster"),
        settleHealth: createSettledHealth({
          riseMs: config.placement.healthRise,
          fallMs: config.placement.healthFall,
        }),
        memberlist: {
          probeInterval: config.cluster.probeInterval,
          probeTimeout: config.cluster.probeTimeout,
          suspicionMult: config.cluster.suspicionMult,
          pushPullInterval: config.cluster.pushPullInterval,
          gossipInterval: config.cluster.gossipInterval,
          packetLimit: transport.maxPacketMessage,
        },
      });
      this.#cluster = cluster;
      this.#peers = peers;
      const agentRecord = (agentId: string): AgentRecord | undefined => {
        const row = store.get(agentId);
        if (!row) return undefined;
        const live = registry.get(agentId);
        return {
          id: agentId,
          key: { x: row.publicKey.x, kid: row.kid },
          server: id,
          tags: { ...(live?.tags ?? row.tags) },
          connected: live !== undefined,
          lastSeen: live?.lastSeen ?? row.lastSeen ?? clock.now(),
        };
      };
      // This server's agents, as the cluster sees them.
      registry.onChange((agentId) => {
        const record = agentRecord(agentId);
        if (record) cluster.publish("agent", agentId, record);
      });
      // Scripts held here, for the others; a script deleted elsewhere is deleted here too.
      for (const info of localScripts.list()) this.#announceScript(info);
      cluster.onChange((change) => {
        if (change.kind !== "script" || !change.remote || change.value !== null) return;
        const gone = change.previous as ScriptRecord | null;
        if (!gone) return;
        try {
          localScripts.delete(gone.name, gone.version);
          logger.info("deleted a script deleted on another server", {
            name: gone.name,
            version: gone.version,
          });
        } catch {
          // not held here
        }
      });
      // Commands given to other servers, for the agents connected here.
      cluster.onChange((change) => {
        if (change.kind !== "command" || !change.remote || change.value === null) return;
        const command = change.value as CommandRecord;
        if (command.origin === id || command.expires < clock.now()) return;
        const sent = dispatcher.deliver(
          {
            id: command.id,
            target: command.target,
            job: command.job as never,
            ...(command.meta ? { meta: command.meta } : {}),
            actor: command.actor,
            timeoutMs: Math.max(1, command.expires - clock.now()),
            ...(command.ttl ? { ttlMs: command.ttl } : {}),
          },
          command.origin,
        );
        if (sent.length) {
          logger.info("delivered a command from another server", {
            from: command.origin,
            id: command.id,
            agents: sent.length,
          });
        }
      });
    }
    this.#handoff = startHandoff({
      serverId: id,
      placement,
      agents: () => registry.live(),
      clock,
      random,
      audit: this.audit,
      logger: logger.child("placement"),
      rate: config.placement.handoffRate,
      spreadMs: config.placement.handoffSpread,
      settleMs: config.placement.settle,
      minAgeMs: config.placement.minAge,
    });
    logger.info("listening", {
      id,
      url: this.url,
      addr: `${this.#http.addr.hostname}:${this.#http.addr.port}`,
    });

    this.#shutdown = async () => {
      this.#handoff.stop();
      await this.#ssdp?.stop();
      await this.#cluster?.leave(2000);
      gateway.close();
      dispatcher.close();
      registry.closeAll(1001, "server closing");
      bus.close();
      await outputs.close();
      await files.close();
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

  /** Tells the cluster this server holds a script (gossiped as a `script` record). */
  #announceScript(info: ScriptInfo): void {
    this.#cluster?.publish("script", `${info.name}@${info.version}`, {
      name: info.name,
      version: info.version,
      sha256: info.sha256,
      signer: info.signer,
      holder: this.url,
    });
  }

  /** Starts LAN discovery when `cluster.ssdp.enabled`: every server found is joined. */
  async startSsdp(config: ServerConfig, clock: Clock, random: Random): Promise<void> {
    const c = config.cluster.ssdp;
    const cluster = this.#cluster;
    if (!c.enabled || !cluster || !this.#keyring || !this.gossip) return;
    this.#ssdp = await startSsdp({
      serverId: this.id,
      cluster: this.#keyring.cluster,
      gossip: this.gossip,
      group: c.group,
      port: c.port,
      interface: c.interface,
      intervalMs: c.interval,
      clock,
      random,
      logger: this.#logger.child("ssdp"),
      ...keyringSsdpAuth(this.#keyring),
      onPeer: (address) => {
        if (this.#closing) return;
        cluster.join([address]).catch((err) =>
          this.#logger.warn("cannot join a server found on the LAN", {
            address,
            error: (err as Error).message,
          })
        );
      },
    });
  }

  /** See ClusterView.ensureScript (server/http/app.ts). */
  async #ensureScript(store: ScriptStore, name: string, version?: number): Promise<void> {
    const cluster = this.#cluster;
    if (!cluster || !this.#keyring) return;
    try {
      store.get(name, version);
      return;
    } catch {
      // not held here: look in the cluster
    }
    const known = cluster.state.list("script")
      .filter((r) => r.name === name && (version === undefined || r.version === version))
      .sort((a, b) => b.version - a.version)[0];
    if (!known || known.holder === this.url) return;
    const subject = `script:${known.name}@${known.version}`;
    const url = `${known.holder}/peer/v1/scripts/${
      encodeURIComponent(known.name)
    }/${known.version}`;
    let text: string;
    try {
      const res = await fetch(url, {
        headers: {
          authorization: `Bearer ${peerToken(this.#keyring, this.id, subject, this.#clock.now())}`,
        },
        signal: AbortSignal.timeout(10_000),
      });
      text = await res.text();
      if (!res.ok) throw new Error(`HTTP ${res.status}: ${text.slice(0, 200)}`);
    } catch (err) {
      throw new JwError(
        "not_connected",
        `cannot fetch script ${known.name}@${known.version} from ${known.holder}: ` +
          (err as Error).message,
      );
    }
    if (sha256Text(text) !== known.sha256) {
      throw new JwError(
        "bad_signature",
        `script ${known.name}@${known.version} from ${known.holder} does not match its sha256`,
      );
    }
    store.put(await verifySelfSigned(text), `cluster:${known.holder}`);
    this.#logger.info("fetched a script from another server", {
      name: known.name,
      version: known.version,
      from: known.holder,
    });
  }

  /**
   * Joins the configured seeds (static and DNS) and the servers met before (remembered in
   * the database) in the background: retried with a growing delay (1 s doubling to 30 s)
   * until one answers or the server closes — three tries when there are only remembered
   * servers.
   */
  joinSeeds(config: ServerConfig, clock: Clock): void {
    const cluster = this.#cluster;
    const c = config.cluster;
    // Servers met in the last day, so a restart rejoins even if the seeds are gone.
    const remembered = this.#peers?.recent(clock.now() - 24 * 3600_000) ?? [];
    if (!cluster || (c.seeds.length === 0 && !c.dns && remembered.length === 0)) return;
    let delay = 1000;
    let tries = 0;
    const attempt = async () => {
      if (this.#closing) return;
      tries++;
      try {
        const found = await resolveSeeds({
          seeds: c.seeds,
          dns: c.dns,
          logger: this.#logger.child("seeds"),
          clock,
        });
        const seeds = [...new Set([...found, ...remembered])].filter((a) => a !== this.gossip);
        if (seeds.length === 0 && found.length > 0) {
          this.#logger.info("this server is its own only seed; waiting for others to join");
          return;
        }
        if (seeds.length === 0) throw new JwError("not_connected", "no seed address found");
        const joined = await cluster.join(seeds);
        this.#logger.info("joined the cluster", { seeds: seeds.length, answered: joined });
      } catch (err) {
        if (this.#closing) return;
        if (c.seeds.length === 0 && !c.dns && tries >= 3) {
          this.#logger.warn("no remembered server answered; waiting for others to join", {
            error: (err as Error).message,
          });
          return;
        }
        this.#logger.warn("cannot join the cluster yet; retrying", {
          error: (err as Error).message,
          in: `${delay}ms`,
        });
        clock.setTimeout(() => void attempt(), delay);
        delay = Math.min(delay * 2, 30_000);
      }
    };
    void attempt();
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
