/**
 * `jw server` configuration. Every field documents its default.
 *
 * @module
 */
import { z } from "zod";
import { Duration, HostPort, LogLevelSetting, Size } from "./types.ts";
import type { EnvBinding } from "./load.ts";
import { FilesConfig } from "./files.ts";
import { OutputsConfig } from "./outputs.ts";

/** An operator with fixed credentials. */
export const UserConfig = z.object({
  /** Login name. */
  name: z.string().regex(
    /^[A-Za-z0-9._@-]{1,64}$/,
    "user names are 1-64 of letters, digits, . _ @ -",
  ),
  /** bcrypt hash of the password (`jw server hash-password`). */
  bcrypt: z.string().regex(
    /^\$2[aby]\$\d\d\$[./A-Za-z0-9]{53}$/,
    "must be a bcrypt hash ($2b$...)",
  ),
}).strict();

/** The server config schema. */
export const ServerConfig = z.object({
  /** Server id, unique in the cluster. Default: generated on first start, kept in `data`. */
  id: z.string().regex(/^[A-Za-z0-9._-]{1,64}$/).optional(),
  /** Listen address for HTTP and WebSockets. Default "127.0.0.1:7400"; port 0 picks a free port. */
  http: HostPort.prefault("127.0.0.1:7400"),
  /** URL agents and operators use to reach this server. Default: derived from `http`. */
  publicUrl: z.string().url().optional(),
  /** Data directory: sqlite database, server id. Default "./jw-data/server". */
  data: z.string().min(1).default("./jw-data/server"),
  /** Operator authentication. */
  auth: z.object({
    /** Fixed credentials; empty means no operator can log in. Default []. */
    users: z.array(UserConfig).default([]),
  }).strict().prefault({}),
  /** Agent connections. */
  agents: z.object({
    /** How long a challenge may be answered. Default "30s". */
    challengeTtl: Duration.prefault("30s"),
    /** Heartbeat interval the server asks agents for. Default "15s". */
    heartbeat: Duration.prefault("15s"),
    /** Largest frame accepted from an agent. Default "1MiB". */
    maxFrame: Size.prefault("1MiB"),
    /** Time allowed to finish the handshake after connecting. Default "10s". */
    handshakeTimeout: Duration.prefault("10s"),
  }).strict().prefault({}),
  /** Gossip with the other servers of the cluster (UDP and TCP on one port). */
  cluster: z.object({
    /**
     * Gossip listen address. Default "127.0.0.1:7401"; port 0 picks a free port. Listening on
     * a non-loopback address needs `key`.
     */
    gossip: HostPort.prefault("127.0.0.1:7401"),
    /** Address other servers send gossip to. Default: the gossip address as bound. */
    advertise: z.string().optional(),
    /** Cluster name; servers of another cluster are never accepted. Default "jw". */
    name: z.string().regex(/^[A-Za-z0-9._-]{1,64}$/).default("jw"),
    /**
     * The cluster's pre-shared key (base64 of 32 bytes; `jw server gen-key` makes one): every
     * gossip packet is signed with it. Required when the server has seeds or peers. Default:
     * none.
     */
    key: z.string().optional(),
    /**
     * Further keys accepted but not used to sign, for rotation: install the new key here on
     * every server, then make it `key` everywhere, then remove the old one. Default [].
     */
    keys: z.array(z.string()).default([]),
    /** Encrypt gossip with AES-256-GCM as well as signing it. Default false. */
    encrypt: z.boolean().default(false),
    /** "host:port" gossip addresses of servers to join at start. Default []. */
    seeds: z.array(z.string()).default([]),
    /** Find seeds by DNS SRV, e.g. `_jw-gossip._udp.example.com`. */
    dns: z.object({
      name: z.string().min(1),
      /** A name server "host:port" to ask instead of the system's (tests). */
      nameServer: z.string().optional(),
    }).strict().optional(),
    /**
     * Find the other servers of this cluster on the LAN by UDP multicast (SSDP-style signed
     * announcements), without seeds. Off by default.
     */
    ssdp: z.object({
      enabled: z.boolean().default(false),
      /** Multicast group. Default "239.255.255.250". */
      group: z.string().default("239.255.255.250"),
      /** UDP port. Default 1900. */
      port: z.number().int().min(1).max(65535).default(1900),
      /** IPv4 address of the interface to use. Default: every IPv4 interface. */
      interface: z.string().optional(),
      /** How often this server announces itself. Default "10s". */
      interval: Duration.prefault("10s"),
    }).strict().prefault({}),
    /** SWIM timing (memberlist's LAN defaults). */
    probeInterval: Duration.prefault("1s"),
    probeTimeout: Duration.prefault("500ms"),
    suspicionMult: z.number().int().min(1).max(100).default(4),
    pushPullInterval: Duration.prefault("30s"),
    gossipInterval: Duration.prefault("200ms"),
  }).strict().prefault({}),
  /**
   * Where agents connect: each agent belongs to one server of the cluster, chosen by
   * weighted rendezvous hashing over the live servers (shared/lrw.ts). A server redirects an
   * agent that belongs elsewhere, and hands its agents over gradually when the cluster
   * changes. A lone server keeps every agent.
   */
  placement: z.object({
    /**
     * Redirects an agent may have followed in a row; at this many a server welcomes it
     * wherever it arrived (servers briefly disagreeing cannot bounce it). Default 3.
     */
    maxHops: z.number().int().min(0).max(16).default(3),
    /** Most connected agents handed to another server per second. Default 50. */
    handoffRate: z.number().positive().max(100_000).default(50),
    /** Handed-off agents reconnect after a random wait up to this. Default "5s". */
    handoffSpread: Duration.prefault("5s"),
    /** A server must have been alive this long before agents are handed to it. Default "5s". */
    settle: Duration.prefault("5s"),
    /** An agent is not handed off sooner than this after it connected. Default "10s". */
    minAge: Duration.prefault("10s"),
    /**
     * A worse health score counts for placement only after it has lasted this long, so a
     * flickering score does not move agents. Default "10s".
     */
    healthRise: Duration.prefault("10s"),
    /** A better health score counts for placement after it has lasted this long. Default "30s". */
    healthFall: Duration.prefault("30s"),
  }).strict().prefault({}),
  /**
   * Where agents' messages and audit records go besides the live stream: files, AMQP, MQTT,
   * NSQ, HTTP (see shared/config/outputs.ts and docs/outputs.md). Default none.
   */
  outputs: OutputsConfig,
  /**
   * Files served under `/files/` to agents (`file.fetch`) and operators: a root directory,
   * optional listings, upstreams to fetch missing files from once (see
   * shared/config/files.ts). Default: off.
   */
  files: FilesConfig.prefault({}),
  /** Log level on stderr: error, warn, info, debug. Default "info". */
  logLevel: LogLevelSetting.default("info"),
}).strict();
export type ServerConfig = z.output<typeof ServerConfig>;

/** `JW_*` variables for the server. */
export const serverEnv: Record<string, EnvBinding> = {
  JW_ID: { path: "id" },
  JW_HTTP: { path: "http" },
  JW_PUBLIC_URL: { path: "publicUrl" },
  JW_DATA: { path: "data" },
  JW_LOG_LEVEL: { path: "logLevel" },
  JW_USERS: { path: "auth.users", kind: "json" },
  JW_GOSSIP: { path: "cluster.gossip" },
  JW_CLUSTER_KEY: { path: "cluster.key" },
  JW_SEEDS: { path: "cluster.seeds", kind: "list" },
};
