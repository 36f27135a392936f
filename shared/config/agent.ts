/**
 * `jw agent` configuration. Every field documents its default.
 *
 * @module
 */
import { z } from "zod";
import { isHostName, parseNameServer } from "../dns.ts";
import { Id, Tags } from "../protocol/common.ts";
import { AbsolutePath, NetPermission } from "../protocol/script.ts";
import { Duration, LogLevelSetting, ServerUrl, Size } from "./types.ts";
import type { EnvBinding } from "./load.ts";

/** The agent config schema. */
export const AgentConfig = z.object({
  /** Agent id, unique in the fleet. Required. */
  id: Id,
  /**
   * A server URL (http(s) or ws(s)): the same as one more entry of `seeds`, tried first.
   * Default: none.
   */
  server: ServerUrl.optional(),
  /**
   * Server URLs (http(s) or ws(s)) of the cluster, any of them: the agent connects to one and
   * is redirected to the server that owns it. Tried after the DNS SRV targets. The agent
   * needs seeds, `dns`, or a server list remembered from an earlier run. Default [].
   */
  seeds: z.array(ServerUrl).default([]),
  /**
   * Find servers by DNS SRV: each record's target and port is a server, tried before the
   * seeds (priority order, weighted random within a priority). Default: none.
   */
  dns: z.object({
    /** The SRV name, e.g. "_jw._tcp.example.com". */
    name: z.string().refine(isHostName, "expected a DNS name like _jw._tcp.example.com"),
    /**
     * "ip:port" of a DNS server to ask instead of the system's; it is asked for the targets'
     * addresses too, and the agent connects to those addresses. Default: the system's.
     */
    nameServer: z.string().superRefine((v, ctx) => {
      try {
        parseNameServer(v);
      } catch (err) {
        ctx.addIssue({ code: "custom", message: (err as Error).message });
      }
    }).optional(),
    /** Connect to the targets with https/wss instead of http/ws. Default false. */
    tls: z.boolean().default(false),
  }).strict().optional(),
  /** Data directory: key pair, sqlite database. Default "./jw-data/agent". */
  data: z.string().min(1).default("./jw-data/agent"),
  /** Absolute paths of programs `exec.run` may start. Default [] (nothing). */
  allowRun: z.array(z.string().startsWith("/", "whitelisted programs must be absolute paths"))
    .default([]),
  /**
   * Environment variable names an operator may set for `exec.run` (programs otherwise start
   * with only PATH, LANG and HOME). `LD_*`/`DYLD_*` are always refused. Default [].
   */
  allowEnv: z.array(z.string().regex(/^[A-Za-z_][A-Za-z0-9_]*$/, "must be a variable name"))
    .default([]),
  /**
   * Command keys this agent accepts (its ACL): exact keys ("exec.run"), whole categories
   * ("job.*") or "*" for every registered command. Others are denied with `forbidden`.
   * Default ["*"].
   */
  allowCommands: z.array(
    z.string().regex(
      /^(\*|[a-z][a-zA-Z0-9_]*(\.[a-z][a-zA-Z0-9_]*)*(\.\*)?)$/,
      'must be a command key, "category.*" or "*"',
    ),
  ).default(["*"]),
  /**
   * The most a signed script may be granted; a script whose header asks for more is refused
   * before it starts. `run` is merged with `allowRun` (one whitelist for `exec.run` and for
   * scripts); `read`/`write` entries cover everything below a directory; `net` entries are
   * `host` (any port) or `host:port`. Default: nothing.
   */
  policy: z.object({
    run: z.array(AbsolutePath).default([]),
    read: z.array(AbsolutePath).default([]),
    write: z.array(AbsolutePath).default([]),
    net: z.array(NetPermission).default([]),
  }).strict().prefault({}),
  /** Who may sign scripts for this agent. */
  trust: z.object({
    /**
     * Files holding trusted signers' Ed25519 public JWKs (`jw sign keygen` writes FILE.pub).
     * Default [] (no script can be registered).
     */
    signers: z.array(z.string().min(1)).default([]),
  }).strict().prefault({}),
  /** Script runs. */
  scripts: z.object({
    /** Heap limit of one script run; a script going past it is stopped. Default "64MiB". */
    memory: Size.pipe(
      z.number().min(16 * 2 ** 20, "must be at least 16MiB").max(
        16 * 2 ** 30,
        "may be at most 16GiB",
      ),
    ).prefault("64MiB"),
  }).strict().prefault({}),
  /** Tags sent in `hello`. Default {}. */
  tags: Tags.default({}),
  /** Largest frame accepted from the server. Default "1MiB". */
  maxFrame: Size.prefault("1MiB"),
  /** Reconnect backoff: exponential from `min`, capped at `max`, full jitter. */
  reconnect: z.object({
    /** First retry delay cap. Default "500ms". */
    min: Duration.prefault("500ms"),
    /** Largest delay cap. Default "30s". */
    max: Duration.prefault("30s"),
    /**
     * After a welcomed connection is lost, the first retry (to the next-ranked server) waits
     * a random delay below this, so the agents of a dead server arrive at the others spread
     * over it: each of S remaining servers gets about N / S / failover handshakes per second
     * from N agents. Default "5s".
     */
    failover: Duration.prefault("5s"),
  }).strict().prefault({}),
  /** Jobs kept by the agent. */
  jobs: z.object({
    /** Finished runs kept per job; older ones are pruned. Default 20. */
    keepRuns: z.number().int().min(1).max(10_000).default(20),
    /**
     * Most jobs installed at once (persistent or scheduled, including stored jobs that are
     * blocked); an install of a new id beyond it is refused with `forbidden`. Default 1000.
     */
    max: z.number().int().min(1).max(100_000).default(1000),
    /**
     * Most runs going at once across all jobs. A due run beyond it is skipped (counted in the
     * job's `skipped`); a command to run now beyond it is refused with `forbidden`. The
     * `job.*` commands are never refused by it. Default 64.
     */
    maxRunning: z.number().int().min(1).max(10_000).default(64),
  }).strict().prefault({}),
  /** Replies kept in sqlite until the server acknowledges them. */
  outbox: z.object({
    /** Most frames kept; the oldest are dropped (and counted) beyond it. Default 10000. */
    maxFrames: z.number().int().min(1).max(10_000_000).default(10_000),
    /**
     * Most stored reply JSON (measured in characters, about bytes for ASCII); the oldest
     * frames are dropped (and counted) beyond it. Default "64MiB".
     */
    maxSize: Size.prefault("64MiB"),
  }).strict().prefault({}),
  /** Longest an `exec.run` may take when it gives no `timeout`. Default "10m". */
  execTimeout: Duration.pipe(z.number().max(2_147_483_647, "may be at most 24d")).prefault("10m"),
  /** Log level on stderr: error, warn, info, debug. Default "info". */
  logLevel: LogLevelSetting.default("info"),
}).strict();
export type AgentConfig = z.output<typeof AgentConfig>;

/** `JW_*` variables for the agent. */
export const agentEnv: Record<string, EnvBinding> = {
  JW_ID: { path: "id" },
  JW_SERVER: { path: "server" },
  JW_SEEDS: { path: "seeds", kind: "list" },
  JW_DNS: { path: "dns.name" },
  JW_DNS_SERVER: { path: "dns.nameServer" },
  JW_DNS_TLS: { path: "dns.tls", kind: "json" },
  JW_DATA: { path: "data" },
  JW_ALLOW_RUN: { path: "allowRun", kind: "list" },
  JW_ALLOW_COMMANDS: { path: "allowCommands", kind: "list" },
  JW_ALLOW_ENV: { path: "allowEnv", kind: "list" },
  JW_ALLOW_READ: { path: "policy.read", kind: "list" },
  JW_ALLOW_WRITE: { path: "policy.write", kind: "list" },
  JW_ALLOW_NET: { path: "policy.net", kind: "list" },
  JW_TRUST_SIGNERS: { path: "trust.signers", kind: "list" },
  JW_TAGS: { path: "tags", kind: "json" },
  JW_LOG_LEVEL: { path: "logLevel" },
};
