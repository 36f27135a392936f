/**
 * A fake {@link Transport} for tests: each `connect` either fails (when told to) or opens an
 * in-memory socket whose server end the test drives as a {@link FakePeer}.
 *
 * @module
 */
import { JwError } from "../shared/errors.ts";
import type { CloseInfo, Socket, Transport } from "./transport.ts";
import { Queue } from "./_queue.ts";
import { deadline } from "./_deadline.ts";

/** The server end of a fake connection. */
export class FakePeer {
  /** The URL the agent connected to. */
  readonly url: string;
  /** Frames the agent sent, parsed, in order. */
  readonly received: Record<string, unknown>[] = [];
  /** How the agent or the test closed the socket, once closed. */
  closeInfo: CloseInfo | undefined;
  readonly #toAgent = new Queue<string>();
  readonly #fromAgent = new Queue<Record<string, unknown>>();
  readonly #iterator: AsyncIterator<Record<string, unknown>>;
  readonly closed: Promise<CloseInfo>;
  #resolveClosed!: (info: CloseInfo) => void;

  readonly #delivery?: { dseq: number };

  /**
   * @param delivery when given, the peer acts like the real server: it acknowledges every
   * reply with a `dseq` at once and drops (does not record) one already seen in `delivery`,
   * which the transport shares across its connections.
   */
  constructor(url: string, delivery?: { dseq: number }) {
    this.url = url;
    this.#delivery = delivery;
    this.closed = new Promise((resolve) => (this.#resolveClosed = resolve));
    this.#iterator = this.#fromAgent[Symbol.asyncIterator]();
  }

  /** Sends a frame (object, encoded as JSON, or raw text) to the agent. */
  send(frame: object | string): void {
    this.#toAgent.push(typeof frame === "string" ? frame : JSON.stringify(frame));
  }

  /** Closes the connection from the server side. */
  close(code = 1000, reason = ""): void {
    this.#closeWith({ code, reason });
  }

  /** True once closed by either side. */
  get isClosed(): boolean {
    return this.closeInfo !== undefined;
  }

  /**
   * The next frame the agent sends (frames already received count, in order); rejects with
   * a JwError `closed` when the socket closes first, or `timeout` after `ms` real ms.
   */
  async next(ms = 2000): Promise<Record<string, unknown>> {
    const r = await deadline(this.#iterator.next(), ms, "no frame from the agent");
    if (r.done) throw new JwError("closed", "socket closed before the next frame");
    return r.value;
  }

  /** The next frame, which must be of `type`. */
  async expect(type: string, ms?: number): Promise<Record<string, unknown>> {
    const frame = await this.next(ms);
    if (frame.type !== type) {
      throw new Error(`expected a "${type}" frame, got ${JSON.stringify(frame)}`);
    }
    return frame;
  }

  /** The agent's side of the socket. */
  socket(): Socket {
    return {
      send: (text: string): boolean => {
        if (this.isClosed) return false;
        const frame = JSON.parse(text);
        const delivery = this.#delivery;
        if (delivery && typeof frame.dseq === "number") {
          const fresh = frame.dseq > delivery.dseq;
          if (fresh) delivery.dseq = frame.dseq;
          this.send({ v: 1, id: `k-${frame.dseq}`, type: "ack", upTo: delivery.dseq });
          if (!fresh) return true;
        }
        this.received.push(frame);
        this.#fromAgent.push(frame);
        return true;
      },
      close: (code = 1000, reason = ""): void => this.#closeWith({ code, reason }),
      closed: this.closed,
      [Symbol.asyncIterator]: () => this.#toAgent[Symbol.asyncIterator](),
    };
  }

  #closeWith(info: CloseInfo): void {
    if (this.closeInfo) return;
    this.closeInfo = info;
    this.#toAgent.end();
    this.#fromAgent.end();
    this.#resolveClosed(info);
  }
}

/**
 * Records every connect. By default connections open; `refuse(n)` makes the next `n`
 * connects fail, `refuseAll` makes every connect fail and `hangAll` makes every connect
 * wait for its abort signal, until cleared.
 */
export class FakeTransport implements Transport {
  /** URLs of every connect attempt, in order. */
  readonly attempts: string[] = [];
  /** Every opened connection, in order. */
  readonly peers: FakePeer[] = [];
  /** When true, every connect fails. */
  refuseAll = false;
  /** When true, connects never open; they reject only when their signal aborts. */
  hangAll = false;
  /**
   * When set, peers acknowledge replies and drop resent ones like the real server (see
   * {@link FakePeer}); the highest `dseq` seen is shared by every connection.
   */
  delivery: { dseq: number } | undefined;
  #refuse = 0;
  #waiters: (() => void)[] = [];

  /** Makes the next `n` connects fail. */
  refuse(n: number): void {
    this.#refuse += n;
  }

  connect(url: string, signal?: AbortSignal): Promise<Socket> {
    this.attempts.push(url);
    let result: Promise<Socket>;
    if (this.hangAll) {
      result = new Promise((_, reject) => {
        const fail = () => reject(new JwError("closed", `connect to ${url} aborted`));
        if (signal?.aborted) fail();
        else signal?.addEventListener("abort", fail, { once: true });
      });
    } else if (this.refuseAll || this.#refuse > 0) {
      if (this.#refuse > 0) this.#refuse--;
      result = Promise.reject(new JwError("closed", `cannot connect to ${url}: refused`));
    } else {
      const peer = new FakePeer(url, this.delivery);
      this.peers.push(peer);
      result = Promise.resolve(peer.socket());
    }
    for (const wake of this.#waiters.splice(0)) wake();
    return result;
  }

  /** Resolves once there have been `n` connect attempts (or at once); rejects after `ms`. */
  attempted(n: number, ms = 2000): Promise<void> {
    const reached = new Promise<void>((resolve) => {
      const check = () => (this.attempts.length >= n ? resolve() : this.#waiters.push(check));
      check();
    });
    return deadline(reached, ms, `fewer than ${n} connects`);
  }

  /** The `n`th opened connection (0-based), waiting for it. */
  peer(n: number, ms = 2000): Promise<FakePeer> {
    const opened = new Promise<FakePeer>((resolve) => {
      const check = () => (this.peers[n] ? resolve(this.peers[n]) : this.#waiters.push(check));
      check();
    });
    return deadline(opened, ms, `no connection #${n}`);
  }
}
