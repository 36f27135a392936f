/**
 * One server's part of a command: the target agents this server handles (connected here, or
 * offline with the command in this server's mailbox), each with its state, and the events
 * for them — the head (`dispatched` on the server the command was given to, `part` on the
 * others), the replies, and a summary whenever no target is still pending, delivered or
 * running.
 *
 * Readers subscribe: a new reader gets the events so far (replayed from a bounded log), then
 * live ones, and its stream ends with the summary. A target that comes back later (an
 * offline agent reconnecting) reopens the part for later readers.
 *
 * @module
 */
import type { Clock, TimerId } from "../../shared/clock.ts";
import type {
  AgentOutcome,
  DispatchedEvent,
  PartEvent,
  RelayedReply,
  RunEvent,
  SummaryEvent,
  TargetState,
} from "../../shared/protocol/mod.ts";
import { replyWeight } from "./bus.ts";
import { type Channel, createChannel } from "./channel.ts";

/** Most bytes of replies a reader that does not keep up may have queued; oldest dropped. */
export const RUN_QUEUE_BYTES = 128 * 1024 * 1024;
/** Most bytes of replies a part keeps for readers that come later; later replies are not kept. */
export const PART_LOG_BYTES = 4 * 1024 * 1024;

/**
 * A stream of one part's events: the head, the replies, then a summary, after which
 * iteration ends.
 */
export interface Run extends AsyncIterable<RunEvent> {
  /** The envelope id of the command. */
  readonly id: string;
  /** The target agents this server handles. */
  readonly agents: readonly string[];
  /** Stops reading early: ends iteration without a summary. Idempotent. */
  close(): void;
}

interface Target {
  state: TargetState;
  outcome?: AgentOutcome;
  /** When a delivered target times out (epoch ms). */
  deadline?: number;
}

const OPEN: ReadonlySet<TargetState> = new Set(["pending", "delivered", "running"]);

/** See the module doc. */
export class RunPart {
  readonly id: string;
  readonly server: string;
  readonly origin: string;
  readonly #head: DispatchedEvent | PartEvent;
  readonly #clock: Clock;
  readonly #timeoutMs: number;
  readonly #targets = new Map<string, Target>();
  readonly #log: RelayedReply[] = [];
  #logBytes = 0;
  /** Replies not kept for later readers because the log was full. */
  unlogged = 0;
  readonly #readers = new Set<Channel<RunEvent>>();
  #open = 0;
  readonly #listen?: () => () => void;
  #unlisten?: () => void;
  #timer?: TimerId;
  #timerAt = Infinity;
  /** Last change (epoch ms), for retention. */
  touched: number;
  /** Called when a target opens (delivered) or closes, to keep the dispatcher's index. */
  onOpen?: (agent: string, open: boolean) => void;

  constructor(options: {
    id: string;
    server: string;
    origin: string;
    head: DispatchedEvent | PartEvent;
    clock: Clock;
    timeoutMs: number;
    /** Starts delivering this command's replies to {@link RunPart.reply}; returns the stop. */
    listen?: () => () => void;
  }) {
    this.#listen = options.listen;
    this.id = options.id;
    this.server = options.server;
    this.origin = options.origin;
    this.#head = options.head;
    this.#clock = options.clock;
    this.#timeoutMs = options.timeoutMs;
    this.touched = options.clock.now();
  }

  /** Target agents, in the order added. */
  get agents(): string[] {
    return [...this.#targets.keys()];
  }

  /** True when no target is pending, delivered or running. */
  get complete(): boolean {
    return this.#open === 0;
  }

  /** True while some target waits in a mailbox. */
  get waiting(): boolean {
    for (const t of this.#targets.values()) if (t.state === "offline") return true;
    return false;
  }

  /** Bytes of replies kept for later readers. */
  get logBytes(): number {
    return this.#logBytes;
  }

  has(agent: string): boolean {
    return this.#targets.has(agent);
  }

  state(agent: string): TargetState | undefined {
    return this.#targets.get(agent)?.state;
  }

  /** Adds a target about to be sent the command. */
  pending(agent: string): void {
    this.#set(agent, { state: "pending" });
  }

  /** The command frame went out to `agent` now: it times out after the run's timeout. */
  delivered(agent: string): void {
    const deadline = this.#clock.now() + this.#timeoutMs;
    this.#set(agent, { state: "delivered", deadline });
    this.#armTimer(deadline);
  }

  /** `agent` is offline; the command waits in the mailbox until `until` (absent: it does not). */
  offline(agent: string, until?: number): void {
    const outcome: AgentOutcome = {
      status: "offline",
      error: {
        code: "not_connected",
        message: until === undefined
          ? `agent "${agent}" is not connected`
          : `agent "${agent}" is offline; the command waits in the mailbox of ${this.server}`,
      },
      state: "offline",
      server: this.server,
    };
    if (until !== undefined) outcome.until = until;
    this.#set(agent, { state: "offline", outcome });
  }

  /** The mailbox time of `agent` ran out. */
  expired(agent: string): void {
    if (this.#targets.get(agent)?.state !== "offline") return;
    this.#set(agent, {
      state: "expired",
      outcome: {
        status: "expired",
        error: { code: "expired", message: "the agent did not come back before the command's TTL" },
        state: "expired",
        server: this.server,
      },
    });
    this.#maybeComplete();
  }

  /** A target with a known outcome from the start (e.g. an unknown agent id). */
  settled(agent: string, outcome: AgentOutcome): void {
    this.#set(agent, { state: "error", outcome: { ...outcome, state: "error" } });
  }

  /** A reply for this command from the bus. */
  reply(reply: RelayedReply): void {
    const t = this.#targets.get(reply.agent);
    if (!t) return;
    this.touched = this.#clock.now();
    if (t.state === "delivered") t.state = "running";
    const weight = replyWeight(reply);
    if (this.#logBytes + weight <= PART_LOG_BYTES) {
      this.#log.push(reply);
      this.#logBytes += weight;
    } else this.unlogged++;
    for (const r of this.#readers) r.push(reply);
    if (reply.type === "output" && reply.done && OPEN.has(t.state)) {
      const outcome: AgentOutcome = {
        status: reply.error ? "error" : "ok",
        error: reply.error ?? null,
      };
      if (reply.exitCode !== undefined) outcome.exitCode = reply.exitCode;
      if (reply.durationMs !== undefined) outcome.durationMs = reply.durationMs;
      this.settle(reply.agent, outcome);
    }
  }

  /** Ends `agent`'s part with `outcome` if it is still open. */
  settle(agent: string, outcome: AgentOutcome): void {
    const t = this.#targets.get(agent);
    if (!t || !OPEN.has(t.state)) return;
    const state: TargetState = outcome.status === "ok" ? "done" : "error";
    this.#set(agent, { state, outcome: { ...outcome, state } });
    this.#maybeComplete();
  }

  /** Ends every open target with `outcome` (server closing). */
  settleAll(outcome: AgentOutcome): void {
    for (const [agent, t] of this.#targets) if (OPEN.has(t.state)) this.settle(agent, outcome);
    this.#maybeComplete();
  }

  /** Finishes the part if nothing is open (call after adding the first targets). */
  check(): void {
    this.#maybeComplete();
  }

  /** The summary of every target as it stands. */
  summary(): SummaryEvent {
    const agents: Record<string, AgentOutcome> = {};
    for (const [agent, t] of this.#targets) {
      agents[agent] = t.outcome ?? {
        status: "error",
        error: { code: "pending", message: `still ${t.state}` },
        state: t.state,
        server: this.server,
      };
    }
    return { type: "summary", id: this.id, agents };
  }

  /**
   * A reader of this part. `replay` gives it the events so far (a reader that subscribes
   * before anything happened needs none). A complete part gives a reader its summary at once.
   */
  read(replay: boolean): Run {
    const channel = createChannel<RunEvent>({
      maxBytes: RUN_QUEUE_BYTES,
      weigh: (e) =>
        (e.type === "dispatched" || e.type === "summary" || e.type === "part")
          ? 1024
          : replyWeight(e),
      onClose: () => this.#readers.delete(channel),
    });
    channel.push(this.#head);
    if (replay) { for (const r of this.#log) channel.push(r); }
    if (replay && this.complete) {
      channel.push(this.summary());
      channel.close();
    } else this.#readers.add(channel);
    const agents = () => this.agents;
    return {
      id: this.id,
      get agents() {
        return agents();
      },
      close: () => channel.close(),
      [Symbol.asyncIterator]: () => channel,
    };
  }

  /** Stops the timer and ends every reader without a summary. */
  dispose(): void {
    this.#unlisten?.();
    this.#unlisten = undefined;
    if (this.#timer !== undefined) this.#clock.clearTimeout(this.#timer);
    this.#timer = undefined;
    for (const r of [...this.#readers]) r.close();
    this.#readers.clear();
  }

  #set(agent: string, next: Target): void {
    const before = this.#targets.get(agent);
    const wasOpen = before !== undefined && OPEN.has(before.state);
    const isOpen = OPEN.has(next.state);
    this.#targets.set(agent, next);
    this.#open += (isOpen ? 1 : 0) - (wasOpen ? 1 : 0);
    this.touched = this.#clock.now();
    // Replies are listened for only while some target may still send them.
    if (this.#open > 0 && !this.#unlisten && this.#listen) this.#unlisten = this.#listen();
    if (this.#open === 0 && this.#unlisten) {
      this.#unlisten();
      this.#unlisten = undefined;
    }
    if (wasOpen !== isOpen) this.onOpen?.(agent, isOpen);
  }

  #maybeComplete(): void {
    if (this.#open > 0) return;
    if (this.#timer !== undefined) {
      this.#clock.clearTimeout(this.#timer);
      this.#timer = undefined;
      this.#timerAt = Infinity;
    }
    if (this.#readers.size === 0) return;
    const summary = this.summary();
    for (const r of [...this.#readers]) {
      r.push(summary);
      r.close();
    }
    this.#readers.clear();
  }

  #armTimer(deadline: number): void {
    if (deadline >= this.#timerAt) return;
    if (this.#timer !== undefined) this.#clock.clearTimeout(this.#timer);
    this.#timerAt = deadline;
    this.#timer = this.#clock.setTimeout(
      () => this.#onTimer(),
      Math.max(0, deadline - this.#clock.now()),
    );
  }

  #onTimer(): void {
    this.#timer = undefined;
    this.#timerAt = Infinity;
    const now = this.#clock.now();
    let next = Infinity;
    for (const [agent, t] of this.#targets) {
      if (!OPEN.has(t.state) || t.deadline === undefined) continue;
      if (t.deadline <= now) {
        this.settle(agent, {
          status: "timeout",
          error: { code: "timeout", message: `no final output within ${this.#timeoutMs}ms` },
        });
      } else next = Math.min(next, t.deadline);
    }
    if (next < Infinity) this.#armTimer(next);
    this.#maybeComplete();
  }
}
