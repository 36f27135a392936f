/**
 * The operator HTTP API under `/v1/` (HTTP basic auth on every request):
 *
 * - `GET  /v1/agents` → `{agents: AgentInfo[]}`
 * - `POST /v1/run` with a {@link RunRequest} → NDJSON stream: one `dispatched` event,
 *   then every reply (each with `agent`), then one `summary` event.
 * - `GET  /v1/stream?agent=ID&tag=k=v&id=ENVELOPE` → NDJSON stream of live replies.
 * - `GET  /v1/audit?limit=N&action=A` → `{entries: AuditRecord[]}`
 *
 * Errors are `{error: {code, message}}` with a matching HTTP status.
 *
 * @module
 */
import { z } from "zod";
import { JwError } from "../errors.ts";
import { ErrorInfoSchema, Id, Meta, Tags } from "./common.ts";
import { JobSpec, type Log, type Output, type SetTag } from "./agent.ts";

/** Who a command goes to: one agent, every agent with a tag value, or every agent. */
export type Target =
  | { kind: "agent"; id: string }
  | { kind: "tag"; name: string; value: string }
  | { kind: "all" };

/**
 * Parses `agent:ID`, `tag:NAME=VALUE` or `all`.
 * @throws JwError `usage` with the accepted forms.
 */
export function parseTarget(text: string): Target {
  if (text === "all") return { kind: "all" };
  if (text.startsWith("agent:")) {
    const id = text.slice(6);
    if (Id.safeParse(id).success) return { kind: "agent", id };
  }
  if (text.startsWith("tag:")) {
    const eq = text.indexOf("=");
    if (eq > 4) return { kind: "tag", name: text.slice(4, eq), value: text.slice(eq + 1) };
  }
  throw new JwError("usage", `bad target "${text}": use agent:ID, tag:NAME=VALUE or all`);
}

/** The text form of a {@link Target}. */
export function formatTarget(t: Target): string {
  return t.kind === "all"
    ? "all"
    : t.kind === "agent"
    ? `agent:${t.id}`
    : `tag:${t.name}=${t.value}`;
}

/** Body of `POST /v1/run`. */
export const RunRequest = z.object({
  target: z.string().min(1),
  job: JobSpec,
  meta: Meta.optional(),
  /** How long the server waits for every agent's `done` (ms, default 30000, max 1 h). */
  timeoutMs: z.number().int().positive().max(3_600_000).default(30_000),
  /**
   * How long the command waits for an offline target agent in its owner's mailbox (ms,
   * default 1 h, max 7 days); 0 sends it only to agents connected now.
   */
  ttlMs: z.number().int().nonnegative().max(7 * 24 * 3_600_000).default(3_600_000),
}).strict();
export type RunRequest = z.input<typeof RunRequest>;

/** One agent as listed by `GET /v1/agents`. */
export const AgentInfo = z.object({
  id: Id,
  connected: z.boolean(),
  tags: Tags,
  server: z.string().nullable(),
  lastSeen: z.number().nullable(),
  firstSeen: z.number(),
  kid: z.string(),
  version: z.string().nullable(),
  address: z.string().nullable(),
});
export type AgentInfo = z.infer<typeof AgentInfo>;

/** A reply as relayed to operators: the agent's frame plus the agent id. */
export type RelayedReply = (Output | Log | SetTag) & { agent: string };

/** First event of a run stream. */
export interface DispatchedEvent {
  type: "dispatched";
  id: string;
  target: string;
  /** Every target agent, on any server of the cluster, connected or not. */
  agents: string[];
  /**
   * Other servers of the cluster the command was handed to; each delivers it to its own
   * agents. Absent on a lone server.
   */
  servers?: string[];
  /**
   * Targets another server handles (agent id → server id): it is connected there, or it
   * is offline and that server keeps the command in its mailbox. That server streams their
   * replies (`GET /v1/runs/ID` on it). Targets not listed are handled here.
   */
  owners?: Record<string, string>;
  /** Base URL of each server named in `owners`. */
  urls?: Record<string, string>;
}

/** First event of `GET /v1/runs/ID`: one server's part of a command. */
export interface PartEvent {
  type: "part";
  id: string;
  /** The server answering. */
  server: string;
  /** The server the command was given to. */
  origin: string;
  /** The targets this server handles. */
  agents: string[];
}

/**
 * Where one target of a command is: `pending` (not sent yet), `delivered` (sent),
 * `running` (replies arriving), `done` (finished without error), `error` (finished with
 * an error, refused, lost or timed out), `offline` (waiting in its server's mailbox),
 * `expired` (the mailbox time ran out before the agent came back).
 */
export const TargetState = z.enum([
  "pending",
  "delivered",
  "running",
  "done",
  "error",
  "offline",
  "expired",
]);
export type TargetState = z.infer<typeof TargetState>;

/** How one agent's part of a run ended (or stands, for `offline`). */
export const AgentOutcome = z.object({
  status: z.enum(["ok", "error", "timeout", "not_connected", "offline", "expired"]),
  error: ErrorInfoSchema.nullable(),
  exitCode: z.number().int().nullable().optional(),
  durationMs: z.number().optional(),
  /** The target's state; absent from servers that predate per-target states. */
  state: TargetState.optional(),
  /** For `offline`: when (epoch ms) the command leaves the mailbox unless delivered. */
  until: z.number().optional(),
  /** The server that reported it. */
  server: z.string().optional(),
});
export type AgentOutcome = z.infer<typeof AgentOutcome>;

/** Last event of a run stream. */
export interface SummaryEvent {
  type: "summary";
  id: string;
  agents: Record<string, AgentOutcome>;
}

/** Any line of a run stream. */
export type RunEvent = DispatchedEvent | PartEvent | RelayedReply | SummaryEvent;

/** One audit record as served by `GET /v1/audit`. */
export interface AuditRecord {
  seq: number;
  ts: number;
  actor: string;
  action: string;
  target: string | null;
  key: string | null;
  argsDigest: string | null;
  outcome: "ok" | "denied" | "error";
  reason: string | null;
}

/** A script stored on a server, as served by `/v1/scripts` (the text is served separately). */
export interface ScriptInfo {
  name: string;
  version: number;
  description?: string;
  /** `sha256:` + hex of the whole signed file. */
  sha256: string;
  /** Key id of the signing key. */
  signer: string;
  signedAt?: string;
  /** The header's permissions, defaults applied. */
  permissions: { run: string[]; read: string[]; write: string[]; net: string[] };
  /** Size of the file in bytes. */
  size: number;
  /** Operator who uploaded it. */
  uploadedBy: string;
  /** Upload time, ms since the epoch. */
  uploadedAt: number;
}

/** The answer to `POST /v1/scripts`. */
export interface ScriptUploaded {
  script: ScriptInfo;
  /** False when the same name, version and content was already stored. */
  created: boolean;
}

/** The answer to `DELETE /v1/scripts/NAME`. */
export interface ScriptDeleted {
  name: string;
  /** Versions removed from this server. */
  versions: number[];
  /** The run that sent `script.delete` to the connected agents, and its outcomes by agent. */
  run: { id: string; agents: Record<string, AgentOutcome> };
}

/** A server of the cluster, as `GET /v1/members` serves it. */
export interface ClusterMemberInfo {
  /** Server id. */
  id: string;
  /** Gossip "host:port"; null for a server that does not gossip (no cluster key). */
  gossip: string | null;
  /** HTTP base URL, when known. */
  url: string | null;
  /** alive, suspect (missed probes, may refute), dead (failed) or left (gracefully). */
  state: "alive" | "suspect" | "dead" | "left";
  /** Its incarnation number: bumped each time it refutes a suspicion or restarts. */
  incarnation: number;
  /** Lifeguard health score, 0 = healthy; null when not yet known. */
  health: number | null;
  /** True for the server that answered. */
  self: boolean;
}

/** The answer to `GET /v1/members`. */
export interface MembersAnswer {
  /** False when this server runs alone (no cluster key configured). */
  clustered: boolean;
  members: ClusterMemberInfo[];
}

/** Body of `POST /v1/cluster/join`. */
export const JoinRequest = z.object({
  /** Gossip "host:port" addresses of servers to join. */
  addresses: z.array(z.string().min(1).max(300)).min(1).max(64),
}).strict();
export type JoinRequest = z.infer<typeof JoinRequest>;

/** HTTP status for an error code, used by the server edge and nowhere else. */
export function httpStatusFor(code: string): number {
  switch (code) {
    case "usage":
    case "bad_json":
    case "invalid_message":
    case "invalid_args":
    case "unknown_type":
    case "invalid_script":
    case "bad_signature":
    case "unsupported":
      return 400;
    case "unauthorized":
      return 401;
    case "forbidden":
    case "untrusted":
      return 403;
    case "not_found":
      return 404;
    case "frame_too_large":
      return 413;
    case "not_connected":
    case "conflict":
      return 409;
    case "timeout":
      return 504;
    default:
      return 500;
  }
}

/** One output (file, broker, HTTP endpoint) as `GET /v1/outputs` serves it: `{outputs: OutputInfo[]}`. */
export interface OutputInfo {
  name: string;
  /** file, amqp, mqtt, nsq or http. */
  type: string;
  /** `idle` (nothing queued), `sending`, or `retrying` (the destination is failing). */
  state: "idle" | "sending" | "retrying";
  /** Messages waiting in the output's queue, and their bytes. */
  queued: number;
  bytes: number;
  /** Messages the destination confirmed. */
  delivered: number;
  /** Failed delivery attempts (batches). */
  failed: number;
  /** Messages dropped because the queue was full. */
  dropped: number;
  /** Messages in the dead-letter file (refused, or the format script failed on them). */
  dead: number;
  /** Messages the format script dropped (returned null). */
  filtered: number;
  lastError: string | null;
  lastErrorAt: number | null;
  lastDeliveredAt: number | null;
}
