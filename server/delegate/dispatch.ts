/**
 * Running a command on a target: validate the operator's request, send one `command`
 * frame per connected agent, keep it in the mailbox for offline agents this server owns,
 * hand it to the other servers of the cluster, and turn the replies into run parts
 * (run_part.ts) that operators read as streams ending with a summary of each target's
 * state.
 *
 * @module
 */
import type { Clock, TimerId } from "../../shared/clock.ts";
import type { AuditEvent, AuditLog } from "../../shared/db/mod.ts";
import { JwError, toJwError } from "../../shared/errors.ts";
import type { Logger } from "../../shared/log.ts";
import { silentLogger } from "../../shared/log.ts";
import { type Random, randomId } from "../../shared/random.ts";
import {
  type Command,
  describeIssues,
  type DispatchedEvent,
  encodeFrame,
  type JobSpec,
  parseTarget,
  type PartEvent,
  RunRequest,
  type SummaryEvent,
  type Target,
} from "../../shared/protocol/mod.ts";
import type { Letter, Mailbox } from "../agents/mailbox.ts";
import type { Registry } from "../agents/registry.ts";
import type { ReplyBus } from "./bus.ts";
import { type Run, RunPart } from "./run_part.ts";

export { RUN_QUEUE_BYTES } from "./run_part.ts";

/** How long a finished part is kept for `GET /v1/runs/ID` readers, ms. */
export const PART_RETAIN_MS = 10 * 60_000;
/** Most bytes of replies all kept parts may hold; the oldest finished parts go first. */
export const PARTS_LOG_BYTES = 64 * 1024 * 1024;
/** How often finished parts are dropped and expired mailbox letters are reported, ms. */
export const SWEEP_MS = 5_000;

export type { Run } from "./run_part.ts";

/**
 * Starts runs and delivers commands. A command's targets may be connected here, connected
 * to another server of the cluster (that server delivers them), or offline (the server that
 * owns the agent keeps the command in its mailbox until the agent connects or the command's
 * TTL runs out). Each server keeps a {@link RunPart} for the targets it handles.
 */
export interface Dispatcher {
  /**
   * Validates `body` as a `RunRequest` and starts the run on behalf of `operator`.
   * Sends are synchronous: when this returns, every command frame has been handed over.
   * The returned stream is this server's part: `dispatched` (with every target and, per
   * target handled elsewhere, its server), the replies of the targets handled here, and a
   * summary once none of them is pending, delivered or running.
   * The server's own runs (e.g. fanning out a deletion) go through here too, on behalf of
   * the operator who asked, and are audited the same way.
   * @throws JwError `invalid_message` (schema; message names the path), `usage` (target), or
   * whatever {@link DispatcherOptions.expand} throws; each audited as `command.denied`.
   */
  start(body: unknown, operator: string): Run;
  /**
   * An agent refused the command frame of run `ref` (it sent an `error` frame naming it):
   * its part of that run ends with status `error` and the agent's error.
   */
  rejected(agentId: string, ref: string, error: { code: string; message: string }): void;
  /**
   * Delivers a command another server was given (it reached us through the cluster) to the
   * agents connected here that its target selects, and keeps it in the mailbox for the
   * offline ones this server owns — after the same checks as a command given here (a refusal
   * is audited as `command.denied`, naming the server). Each send is audited as
   * `command.sent` with the operator as actor and the server it came through. The part is
   * readable with {@link Dispatcher.follow}.
   * @returns the agents it was sent to now.
   */
  deliver(command: ForwardedCommand, via: string): string[];
  /**
   * A reader of this server's part of command `id`, from its first event; waits up to
   * `waitMs` for a command that has not reached this server yet.
   * @returns undefined when there is no such part here.
   */
  follow(id: string, waitMs: number): Promise<Run | undefined>;
  /**
   * `agentId` has just been welcomed: sends what waits for it in the mailbox, oldest first.
   * Call it after the `welcome` frame is on its way (a command before it would be refused).
   */
  welcomed(agentId: string): void;
  /** Parts with targets still pending, delivered or running. */
  readonly active: number;
  /**
   * Ends every part: targets still open get status `error` with code `closed`, and each
   * reader gets its summary. Later {@link Dispatcher.start} calls throw `closed`.
   */
  close(): void;
}

/** A command as one server hands it to the others of its cluster. */
export interface ForwardedCommand {
  /** Envelope id (the run's id on the server it was given to). */
  id: string;
  /** Target expression as the operator gave it. */
  target: string;
  /** The job, as sent to agents (after expansion). */
  job: JobSpec;
  meta?: Record<string, unknown>;
  /** The operator, as audited: `operator:NAME`. */
  actor: string;
  /** How long the run waits for replies, ms. */
  timeoutMs: number;
  /** How long it may wait in a mailbox for an offline agent, ms (0 or absent: it does not). */
  ttlMs?: number;
}

/** An agent as the cluster knows it. */
export interface KnownAgent {
  id: string;
  tags: Readonly<Record<string, string>>;
  connected: boolean;
  /** The server it is connected to, or was last. */
  server: string | null;
}

/** What the dispatcher needs of the cluster. */
export interface ClusterDirectory {
  /** Every agent of the cluster this server knows of (its own and gossiped ones). */
  agents(): Iterable<KnownAgent>;
  /** The server that owns `agentId` by placement now; its mailbox keeps commands for it. */
  owner(agentId: string): string | undefined;
  /** A server's base URL. */
  url(serverId: string): string | undefined;
}

/** Options for {@link createDispatcher}. */
export interface DispatcherOptions {
  /** This server's id. Default "local". */
  serverId?: string;
  registry: Registry;
  bus: ReplyBus;
  audit: AuditLog;
  clock: Clock;
  random: Random;
  logger?: Logger;
  /**
   * Runs `fn` after the current turn of the event loop. The fan-out's audit records are
   * written through it, so the runtime puts the command frames on the wire before a
   * transaction of thousands of rows runs. Default: at once (synchronously).
   */
  defer?: (fn: () => void) => void;
  /**
   * Rewrites a validated job before it is sent (e.g. fills in data the server holds), or
   * throws a JwError to refuse the run. The audit records keep the args the operator sent.
   * Called synchronously once per run. Default: the job as given.
   */
  expand?: (job: JobSpec) => JobSpec;
  /**
   * Hands every started command to the other servers of the cluster (their agents get it
   * through {@link Dispatcher.deliver}) and returns their ids. Default: none (a lone
   * server).
   */
  forward?: (command: ForwardedCommand) => string[];
  /** Commands for offline agents. Without it, offline targets are reported and not kept. */
  mailbox?: Mailbox;
  /**
   * Agents this server has seen and that are not connected here, for offline targets: all of
   * them, or only `id` when given. Default: none.
   */
  known?: (id?: string) => Iterable<KnownAgent>;
  /** The cluster, when there is one. */
  cluster?: ClusterDirectory;
}

type Parsed = ReturnType<typeof RunRequest.parse>;

/** Whether `target` selects `agent`. */
export function selects(
  target: Target,
  agent: { id: string; tags: Readonly<Record<string, string>> },
): boolean {
  switch (target.kind) {
    case "all":
      return true;
    case "agent":
      return agent.id === target.id;
    case "tag":
      return Object.hasOwn(agent.tags, target.name) && agent.tags[target.name] === target.value;
  }
}

/** Where the targets of a command are, as this server sees them. */
interface Resolved {
  /** Connected here. */
  live: string[];
  /** Offline, and this server owns them (their commands wait here). */
  offline: string[];
  /** Handled by another server: connected there, or offline and owned there. */
  elsewhere: Map<string, string>;
}

class DispatcherImpl implements Dispatcher {
  readonly #options: DispatcherOptions;
  readonly #serverId: string;
  readonly #logger: Logger;
  readonly #parts = new Map<string, RunPart>();
  /** Parts in which an agent is delivered or running, for disconnects. */
  readonly #openByAgent = new Map<string, Set<RunPart>>();
  readonly #waiters = new Map<string, Set<(part: RunPart) => void>>();
  readonly #unwatch: (() => void)[] = [];
  #sweep?: TimerId;
  #closed = false;

  constructor(options: DispatcherOptions) {
    this.#options = options;
    this.#serverId = options.serverId ?? "local";
    this.#logger = options.logger ?? silentLogger;
    this.#unwatch.push(options.registry.onDisconnect((agentId) => {
      for (const part of [...(this.#openByAgent.get(agentId) ?? [])]) {
        part.settle(agentId, {
          status: "error",
          error: { code: "closed", message: "agent disconnected before the run finished" },
        });
      }
    }));
    const sweep = () => {
      this.#sweep = undefined;
      if (this.#closed) return;
      try {
        this.#expireMail();
        this.#dropOldParts();
      } catch (err) {
        this.#logger.error("run sweep failed", { error: String(err) });
      }
      this.#sweep = options.clock.setTimeout(sweep, SWEEP_MS);
    };
    this.#sweep = options.clock.setTimeout(sweep, SWEEP_MS);
  }

  get active(): number {
    let n = 0;
    for (const part of this.#parts.values()) if (!part.complete) n++;
    return n;
  }

  start(body: unknown, operator: string): Run {
    const actor = `operator:${operator}`;
    if (this.#closed) throw new JwError("closed", "server is shutting down");
    const { request, target } = this.#validate(body, actor);
    const job = this.#expand(request.job, body, actor);
    const { audit, random } = this.#options;
    const id = randomId(random);
    const where = this.#resolve(target, true);
    const owners = Object.fromEntries(where.elsewhere);
    const targets = [...where.live, ...where.offline, ...where.elsewhere.keys()].sort();
    const dispatched: DispatchedEvent = {
      type: "dispatched",
      id,
      target: request.target,
      agents: targets,
    };
    if (where.elsewhere.size > 0) {
      dispatched.owners = owners;
      const urls: Record<string, string> = {};
      for (const server of new Set(where.elsewhere.values())) {
        const url = this.#options.cluster?.url(server);
        if (url !== undefined) urls[server] = url;
      }
      dispatched.urls = urls;
    }
    const part = this.#newPart(id, this.#serverId, dispatched, request.timeoutMs);
    const run = part.read(false);
    if (targets.length === 0) {
      audit.append({
        actor,
        action: "command.sent",
        target: request.target,
        key: request.job.key,
        args: request.job.args,
        outcome: "error",
        reason: target.kind === "agent" ? "not_connected" : "no agent matched the target",
      });
    }
    if (target.kind === "agent" && targets.length === 0) {
      part.settled(target.id, {
        status: "not_connected",
        error: { code: "not_connected", message: `agent "${target.id}" is not connected` },
        server: this.#serverId,
      });
    }
    const frame: Command = { v: 1, id, type: "command", job, meta: request.meta };
    if (frame.meta === undefined) delete frame.meta;
    const encoded = encodeFrame(frame);
    const sent = { actor, key: request.job.key, args: request.job.args };
    this.#fanOut(part, where.live, encoded, sent);
    this.#enqueue(part, where.offline, encoded, sent, request.ttlMs);
    if (this.#options.forward) {
      try {
        // Nobody has read `dispatched` yet: start() is synchronous.
        dispatched.servers = this.#options.forward({
          id,
          target: request.target,
          job,
          ...(request.meta === undefined ? {} : { meta: request.meta }),
          actor,
          timeoutMs: request.timeoutMs,
          ttlMs: request.ttlMs,
        });
      } catch (err) {
        this.#logger.error("cannot forward a command to the cluster", { error: String(err) });
      }
    }
    part.check();
    return run;
  }

  deliver(command: ForwardedCommand, via: string): string[] {
    if (this.#closed || this.#parts.has(command.id)) return [];
    // The same checks as a command given here: schema, target; refusals audited.
    let target: Target;
    try {
      ({ target } = this.#validate(
        {
          target: command.target,
          job: command.job,
          ...(command.meta === undefined ? {} : { meta: command.meta }),
        },
        command.actor,
        via,
      ));
    } catch (err) {
      this.#logger.warn("refused a command forwarded by another server", {
        from: via,
        error: String(err),
      });
      return [];
    }
    const where = this.#resolve(target, false);
    const head: PartEvent = {
      type: "part",
      id: command.id,
      server: this.#serverId,
      origin: via,
      agents: [...where.live, ...where.offline].sort(),
    };
    const part = this.#newPart(command.id, via, head, command.timeoutMs);
    const frame: Command = {
      v: 1,
      id: command.id,
      type: "command",
      job: command.job,
      meta: command.meta,
    };
    if (frame.meta === undefined) delete frame.meta;
    const encoded = encodeFrame(frame);
    const sent = { actor: command.actor, key: command.job.key, args: command.job.args };
    const delivered = this.#fanOut(part, where.live, encoded, sent, `via server:${via}`);
    this.#enqueue(part, where.offline, encoded, sent, command.ttlMs ?? 0, via);
    part.check();
    return delivered;
  }

  follow(id: string, waitMs: number): Promise<Run | undefined> {
    const part = this.#parts.get(id);
    if (part) return Promise.resolve(part.read(true));
    if (this.#closed || waitMs <= 0) return Promise.resolve(undefined);
    const { clock } = this.#options;
    return new Promise((resolve) => {
      let waiters = this.#waiters.get(id);
      if (!waiters) this.#waiters.set(id, waiters = new Set());
      const timer = clock.setTimeout(() => {
        waiters.delete(found);
        if (waiters.size === 0) this.#waiters.delete(id);
        resolve(undefined);
      }, waitMs);
      const found = (p: RunPart) => {
        clock.clearTimeout(timer);
        resolve(p.read(true));
      };
      waiters.add(found);
    });
  }

  rejected(agentId: string, ref: string, error: { code: string; message: string }): void {
    this.#parts.get(ref)?.settle(agentId, {
      status: "error",
      error: { code: error.code, message: error.message },
    });
  }

  close(): void {
    this.#closed = true;
    if (this.#sweep !== undefined) this.#options.clock.clearTimeout(this.#sweep);
    for (const part of [...this.#parts.values()]) {
      part.settleAll({
        status: "error",
        error: { code: "closed", message: "server shut down before the run finished" },
      });
      part.dispose();
    }
    this.#parts.clear();
    for (const unwatch of this.#unwatch) unwatch();
  }

  /** Where `target`'s agents are. `origin`: this server was given the command. */
  #resolve(target: Target, origin: boolean): Resolved {
    const { registry, known, cluster } = this.#options;
    const live = registry.resolve(target);
    const out: Resolved = { live, offline: [], elsewhere: new Map() };
    if (!known && !cluster) return out;
    const liveSet = new Set(live);
    // Each agent once: connected wins over not, then the local view over gossip.
    const seen = new Map<string, KnownAgent>();
    const consider = (a: KnownAgent) => {
      if (liveSet.has(a.id) || !selects(target, a)) return;
      const held = seen.get(a.id);
      if (!held || (a.connected && !held.connected)) seen.set(a.id, a);
    };
    if (target.kind === "agent") {
      // One agent: looked up, not searched for among all.
      for (const a of known?.(target.id) ?? []) if (a.id === target.id) consider(a);
      for (const a of cluster?.agents() ?? []) if (a.id === target.id) consider(a);
    } else {
      for (const a of known?.() ?? []) consider(a);
      for (const a of cluster?.agents() ?? []) consider(a);
    }
    for (const a of seen.values()) {
      if (a.connected && a.server !== null && a.server !== this.#serverId) {
        if (origin) out.elsewhere.set(a.id, a.server);
        continue;
      }
      const owner = cluster?.owner(a.id) ?? this.#serverId;
      if (owner === this.#serverId) out.offline.push(a.id);
      else if (origin) out.elsewhere.set(a.id, owner);
    }
    out.offline.sort();
    return out;
  }

  #newPart(
    id: string,
    origin: string,
    head: DispatchedEvent | PartEvent,
    timeoutMs: number,
  ): RunPart {
    const part = new RunPart({
      id,
      server: this.#serverId,
      origin,
      head,
      clock: this.#options.clock,
      timeoutMs,
      listen: () => this.#options.bus.subscribe({ id }, (reply) => part.reply(reply)),
    });
    part.onOpen = (agent, open) => {
      let set = this.#openByAgent.get(agent);
      if (open) {
        if (!set) this.#openByAgent.set(agent, set = new Set());
        set.add(part);
      } else if (set?.delete(part) && set.size === 0) this.#openByAgent.delete(agent);
    };
    this.#parts.set(id, part);
    const waiters = this.#waiters.get(id);
    if (waiters) {
      this.#waiters.delete(id);
      // After the caller has added the targets.
      queueMicrotask(() => {
        for (const w of waiters) w(part);
      });
    }
    return part;
  }

  /**
   * Sends the command frame (encoded once) to each agent and audits every send as
   * `command.sent` in one deferred batch.
   * @returns the agents it was sent to.
   */
  #fanOut(
    part: RunPart,
    agents: readonly string[],
    encoded: string,
    sent: { actor: string; key: string; args: unknown },
    okReason?: string,
  ): string[] {
    const base = { ...sent, action: "command.sent" };
    const records: AuditEvent[] = [];
    const delivered: string[] = [];
    for (const agentId of agents) part.pending(agentId);
    for (const agentId of agents) {
      try {
        const agent = this.#options.registry.get(agentId);
        if (!agent) throw new JwError("closed", "agent disconnected before the command was sent");
        agent.sendEncoded(encoded);
        part.delivered(agentId);
        delivered.push(agentId);
        records.push({
          ...base,
          target: agentId,
          outcome: "ok",
          ...(okReason === undefined ? {} : { reason: okReason }),
        });
      } catch (err) {
        const e = toJwError(err);
        records.push({ ...base, target: agentId, outcome: "error", reason: e.message });
        this.#logger.warn("command send failed", { agent: agentId, error: e.message });
        part.settle(agentId, { status: "error", error: { code: "closed", message: e.message } });
      }
    }
    this.#audit(records);
    return delivered;
  }

  /** Keeps the command for offline `agents` in the mailbox (or just reports them, TTL 0). */
  #enqueue(
    part: RunPart,
    agents: readonly string[],
    encoded: string,
    sent: { actor: string; key: string; args: unknown },
    ttlMs: number,
    via?: string,
  ): void {
    if (agents.length === 0) return;
    const mailbox = this.#options.mailbox;
    const now = this.#options.clock.now();
    const records: AuditEvent[] = [];
    for (const agent of agents) {
      if (!mailbox || ttlMs <= 0) {
        part.offline(agent);
        continue;
      }
      const until = now + ttlMs;
      mailbox.put({
        agent,
        command: part.id,
        frame: encoded,
        actor: sent.actor,
        key: sent.key,
        created: now,
        expires: until,
      });
      part.offline(agent, until);
      records.push({
        ...sent,
        action: "command.queued",
        target: agent,
        outcome: "ok",
        reason: `agent offline; kept until ${new Date(until).toISOString()}` +
          (via === undefined ? "" : ` (via server:${via})`),
      });
    }
    this.#audit(records);
  }

  welcomed(agentId: string): void {
    const { mailbox, registry, clock } = this.#options;
    if (!mailbox || this.#closed) return;
    let letters: Letter[];
    try {
      letters = mailbox.take(agentId, clock.now());
    } catch (err) {
      this.#logger.error("cannot read the mailbox", { agent: agentId, error: String(err) });
      return;
    }
    if (letters.length === 0) return;
    const agent = registry.get(agentId);
    const records: AuditEvent[] = [];
    for (const letter of letters) {
      const part = this.#parts.get(letter.command);
      const base = {
        actor: letter.actor,
        action: "command.sent",
        target: agentId,
        key: letter.key,
      };
      try {
        if (!agent) throw new JwError("closed", "agent disconnected before its mail was sent");
        agent.sendEncoded(letter.frame);
        part?.delivered(agentId);
        records.push({ ...base, outcome: "ok", reason: "from the mailbox" });
      } catch (err) {
        // Back in the box: it goes out at the next connect, or expires.
        mailbox.put(letter);
        records.push({ ...base, outcome: "error", reason: toJwError(err).message });
      }
    }
    this.#audit(records);
    this.#logger.info("delivered queued commands", { agent: agentId, commands: letters.length });
  }

  /** Reports mailbox letters whose TTL ran out. */
  #expireMail(): void {
    const mailbox = this.#options.mailbox;
    if (!mailbox) return;
    const expired = mailbox.expire(this.#options.clock.now());
    if (expired.length === 0) return;
    const records: AuditEvent[] = [];
    for (const letter of expired) {
      this.#parts.get(letter.command)?.expired(letter.agent);
      records.push({
        actor: letter.actor,
        action: "command.expired",
        target: letter.agent,
        key: letter.key,
        outcome: "error",
        reason: `the agent did not connect before ${new Date(letter.expires).toISOString()}`,
      });
    }
    this.#options.audit.appendMany(records);
    this.#logger.info("commands expired in the mailbox", { commands: expired.length });
  }

  /** Drops finished parts nobody reads after {@link PART_RETAIN_MS}, and beyond the byte budget. */
  #dropOldParts(): void {
    const now = this.#options.clock.now();
    const done = [...this.#parts.values()]
      .filter((p) => p.complete && !p.waiting)
      .sort((a, b) => a.touched - b.touched);
    let bytes = 0;
    for (const p of this.#parts.values()) bytes += p.logBytes;
    for (const p of done) {
      if (now - p.touched < PART_RETAIN_MS && bytes <= PARTS_LOG_BYTES) break;
      bytes -= p.logBytes;
      p.dispose();
      this.#parts.delete(p.id);
    }
  }

  #audit(records: AuditEvent[]): void {
    if (records.length === 0) return;
    const audit = this.#options.audit;
    (this.#options.defer ?? ((fn) => fn()))(() => audit.appendMany(records));
  }

  /** Audits `command.denied` for the request `body` and throws `err`. */
  #deny(body: unknown, actor: string, err: JwError, via?: string): never {
    const raw = body && typeof body === "object" ? body as Record<string, unknown> : {};
    const job = raw.job && typeof raw.job === "object" ? raw.job as Record<string, unknown> : {};
    this.#options.audit.append({
      actor,
      action: "command.denied",
      target: typeof raw.target === "string" ? raw.target.slice(0, 256) : undefined,
      key: typeof job.key === "string" ? job.key.slice(0, 128) : undefined,
      outcome: "denied",
      reason: `${err.code}: ${err.message}${via === undefined ? "" : ` (via server:${via})`}`,
    });
    throw err;
  }

  #expand(job: JobSpec, body: unknown, actor: string): JobSpec {
    const expand = this.#options.expand;
    if (!expand) return job;
    try {
      return expand(job);
    } catch (err) {
      return this.#deny(body, actor, toJwError(err));
    }
  }

  #validate(body: unknown, actor: string, via?: string): { request: Parsed; target: Target } {
    const deny = (err: JwError): never => this.#deny(body, actor, err, via);
    const parsed = RunRequest.safeParse(body);
    if (!parsed.success) {
      return deny(
        new JwError("invalid_message", `bad run request: ${describeIssues(parsed.error)}`),
      );
    }
    try {
      return { request: parsed.data, target: parseTarget(parsed.data.target) };
    } catch (err) {
      return deny(toJwError(err));
    }
  }
}

/**
 * Reads `run` to its end, dropping the replies, and resolves to its summary: how a run the
 * server started for itself (not streamed to anyone) ended on each agent.
 * @throws JwError `closed` when the run was closed before its summary.
 */
export async function runSummary(run: Run): Promise<SummaryEvent> {
  for await (const event of run) {
    if (event.type === "summary") return event;
  }
  throw new JwError("closed", `run ${run.id} ended without a summary`);
}

/** Creates a {@link Dispatcher}. */
export function createDispatcher(options: DispatcherOptions): Dispatcher {
  return new DispatcherImpl(options);
}
