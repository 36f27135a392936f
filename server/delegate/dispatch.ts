/**
 * Running a command on a target: validate the operator's request, send one `command`
 * frame per connected agent, and turn the replies into a stream of run events that ends
 * with a summary of how each agent's part ended.
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
  type AgentOutcome,
  type Command,
  describeIssues,
  type DispatchedEvent,
  encodeFrame,
  type JobSpec,
  parseTarget,
  type RelayedReply,
  type RunEvent,
  RunRequest,
  type SummaryEvent,
  type Target,
} from "../../shared/protocol/mod.ts";
import type { Registry } from "../agents/registry.ts";
import { type ReplyBus, replyWeight } from "./bus.ts";

/** Most bytes of replies a run holds for a reader that does not keep up; oldest dropped. */
export const RUN_QUEUE_BYTES = 128 * 1024 * 1024;
import { type Channel, createChannel } from "./channel.ts";

/**
 * One command in flight. Iterate it for the events: one `dispatched`, the replies for its
 * envelope id (each with `agent`), then one `summary`, after which iteration ends.
 * Events are queued without bound until read (a run's lifetime bounds them).
 */
export interface Run extends AsyncIterable<RunEvent> {
  /** The envelope id of the command. */
  readonly id: string;
  /** The agents the command was sent to. */
  readonly agents: readonly string[];
  /**
   * Stops the run early (the reader went away): unsubscribes, cancels the timeout and ends
   * iteration without a summary. Idempotent.
   */
  close(): void;
}

/**
 * Starts runs. Each run subscribes to the bus before its command is sent, so no reply can
 * be missed.
 */
export interface Dispatcher {
  /**
   * Validates `body` as a `RunRequest` and starts the run on behalf of `operator`.
   * Sends are synchronous: when this returns, every command frame has been handed over.
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
   * agents connected here that its target selects, after the same checks as a command given
   * here (a refusal is audited as `command.denied`, naming the server), and audits each
   * send as `command.sent` with the operator as actor and the server it came through. Replies go to this server's
   * reply bus (live streams); no run is kept for them.
   * @returns the agents it was sent to.
   */
  deliver(command: ForwardedCommand, via: string): string[];
  /** Runs still waiting for agents. */
  readonly active: number;
  /**
   * Ends every active run: agents still pending get status `error` with code `closed`,
   * and each run emits its summary. Later {@link Dispatcher.start} calls throw `closed`.
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
}

/** Options for {@link createDispatcher}. */
export interface DispatcherOptions {
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
}

type Parsed = ReturnType<typeof RunRequest.parse>;

class RunImpl implements Run {
  readonly id: string;
  readonly agents: readonly string[];
  /** Bounded by bytes so a flood of replies to a stalled reader cannot exhaust memory. */
  readonly #events: Channel<RunEvent> = createChannel<RunEvent>({
    maxBytes: RUN_QUEUE_BYTES,
    weigh: (e) => (e.type === "dispatched" || e.type === "summary" ? 1024 : replyWeight(e)),
  });
  /** Outcome per agent, in the order the summary lists them. */
  readonly #outcomes = new Map<string, AgentOutcome | undefined>();
  #pending = 0;
  #cleanup: (() => void)[] = [];
  #finished = false;

  constructor(id: string, agents: string[]) {
    this.id = id;
    this.agents = agents;
  }

  /** Adds an agent whose outcome is awaited, or already known. */
  expect(agent: string, outcome?: AgentOutcome): void {
    this.#outcomes.set(agent, outcome);
    if (!outcome) this.#pending++;
  }

  onCleanup(fn: () => void): void {
    this.#cleanup.push(fn);
  }

  emit(event: RunEvent): void {
    this.#events.push(event);
  }

  /** A reply for this envelope id from the bus. */
  reply(reply: RelayedReply): void {
    if (this.#finished || !this.#outcomes.has(reply.agent)) return;
    this.#events.push(reply);
    if (reply.type === "output" && reply.done) {
      const outcome: AgentOutcome = {
        status: reply.error ? "error" : "ok",
        error: reply.error ?? null,
      };
      if (reply.exitCode !== undefined) outcome.exitCode = reply.exitCode;
      if (reply.durationMs !== undefined) outcome.durationMs = reply.durationMs;
      this.settle(reply.agent, outcome);
    }
  }

  /** Records `agent`'s outcome if it is still pending, and finishes when none are. */
  settle(agent: string, outcome: AgentOutcome): void {
    if (this.#finished || !this.#outcomes.has(agent) || this.#outcomes.get(agent)) return;
    this.#outcomes.set(agent, outcome);
    this.#pending--;
    this.finishIfDone();
  }

  /** Settles every pending agent with `outcome` and finishes. */
  settleAll(outcome: AgentOutcome): void {
    for (const [agent, known] of this.#outcomes) {
      if (!known) this.settle(agent, { ...outcome });
    }
    this.finishIfDone();
  }

  finishIfDone(): void {
    if (this.#finished || this.#pending > 0) return;
    this.#finished = true;
    this.#runCleanup();
    this.#events.push({
      type: "summary",
      id: this.id,
      agents: Object.fromEntries(this.#outcomes) as Record<string, AgentOutcome>,
    });
    this.#events.close();
  }

  get finished(): boolean {
    return this.#finished;
  }

  close(): void {
    this.#finished = true;
    this.#runCleanup();
    this.#events.close();
  }

  [Symbol.asyncIterator](): AsyncIterator<RunEvent> {
    return this.#events;
  }

  #runCleanup(): void {
    const fns = this.#cleanup;
    this.#cleanup = [];
    for (const fn of fns) fn();
  }
}

class DispatcherImpl implements Dispatcher {
  readonly #options: DispatcherOptions;
  readonly #logger: Logger;
  readonly #runs = new Set<RunImpl>();
  readonly #unwatch: () => void;
  #closed = false;

  constructor(options: DispatcherOptions) {
    this.#options = options;
    this.#logger = options.logger ?? silentLogger;
    this.#unwatch = options.registry.onDisconnect((agentId) => {
      for (const run of [...this.#runs]) {
        run.settle(agentId, {
          status: "error",
          error: { code: "closed", message: "agent disconnected before the run finished" },
        });
      }
    });
  }

  get active(): number {
    return this.#runs.size;
  }

  start(body: unknown, operator: string): Run {
    const actor = `operator:${operator}`;
    if (this.#closed) throw new JwError("closed", "server is shutting down");
    const { request, target } = this.#validate(body, actor);
    const job = this.#expand(request.job, body, actor);
    const { registry, bus, audit, clock, random } = this.#options;
    const id = randomId(random);
    const agents = registry.resolve(target);
    const run = new RunImpl(id, agents);
    this.#runs.add(run);
    run.onCleanup(() => this.#runs.delete(run));
    run.onCleanup(bus.subscribe({ id }, (reply) => run.reply(reply)));
    const timer: TimerId = clock.setTimeout(() => {
      run.settleAll({
        status: "timeout",
        error: { code: "timeout", message: `no final output within ${request.timeoutMs}ms` },
      });
    }, request.timeoutMs);
    run.onCleanup(() => clock.clearTimeout(timer));

    const dispatched: DispatchedEvent = {
      type: "dispatched",
      id,
      target: request.target,
      agents: [...agents],
    };
    run.emit(dispatched);
    if (agents.length === 0) {
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
    if (target.kind === "agent" && agents.length === 0) {
      run.expect(target.id, {
        status: "not_connected",
        error: { code: "not_connected", message: `agent "${target.id}" is not connected` },
      });
    }
    for (const agentId of agents) run.expect(agentId);

    this.#fanOut(agents, { v: 1, id, type: "command", job, meta: request.meta }, {
      actor,
      key: request.job.key,
      args: request.job.args,
    }, (agentId, e) => {
      this.#logger.warn("command send failed", { agent: agentId, error: e.message });
      run.settle(agentId, { status: "error", error: { code: "closed", message: e.message } });
    });
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
        });
      } catch (err) {
        this.#logger.error("cannot forward a command to the cluster", { error: String(err) });
      }
    }
    run.finishIfDone();
    return run;
  }

  deliver(command: ForwardedCommand, via: string): string[] {
    if (this.#closed) return [];
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
    const { registry } = this.#options;
    const agents = registry.resolve(target);
    if (agents.length === 0) return [];
    return this.#fanOut(
      agents,
      { v: 1, id: command.id, type: "command", job: command.job, meta: command.meta },
      { actor: command.actor, key: command.job.key, args: command.job.args },
      () => {},
      `via server:${via}`,
    );
  }

  /**
   * Sends one command frame (encoded once) to each agent and audits every send as
   * `command.sent` in one deferred batch. `onFail` hears of each agent it could not reach.
   * @returns the agents it was sent to.
   */
  #fanOut(
    agents: readonly string[],
    frame: Command,
    sent: { actor: string; key: string; args: unknown },
    onFail: (agentId: string, err: JwError) => void,
    okReason?: string,
  ): string[] {
    if (frame.meta === undefined) delete frame.meta;
    const encoded = encodeFrame(frame);
    const base = { ...sent, action: "command.sent" };
    const records: AuditEvent[] = [];
    const delivered: string[] = [];
    for (const agentId of agents) {
      try {
        const agent = this.#options.registry.get(agentId);
        if (!agent) throw new JwError("closed", "agent disconnected before the command was sent");
        agent.sendEncoded(encoded);
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
        onFail(agentId, e);
      }
    }
    const audit = this.#options.audit;
    (this.#options.defer ?? ((fn) => fn()))(() => audit.appendMany(records));
    return delivered;
  }

  rejected(agentId: string, ref: string, error: { code: string; message: string }): void {
    for (const run of this.#runs) {
      if (run.id === ref) {
        run.settle(agentId, {
          status: "error",
          error: { code: error.code, message: error.message },
        });
      }
    }
  }

  close(): void {
    this.#closed = true;
    for (const run of [...this.#runs]) {
      run.settleAll({
        status: "error",
        error: { code: "closed", message: "server shut down before the run finished" },
      });
    }
    this.#unwatch();
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
