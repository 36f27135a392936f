/**
 * The server's HTTP surface as a runtime-neutral hono app (test it with `app.request()`):
 *
 * - `GET /healthz` (no auth) → `{ok, id, version, agents}`
 * - `GET /v1/agent` → agent WebSocket (no operator auth: the handshake authenticates)
 * - `GET /v1/agents`, `POST /v1/run`, `GET /v1/runs/ID`, `GET /v1/stream`, `GET /v1/audit`,
 *   `GET /v1/outputs` (HTTP basic auth)
 * - `POST /v1/scripts`, `GET /v1/scripts`, `GET /v1/scripts/NAME[?version=N]`,
 *   `DELETE /v1/scripts/NAME[?version=N]` (HTTP basic auth): stored signed scripts
 * - `GET|HEAD /files/PATH` (an agent's token, or HTTP basic auth): the file service
 *   (server/files/)
 *
 * Errors leave as `{error: {code, message}}` with `httpStatusFor(code)`; this file is the
 * only place that turns a {@link JwError} into an HTTP response.
 *
 * @module
 */
import { Hono } from "hono";
import { bodyLimit } from "hono/body-limit";
import type { ContentfulStatusCode } from "hono/utils/http-status";
import type { AuditLog } from "../../shared/db/mod.ts";
import { verifySelfSigned } from "../../shared/crypto/script.ts";
import { isJwError, JwError, toJwError } from "../../shared/errors.ts";
import type { Logger } from "../../shared/log.ts";
import { silentLogger } from "../../shared/log.ts";
import {
  describeIssues,
  httpStatusFor,
  Id,
  JW_VERSION,
  MAX_SCRIPT_BYTES,
  parseScript,
  type RelayedReply,
  ScriptName,
} from "../../shared/protocol/mod.ts";
import {
  type ClusterMemberInfo,
  JoinRequest,
  type MembersAnswer,
  type ScriptDeleted,
} from "../../shared/protocol/operator.ts";
import type { AgentRecord } from "../cluster/state.ts";
import { mergeAgents } from "../cluster/view.ts";
import type { Registry } from "../agents/registry.ts";
import { type AuthEnv, type BasicUser, createBasicAuth } from "../auth/basic.ts";
import { relayedJson, type ReplyBus, type ReplyFilter } from "../delegate/bus.ts";
import { type Dispatcher, runSummary } from "../delegate/dispatch.ts";
import type { ScriptStore } from "../scripts/store.ts";
import type { OutputStatus } from "../outputs/pipeline.ts";
import type { FilesHandler } from "../files/mod.ts";

/** Largest accepted `POST /v1/run` body, bytes. */
export const MAX_RUN_BODY_BYTES = 1024 * 1024;

/**
 * Largest accepted `POST /v1/scripts` body, bytes: the script size limit plus a little, so a
 * script just over the limit gets the script parser's clearer message.
 */
export const MAX_SCRIPT_BODY_BYTES = MAX_SCRIPT_BYTES + 4096;

/** How long `DELETE /v1/scripts/NAME` waits by default for agents to answer `script.delete`. */
export const SCRIPT_DELETE_TIMEOUT_MS = 10_000;

/** Upgrades a request to an agent WebSocket and returns the 101 response. */
export type AcceptAgent = (request: Request, address: string) => Response;

/** Options for {@link createApp}. */
export interface AppOptions {
  serverId: string;
  /** Operators allowed in (basic auth). */
  users: readonly BasicUser[];
  registry: Registry;
  dispatcher: Dispatcher;
  bus: ReplyBus;
  audit: AuditLog;
  /** The runtime's WebSocket upgrade for `GET /v1/agent`. */
  acceptAgent: AcceptAgent;
  /** Stored signed scripts (`/v1/scripts`). */
  scripts: ScriptStore;
  /**
   * How long `DELETE /v1/scripts/NAME` waits for the connected agents to answer the
   * `script.delete` it sends them, ms. Default {@link SCRIPT_DELETE_TIMEOUT_MS}.
   */
  scriptDeleteTimeoutMs?: number;
  /** The cluster, when this server gossips (it has a cluster key). */
  cluster?: ClusterView;
  /** This server's own URL (shown by `/v1/members` when it runs alone). */
  url?: () => string | undefined;
  /** The outputs pipeline, for `GET /v1/outputs`. */
  outputs?: { status(): OutputStatus[] };
  /** The file service under `/files/`. */
  files?: {
    handler: Pick<FilesHandler, "handle">;
    /**
     * Checks an agent's token (`Authorization: Bearer …`).
     * @returns the agent id.
     * @throws JwError `unauthorized`.
     */
    verifyAgent(token: string): Promise<string>;
  };
  logger?: Logger;
}

/** What the HTTP API needs of the cluster. */
export interface ClusterView {
  /** Every server known, this one first. */
  members(): ClusterMemberInfo[];
  /**
   * Joins servers at gossip addresses.
   * @returns how many answered.
   * @throws JwError `not_connected` when none did.
   */
  join(addresses: readonly string[]): Promise<number>;
  /** Agent records gossiped by every server. */
  agents(): AgentRecord[];
  /** Counters: membership (probes, suspicions, …) and security (drops by reason, …). */
  stats(): Record<string, unknown>;
  /**
   * Makes sure this server holds script `name` (`version`, or the newest the cluster knows):
   * fetches it from a server that holds it when it is not here. Resolves without doing
   * anything when it is held here or unknown to the cluster.
   * @throws JwError when the fetch fails or what arrives does not verify.
   */
  ensureScript(name: string, version?: number): Promise<void>;
  /**
   * Checks a peer server's token (`Authorization: Bearer …`) for `subject`.
   * @returns the peer's server id.
   * @throws JwError `unauthorized`.
   */
  verifyPeer(token: string, subject: string): string;
}

/** The script a `script.register {name, version?}` run asks for by name, if that is what it is. */
function scriptWanted(body: unknown): { name: string; version?: number } | undefined {
  const job = (body as { job?: { key?: unknown; args?: Record<string, unknown> } })?.job;
  const args = job?.args;
  if (job?.key !== "script.register" || !args || typeof args !== "object") return undefined;
  if (typeof args.name !== "string" || args.script !== undefined) return undefined;
  if (!ScriptName.safeParse(args.name).success) return undefined;
  const version = args.version;
  if (version !== undefined && !Number.isInteger(version)) return undefined;
  return { name: args.name, version: version as number | undefined };
}

/**
 * The part of a request URL after `/files/`, exactly as sent: no percent-decoding and no
 * dot-segment resolution (the file service checks those itself).
 */
export function filesPathOf(url: string): string {
  const afterScheme = url.indexOf("//");
  const start = url.indexOf("/", afterScheme < 0 ? 0 : afterScheme + 2);
  let path = start < 0 ? "/" : url.slice(start);
  const end = path.search(/[?#]/);
  if (end >= 0) path = path.slice(0, end);
  return path.startsWith("/files/") ? path.slice("/files/".length) : "";
}

/** Something to read NDJSON lines from: a channel or a run's event iterator. */
interface LineSource {
  next(): Promise<IteratorResult<unknown>>;
  /** Items ready now, when known (lets several lines go out in one chunk). */
  readonly size?: number;
}

const encoder = new TextEncoder();

/** One NDJSON line; relayed replies reuse the agent's frame text when the server kept it. */
function line(value: unknown): string {
  return relayedJson(value as RelayedReply) + "\n";
}

/**
 * A streaming `application/x-ndjson` response: one JSON value per line, written as the
 * source yields it. `stop` runs when the client goes away.
 */
function ndjson(source: LineSource, stop: () => void): Response {
  const body = new ReadableStream<Uint8Array>({
    async pull(controller) {
      const first = await source.next();
      if (first.done) {
        controller.close();
        return;
      }
      let text = line(first.value);
      while ((source.size ?? 0) > 0 && text.length < 64 * 1024) {
        const more = await source.next();
        if (more.done) break;
        text += line(more.value);
      }
      controller.enqueue(encoder.encode(text));
    },
    cancel() {
      stop();
    },
  });
  return new Response(body, {
    headers: { "content-type": "application/x-ndjson", "cache-control": "no-store" },
  });
}

function parseStreamFilter(query: Record<string, string>): ReplyFilter {
  const filter: ReplyFilter = {};
  if (query.agent !== undefined) {
    if (!Id.safeParse(query.agent).success) {
      throw new JwError("usage", `bad agent id "${query.agent.slice(0, 64)}"`);
    }
    filter.agent = query.agent;
  }
  if (query.tag !== undefined) {
    const eq = query.tag.indexOf("=");
    if (eq < 1) {
      throw new JwError("usage", `bad tag filter "${query.tag.slice(0, 64)}": use NAME=VALUE`);
    }
    filter.tag = { name: query.tag.slice(0, eq), value: query.tag.slice(eq + 1) };
  }
  if (query.id !== undefined) {
    if (!Id.safeParse(query.id).success) {
      throw new JwError("usage", `bad envelope id "${query.id.slice(0, 64)}"`);
    }
    filter.id = query.id;
  }
  if (query.type !== undefined) {
    const types = query.type.split(",");
    const known = ["output", "log", "setTag"] as const;
    for (const t of types) {
      if (!(known as readonly string[]).includes(t)) {
        throw new JwError(
          "usage",
          `bad message type "${t.slice(0, 32)}": use output, log or setTag (comma-separated)`,
        );
      }
    }
    filter.types = types as (typeof known)[number][];
  }
  return filter;
}

function parseLimit(text: string | undefined): number | undefined {
  if (text === undefined) return undefined;
  const n = Number(text);
  if (!/^\d+$/.test(text) || n < 1 || n > 10_000) {
    throw new JwError("usage", `bad limit "${text.slice(0, 32)}": use a whole number 1-10000`);
  }
  return n;
}

/** Longest `wait` for `GET /v1/runs/ID`, ms. */
export const MAX_RUN_WAIT_MS = 30_000;

/** `?wait=MS` of `GET /v1/runs/ID`: default 5000. @throws JwError `usage`. */
function parseWait(text: string | undefined): number {
  if (text === undefined) return 5000;
  const n = Number(text);
  if (!/^\d+$/.test(text) || n > MAX_RUN_WAIT_MS) {
    throw new JwError(
      "usage",
      `bad wait "${text.slice(0, 32)}": use milliseconds, 0-${MAX_RUN_WAIT_MS}`,
    );
  }
  return n;
}

/** A script name from a path segment. @throws JwError `usage`. */
function parseScriptName(text: string): string {
  if (!ScriptName.safeParse(text).success) {
    throw new JwError(
      "usage",
      `bad script name ${
        JSON.stringify(text.slice(0, 64))
      }: use 1-64 of a-z 0-9 . _ - starting with a letter or digit`,
    );
  }
  return text;
}

/** The `version` query parameter, if given. @throws JwError `usage`. */
function parseScriptVersion(text: string | undefined): number | undefined {
  if (text === undefined) return undefined;
  const n = Number(text);
  if (!/^\d{1,10}$/.test(text) || n < 1 || n > 2 ** 31 - 1) {
    throw new JwError(
      "usage",
      `bad version ${JSON.stringify(text.slice(0, 32))}: use a positive whole number`,
    );
  }
  return n;
}

/** Audit outcome of a refused upload: a signature problem is a denial, the rest errors. */
function uploadOutcome(code: string): "denied" | "error" {
  return code === "untrusted" || code === "bad_signature" ? "denied" : "error";
}

/**
 * Builds the app. Handlers never throw past `onError`; a client that disconnects from a
 * stream has its subscription (or run) closed.
 */
export function createApp(options: AppOptions): Hono<AuthEnv> {
  const { registry, dispatcher, bus, audit, scripts } = options;
  const logger = options.logger ?? silentLogger;
  const app = new Hono<AuthEnv>();

  /** The URL of the server `agentId` is connected to, when that is another live server. */
  const ownerUrl = (agentId: string): string | undefined => {
    const cluster = options.cluster;
    if (!cluster || registry.get(agentId)) return undefined;
    const record = cluster.agents().find((a) => a.id === agentId && a.connected);
    if (!record || record.server === options.serverId) return undefined;
    const member = cluster.members().find((m) => m.id === record.server);
    return member?.state === "alive" && member.url ? member.url : undefined;
  };

  app.onError((err, c) => {
    if (isJwError(err)) {
      return c.json({ error: err.toJSON() }, httpStatusFor(err.code) as ContentfulStatusCode);
    }
    logger.error("request failed", {
      method: c.req.method,
      path: c.req.path,
      stack: err instanceof Error ? err.stack : String(err),
    });
    return c.json({ error: { code: "internal", message: "internal server error" } }, 500);
  });

  app.notFound((c) =>
    c.json(
      { error: { code: "not_found", message: `no route for ${c.req.method} ${c.req.path}` } },
      404,
    )
  );

  app.get(
    "/healthz",
    (c) =>
      c.json({ ok: true, id: options.serverId, version: JW_VERSION, agents: registry.connected }),
  );

  app.get("/v1/agent", (c) => {
    if (c.req.header("upgrade")?.toLowerCase() !== "websocket") {
      throw new JwError("usage", "GET /v1/agent expects a WebSocket upgrade");
    }
    return options.acceptAgent(c.req.raw, c.env?.remoteAddress ?? "unknown");
  });

  // Another server of the cluster fetching a script it was asked to register: authenticated
  // by a peer token signed with the cluster key, not by operator credentials.
  app.get("/peer/v1/scripts/:name/:version", (c) => {
    const name = c.req.param("name");
    const version = Number(c.req.param("version"));
    const subject = `script:${name}@${version}`;
    const token = /^Bearer (.+)$/.exec(c.req.header("authorization") ?? "")?.[1];
    try {
      if (!options.cluster) throw new JwError("unauthorized", "this server does not gossip");
      if (!token) throw new JwError("unauthorized", "peer token missing");
      options.cluster.verifyPeer(token, subject);
    } catch (err) {
      const e = toJwError(err);
      audit.append({
        actor: `peer:${c.env?.remoteAddress ?? "unknown"}`,
        action: "peer.denied",
        target: subject.slice(0, 200),
        outcome: "denied",
        reason: e.message,
      });
      throw e;
    }
    if (!ScriptName.safeParse(name).success || !Number.isInteger(version)) {
      throw new JwError("usage", "bad script name or version");
    }
    const stored = scripts.get(name, version);
    return c.body(stored.text, 200, { "content-type": "application/javascript; charset=utf-8" });
  });

  const basicAuth = createBasicAuth({ users: options.users, audit, logger });
  if (options.files) {
    const files = options.files;
    // Agents prove themselves with a token signed by their key; operators with basic auth.
    app.use("/files/*", async (c, next) => {
      const bearer = /^Bearer[ \t]+(\S+)$/i.exec(c.req.header("authorization") ?? "");
      if (!bearer) return await basicAuth(c, next);
      try {
        await files.verifyAgent(bearer[1]);
      } catch (err) {
        const e = toJwError(err);
        audit.append({
          actor: `peer:${c.env?.remoteAddress ?? "unknown"}`,
          action: "files.denied",
          target: new URL(c.req.url).pathname.slice(0, 200),
          outcome: "denied",
          reason: e.message,
        });
        throw e;
      }
      await next();
    });
    // The path as sent, still percent-encoded and not normalised (`new URL()` would resolve
    // `%2e%2e`): the handler decodes it once, and refuses traversal.
    app.all("/files/*", (c) => files.handler.handle(c.req.raw, filesPathOf(c.req.url)));
  }

  app.use("/v1/*", basicAuth);

  app.get("/v1/agents", (c) => {
    const local = registry.list();
    return c.json({
      agents: options.cluster ? mergeAgents(local, options.cluster.agents()) : local,
    });
  });

  app.get("/v1/members", (c) => {
    const answer: MembersAnswer = options.cluster
      ? { clustered: true, members: options.cluster.members() }
      : {
        clustered: false,
        members: [{
          id: options.serverId,
          gossip: null,
          url: options.url?.() ?? null,
          state: "alive",
          incarnation: 0,
          health: 0,
          self: true,
        }],
      };
    return c.json(answer);
  });

  app.get("/v1/cluster/stats", (c) => {
    if (!options.cluster) {
      throw new JwError("unsupported", "this server does not gossip (no cluster key)");
    }
    return c.json(options.cluster.stats());
  });

  app.post("/v1/cluster/join", async (c) => {
    const actor = `operator:${c.get("operator")}`;
    let body: unknown;
    try {
      body = JSON.parse(await c.req.text());
    } catch (err) {
      throw new JwError("bad_json", `join request is not valid JSON: ${(err as Error).message}`);
    }
    const request = JoinRequest.safeParse(body);
    if (!request.success) {
      throw new JwError("usage", `bad join request: ${describeIssues(request.error)}`);
    }
    const target = request.data.addresses.join(",").slice(0, 512);
    if (!options.cluster) {
      audit.append({ actor, action: "cluster.join", target, outcome: "error", reason: "no key" });
      throw new JwError(
        "unsupported",
        "this server does not gossip: give it a cluster key (cluster.key or JW_CLUSTER_KEY, " +
          "from jw server gen-key) and restart it",
      );
    }
    try {
      const joined = await options.cluster.join(request.data.addresses);
      audit.append({ actor, action: "cluster.join", target, outcome: "ok", reason: `${joined}` });
      return c.json({ joined });
    } catch (err) {
      const e = toJwError(err);
      audit.append({ actor, action: "cluster.join", target, outcome: "error", reason: e.message });
      throw e;
    }
  });

  app.post(
    "/v1/run",
    bodyLimit({
      maxSize: MAX_RUN_BODY_BYTES,
      onError: () => {
        throw new JwError("frame_too_large", `run request exceeds ${MAX_RUN_BODY_BYTES} bytes`);
      },
    }),
    async (c) => {
      const text = await c.req.text();
      let body: unknown;
      try {
        body = JSON.parse(text);
      } catch (err) {
        throw new JwError("bad_json", `run request is not valid JSON: ${(err as Error).message}`);
      }
      const wanted = scriptWanted(body);
      if (wanted && options.cluster) {
        await options.cluster.ensureScript(wanted.name, wanted.version);
      }
      const run = dispatcher.start(body, c.get("operator"));
      const events = run[Symbol.asyncIterator]() as LineSource;
      return ndjson(events, () => run.close());
    },
  );

  app.get("/v1/runs/:id", async (c) => {
    const id = c.req.param("id");
    if (!Id.safeParse(id).success) {
      throw new JwError("usage", `bad command id "${id.slice(0, 64)}"`);
    }
    const wait = parseWait(c.req.query("wait"));
    const run = await dispatcher.follow(id, wait);
    if (!run) {
      throw new JwError("not_found", `command ${id} has no targets on server ${options.serverId}`);
    }
    return ndjson(run[Symbol.asyncIterator]() as LineSource, () => run.close());
  });

  app.get("/v1/stream", (c) => {
    const filter = parseStreamFilter(c.req.query());
    // One agent's live output is streamed by the server it is connected to.
    const elsewhere = filter.agent !== undefined ? ownerUrl(filter.agent) : undefined;
    if (elsewhere !== undefined) {
      const query = new URL(c.req.url).search;
      return c.redirect(`${elsewhere}/v1/stream${query}`, 307);
    }
    // A viewer that falls too far behind is disconnected rather than buffered without end.
    const channel = bus.stream(filter, { closeWhenFull: true });
    return ndjson(channel, () => channel.close());
  });

  app.get("/v1/outputs", (c) => c.json({ outputs: options.outputs?.status() ?? [] }));

  app.get("/v1/audit", (c) => {
    const limit = parseLimit(c.req.query("limit"));
    const action = c.req.query("action") || undefined;
    return c.json({ entries: audit.list({ limit, action }) });
  });

  app.post(
    "/v1/scripts",
    bodyLimit({
      maxSize: MAX_SCRIPT_BODY_BYTES,
      onError: (c) => {
        const err = new JwError(
          "frame_too_large",
          `script upload exceeds ${MAX_SCRIPT_BODY_BYTES} bytes (scripts may be at most ${MAX_SCRIPT_BYTES})`,
        );
        audit.append({
          actor: `operator:${c.get("operator")}`,
          action: "script.upload",
          outcome: "error",
          reason: `${err.code}: ${err.message}`,
        });
        throw err;
      },
    }),
    async (c) => {
      const operator = c.get("operator");
      const actor = `operator:${operator}`;
      const text = await c.req.text();
      let target: string | undefined;
      try {
        const parsed = parseScript(text);
        target = `${parsed.header.name}@${parsed.header.version}`;
        const verified = await verifySelfSigned(parsed);
        const uploaded = scripts.put(verified, operator);
        const { name, version, sha256, signer } = uploaded.script;
        audit.append({
          actor,
          action: "script.upload",
          target,
          args: { name, version, sha256, signer },
          outcome: "ok",
          reason: uploaded.created ? undefined : "already stored with the same content",
        });
        return c.json(uploaded, uploaded.created ? 201 : 200);
      } catch (err) {
        const e = toJwError(err);
        audit.append({
          actor,
          action: "script.upload",
          target,
          outcome: uploadOutcome(e.code),
          reason: `${e.code}: ${e.message}`,
        });
        throw e;
      }
    },
  );

  app.get("/v1/scripts", (c) => c.json({ scripts: scripts.list() }));

  app.get("/v1/scripts/:name", (c) => {
    const name = parseScriptName(c.req.param("name"));
    return c.json(scripts.get(name, parseScriptVersion(c.req.query("version"))));
  });

  app.delete("/v1/scripts/:name", async (c) => {
    const operator = c.get("operator");
    const actor = `operator:${operator}`;
    const name = parseScriptName(c.req.param("name"));
    const version = parseScriptVersion(c.req.query("version"));
    const target = version === undefined ? name : `${name}@${version}`;
    const args = version === undefined ? { name } : { name, version };
    let versions: number[];
    try {
      versions = scripts.delete(name, version);
    } catch (err) {
      const e = toJwError(err);
      audit.append({
        actor,
        action: "script.delete",
        target,
        args,
        outcome: "error",
        reason: `${e.code}: ${e.message}`,
      });
      throw e;
    }
    audit.append({ actor, action: "script.delete", target, args, outcome: "ok" });
    // Agents keep their own copies: tell every connected one, like an operator command.
    const run = dispatcher.start({
      target: "all",
      job: { key: "script.delete", args },
      timeoutMs: options.scriptDeleteTimeoutMs ?? SCRIPT_DELETE_TIMEOUT_MS,
    }, operator);
    const summary = await runSummary(run);
    const body: ScriptDeleted = { name, versions, run: { id: run.id, agents: summary.agents } };
    return c.json(body);
  });

  return app;
}
