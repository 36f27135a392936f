/**
 * Frames exchanged on the agent WebSocket (`/v1/agent`). Every frame is a JSON object
 * `{v, id, type, ...}` checked against the schema for its `type` on receipt.
 *
 * Handshake: agent `hello` → server `challenge` → agent `response` → server `welcome`
 * (or `redirect`, or an `error` frame and close). Then the server sends `command`
 * frames and the agent sends `output`, `log`, `alive` and `setTag` frames.
 *
 * @module
 */
import { z } from "zod";
import {
  CommandKey,
  ErrorInfoSchema,
  Id,
  JsonObject,
  Meta,
  Millis,
  TagName,
  Tags,
  Version,
} from "./common.ts";

/** An Ed25519 public key as a JWK. */
export const PublicJwk = z.object({
  kty: z.literal("OKP"),
  crv: z.literal("Ed25519"),
  x: z.string().regex(/^[A-Za-z0-9_-]{43}$/, "must be a base64url Ed25519 key"),
  kid: z.string().optional(),
  alg: z.string().optional(),
  use: z.string().optional(),
}).strict();
export type PublicJwk = z.infer<typeof PublicJwk>;

/**
 * When a job runs. `now` (the default) runs once on receipt; `interval` every `every`
 * ("30s"); `cron` on a 5- or 6-field cron expression in `tz` (IANA zone, default the
 * agent's local zone); the `on*` triggers on agent start, each (re)connect, each
 * disconnect, and a clean stop.
 */
export const Schedule = z.discriminatedUnion("trigger", [
  z.object({ trigger: z.literal("now") }).strict(),
  z.object({ trigger: z.literal("interval"), every: z.string().min(1).max(32) }).strict(),
  z.object({
    trigger: z.literal("cron"),
    cron: z.string().min(1).max(256),
    tz: z.string().min(1).max(64).optional(),
  }).strict(),
  z.object({ trigger: z.literal("onStart") }).strict(),
  z.object({ trigger: z.literal("onConnect") }).strict(),
  z.object({ trigger: z.literal("onDisconnect") }).strict(),
  z.object({ trigger: z.literal("onStop") }).strict(),
]);
export type Schedule = z.infer<typeof Schedule>;

/** What to do when a job is due while its previous run is still going. Default `skip`. */
export const Overlap = z.enum(["skip", "allow"]);
export type Overlap = z.infer<typeof Overlap>;

/**
 * A job as sent by an operator: the agent makes up `id` when none is given. A persistent
 * job is kept in the agent's database and survives restarts; installing a job with an
 * existing id replaces it.
 */
export const JobSpec = z.object({
  id: Id.optional(),
  key: CommandKey,
  args: JsonObject.default({}),
  schedule: Schedule.optional(),
  persistent: z.boolean().optional(),
  overlap: Overlap.optional(),
  /**
   * Also run once right away when installed, besides the schedule: a watcher installed
   * with `onStart` and `runNow` starts now and again at every agent start.
   */
  runNow: z.boolean().optional(),
}).strict();
export type JobSpec = z.infer<typeof JobSpec>;

/** The job a reply belongs to. */
export const JobRef = z.object({ id: Id, key: CommandKey }).strict();
export type JobRef = z.infer<typeof JobRef>;

// ---- agent → server -------------------------------------------------------------

/** First frame from the agent. */
export const Hello = z.object({
  v: Version,
  id: Id,
  type: z.literal("hello"),
  agentId: Id,
  publicKey: PublicJwk,
  version: z.string().max(64),
  tags: Tags.default({}),
  /**
   * Identifies the agent's outbox (it changes if the agent's database is recreated), so the
   * server knows whether `dseq` values continue from what it has seen.
   */
  stream: Id.optional(),
  /**
   * Redirects the agent followed in a row to get here. A server welcomes an agent that has
   * reached its hop limit instead of redirecting it again, so disagreeing servers cannot
   * bounce it forever.
   */
  hops: z.number().int().nonnegative().max(64).optional(),
  /**
   * Servers (ids) the agent could not reach lately. A server does not redirect it to one of
   * these; it places the agent on the next-ranked server instead.
   */
  avoid: z.array(z.string().min(1).max(64)).max(32).optional(),
  /**
   * How long ago (ms) the agent last failed to reach each server in `avoid`, in the same
   * order. A server that has restarted since is not avoided. Missing values count as "just
   * now".
   */
  avoidAgo: z.array(z.number().int().nonnegative().max(86_400_000)).max(32).optional(),
}).strict();
export type Hello = z.infer<typeof Hello>;

/** The agent's signature over the challenge, as a compact JWS. */
export const ChallengeResponse = z.object({
  v: Version,
  id: Id,
  type: z.literal("response"),
  jws: z.string().max(4096),
}).strict();
export type ChallengeResponse = z.infer<typeof ChallengeResponse>;

/** Fields every reply to a command carries (reply-to). `id` is the command's envelope id. */
const replyFields = {
  v: Version,
  id: Id,
  meta: Meta.optional(),
  job: JobRef,
  /** The run of the job this frame belongs to (a job with a schedule runs many times). */
  run: Id.optional(),
  /** Per-run sequence number starting at 0. */
  seq: z.number().int().nonnegative(),
  /**
   * Delivery sequence: the agent's outbox position of this frame, increasing across runs,
   * reconnects and restarts. The server acknowledges it (`ack`) and drops a frame whose
   * `dseq` it has already processed, so a resent frame is delivered once.
   */
  dseq: z.number().int().positive().optional(),
  /** When the agent produced this frame. */
  ts: Millis,
};

/**
 * Output of a job: a line of text (`text`, with `stream`) or a structured object
 * (`data`). The last output of a run has `done: true` and the run summary.
 */
export const Output = z.object({
  ...replyFields,
  type: z.literal("output"),
  stream: z.enum(["stdout", "stderr", "result"]).optional(),
  text: z.string().optional(),
  data: JsonObject.optional(),
  done: z.boolean().optional(),
  start: Millis.optional(),
  finish: Millis.optional(),
  durationMs: z.number().nonnegative().optional(),
  exitCode: z.number().int().nullable().optional(),
  error: ErrorInfoSchema.nullable().optional(),
}).strict();
export type Output = z.infer<typeof Output>;

/** Log levels, most severe first. */
export const LogLevel = z.enum(["error", "warn", "info", "debug", "trace"]);
export type LogLevel = z.infer<typeof LogLevel>;

/** A log line from a job. */
export const Log = z.object({
  ...replyFields,
  type: z.literal("log"),
  level: LogLevel,
  message: z.string(),
  fields: JsonObject.optional(),
}).strict();
export type Log = z.infer<typeof Log>;

/** Heartbeat from the agent. */
export const Alive = z.object({
  v: Version,
  id: Id,
  type: z.literal("alive"),
  ts: Millis,
  uptimeMs: z.number().nonnegative(),
  running: z.number().int().nonnegative(),
}).strict();
export type Alive = z.infer<typeof Alive>;

/** Sets (string) or deletes (null) tags on the agent's connection. */
export const SetTag = z.object({
  v: Version,
  id: Id,
  type: z.literal("setTag"),
  ts: Millis,
  tags: z.record(TagName, z.string().max(256).nullable()),
  meta: Meta.optional(),
  job: JobRef.optional(),
  run: Id.optional(),
  seq: z.number().int().nonnegative().optional(),
  dseq: z.number().int().positive().optional(),
}).strict();
export type SetTag = z.infer<typeof SetTag>;

/** A protocol-level error about a frame the peer sent (`ref` is that frame's id if known). */
export const ErrorFrame = z.object({
  v: Version,
  id: Id,
  type: z.literal("error"),
  ref: z.string().optional(),
  error: ErrorInfoSchema,
}).strict();
export type ErrorFrame = z.infer<typeof ErrorFrame>;

// ---- server → agent -------------------------------------------------------------

/** Claims the agent must sign. `iat`/`exp` are seconds, as in JWT. */
export const ChallengeClaims = z.object({
  nonce: z.string().min(16).max(128),
  iat: z.number().int(),
  exp: z.number().int(),
  aud: z.string(),
  sub: Id,
  kid: z.string(),
}).strict();
export type ChallengeClaims = z.infer<typeof ChallengeClaims>;

/** The protected header the agent must sign with. */
export const ChallengeHeader = z.object({
  alg: z.literal("EdDSA"),
  typ: z.literal("JWT"),
  kid: z.string(),
}).strict();
export type ChallengeHeader = z.infer<typeof ChallengeHeader>;

/** Server's challenge: the agent signs exactly this header and payload. */
export const Challenge = z.object({
  v: Version,
  id: Id,
  type: z.literal("challenge"),
  header: ChallengeHeader,
  payload: ChallengeClaims,
}).strict();
export type Challenge = z.infer<typeof Challenge>;

/** Handshake accepted. */
export const Welcome = z.object({
  v: Version,
  id: Id,
  type: z.literal("welcome"),
  serverId: z.string(),
  agentId: Id,
  heartbeatMs: z.number().int().positive(),
  maxFrameBytes: z.number().int().positive(),
}).strict();
export type Welcome = z.infer<typeof Welcome>;

/** Go to another server instead (bounded hops on the agent). */
export const Redirect = z.object({
  v: Version,
  id: Id,
  type: z.literal("redirect"),
  url: z.string().url(),
  reason: z.string(),
  /**
   * Milliseconds to wait before connecting to `url`: a server handing many agents to
   * another spreads their arrival. Default 0.
   */
  retryAfter: z.number().int().nonnegative().max(3_600_000).optional(),
}).strict();
export type Redirect = z.infer<typeof Redirect>;

/** A server of the cluster as agents see it: enough to compute placement themselves. */
export const ServerEntry = z.object({
  id: z.string().min(1).max(64),
  url: z.string().url(),
  /** The health score placement uses (settled, see shared/lrw.ts); 0 is healthy. */
  health: z.number().int().nonnegative(),
}).strict();
export type ServerEntry = z.infer<typeof ServerEntry>;

/**
 * The cluster's live servers, sent after the welcome and whenever they change. The agent
 * keeps the list (also across restarts) and, when its server goes away, connects to its
 * next-ranked server (`rank` in shared/lrw.ts) instead of starting over from its seeds.
 */
export const Servers = z.object({
  v: Version,
  id: Id,
  type: z.literal("servers"),
  servers: z.array(ServerEntry).max(1024),
}).strict();
export type Servers = z.infer<typeof Servers>;

/**
 * The server has processed every reply up to `upTo` (a `dseq`): the agent may forget them.
 * Sent in batches, and in answer to every `alive`, so a live server is never silent longer
 * than a heartbeat.
 */
export const Ack = z.object({
  v: Version,
  id: Id,
  type: z.literal("ack"),
  upTo: z.number().int().nonnegative(),
}).strict();
export type Ack = z.infer<typeof Ack>;

/** A job to run. Replies carry `id` and `meta` back verbatim. */
export const Command = z.object({
  v: Version,
  id: Id,
  type: z.literal("command"),
  meta: Meta.optional(),
  job: JobSpec,
}).strict();
export type Command = z.infer<typeof Command>;

/** Frames an agent may send, by `type`. */
export const agentToServer = {
  hello: Hello,
  response: ChallengeResponse,
  output: Output,
  log: Log,
  alive: Alive,
  setTag: SetTag,
  error: ErrorFrame,
} as const;

/** Frames a server may send, by `type`. */
export const serverToAgent = {
  challenge: Challenge,
  welcome: Welcome,
  redirect: Redirect,
  servers: Servers,
  command: Command,
  ack: Ack,
  error: ErrorFrame,
} as const;

/** Any frame an agent sends. */
export type AgentFrame = Hello | ChallengeResponse | Output | Log | Alive | SetTag | ErrorFrame;
/** Any frame a server sends. */
export type ServerFrame =
  | Challenge
  | Welcome
  | Redirect
  | Servers
  | Command
  | Ack
  | ErrorFrame;
/** A reply to a command. */
export type Reply = Output | Log | SetTag;
