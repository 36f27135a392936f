/**
 * `jw server` configuration. Every field documents its default.
 *
 * @module
 */
import { z } from "zod";
import { Duration, HostPort, LogLevelSetting, Size } from "./types.ts";
import type { EnvBinding } from "./load.ts";

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
};
