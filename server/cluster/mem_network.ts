/**
 * An in-memory network for gossip tests: any number of {@link Transport}s in one process,
 * driven by a Clock (a FakeClock in tests), with per-link or global packet loss, delay with
 * jitter, duplication, partitions, killed nodes and a packet size limit, and per-node
 * counters. Also {@link PausableClock}, which stalls one node's timers and deliveries to
 * simulate a blocked event loop.
 *
 * Semantics:
 * - Packets are dropped (and counted) when oversized, lost by the drop rate, cut by a
 *   partition, or sent by or to a killed or closed node. Every delivered packet arrives
 *   through a timer of the network's clock after `delayMs + random * jitterMs` (held while
 *   the receiver's {@link PausableClock} is paused); a packet may be delivered twice by the
 *   duplicate rate.
 * - Streams are reliable and ordered: each message arrives after the link's fixed `delayMs`
 *   (no jitter, no loss, no duplication). Opening a stream to a node that is unknown,
 *   closed, killed or on the other side of a partition fails at once with `not_connected`
 *   (like a refused TCP connection; we never wait out `timeoutMs`). On an open stream,
 *   messages across a partition or to or from a killed node silently vanish, so the
 *   reader runs into its receive timeout, as with a peer that stopped answering.
 * - `kill(address)` is like `kill -9` seen from the network: that node's packets and
 *   streams go nowhere and nothing reaches it. Its code keeps running until its owner shuts
 *   it down. A new transport may then be created on the same address (a restart).
 *
 * @module
 */
import type { Clock, TimerId } from "../../shared/clock.ts";
import { JwError } from "../../shared/errors.ts";
import type { Random } from "../../shared/random.ts";
import {
  DEFAULT_PACKET_LIMIT,
  DEFAULT_STREAM_MESSAGE_LIMIT,
  type Packet,
  type Stream,
  type Transport,
} from "./transport.ts";

/** How a directed link treats traffic. Unset fields fall back to the network defaults. */
export interface LinkSettings {
  /** Probability (0..1) that a packet is lost. Default 0. Streams are never lossy. */
  dropRate?: number;
  /** Fixed one-way delay of packets and stream messages (ms). Default 0. */
  delayMs?: number;
  /** Extra uniform random delay of packets, 0..jitterMs (ms). Default 0. */
  jitterMs?: number;
  /** Probability (0..1) that a packet is delivered twice. Default 0. */
  duplicateRate?: number;
}

/** Traffic counters of one node. */
export interface NodeCounters {
  /** Packets this node handed to the network (including ones then dropped). */
  packetsSent: number;
  bytesSent: number;
  /** Packets delivered to this node's handler. */
  packetsReceived: number;
  bytesReceived: number;
  /** Packets this node sent that were not delivered (any reason). */
  packetsDropped: number;
  /** Of those, packets over the packet limit. */
  packetsOversized: number;
  /** Streams this node opened successfully. */
  streamsOpened: number;
  streamMessagesSent: number;
  streamBytesSent: number;
  streamMessagesReceived: number;
  streamBytesReceived: number;
}

/** Options for {@link MemNetwork}. */
export interface MemNetworkOptions {
  /** Drives delivery (a FakeClock in tests). Nodes may bring their own; see {@link MemNetwork.transport}. */
  clock: Clock;
  /** Decides loss, jitter and duplication. */
  random: Random;
  /** Packets larger than this are dropped. Default {@link DEFAULT_PACKET_LIMIT}. */
  packetLimit?: number;
  /** Stream messages larger than this fail with `frame_too_large`. Default {@link DEFAULT_STREAM_MESSAGE_LIMIT}. */
  streamMessageLimit?: number;
  /** Initial settings of every link. */
  defaults?: LinkSettings;
}

/** Options for {@link MemNetwork.transport}. */
export interface MemTransportOptions {
  /**
   * The node's own clock: its stream receive timeouts run on it, and while it is a paused
   * {@link PausableClock} nothing is delivered to the node (a stalled event loop).
   * Default: the network's clock.
   */
  clock?: Clock;
}

interface Endpoint {
  address: string;
  clock: Clock;
  transport: MemTransport;
  packetHandler?: (packet: Packet) => void;
  streamHandler?: (stream: Stream) => void;
  closed: boolean;
  killed: boolean;
  counters: NodeCounters;
  streams: Set<MemStream>;
}

function zeroCounters(): NodeCounters {
  return {
    packetsSent: 0,
    bytesSent: 0,
    packetsReceived: 0,
    bytesReceived: 0,
    packetsDropped: 0,
    packetsOversized: 0,
    streamsOpened: 0,
    streamMessagesSent: 0,
    streamBytesSent: 0,
    streamMessagesReceived: 0,
    streamBytesReceived: 0,
  };
}

function checkRate(value: number | undefined, what: string): void {
  if (value !== undefined && !(value >= 0 && value <= 1)) {
    throw new JwError("config", `${what} must be within 0..1, got ${value}`);
  }
}

function checkDelay(value: number | undefined, what: string): void {
  if (value !== undefined && !(value >= 0 && Number.isFinite(value))) {
    throw new JwError("config", `${what} must be a finite number >= 0, got ${value}`);
  }
}

function checkSettings(s: LinkSettings): void {
  checkRate(s.dropRate, "dropRate");
  checkRate(s.duplicateRate, "duplicateRate");
  checkDelay(s.delayMs, "delayMs");
  checkDelay(s.jitterMs, "jitterMs");
}

/**
 * The simulated network. Single-threaded; every delivery happens in a clock timer, never
 * inside the sender's call.
 */
export class MemNetwork {
  readonly #clock: Clock;
  readonly #random: Random;
  readonly #packetLimit: number;
  readonly #streamLimit: number;
  #defaults: Required<LinkSettings> = { dropRate: 0, delayMs: 0, jitterMs: 0, duplicateRate: 0 };
  readonly #links = new Map<string, LinkSettings>();
  readonly #endpoints = new Map<string, Endpoint>();
  #partitions: [Set<string>, Set<string>][] = [];

  constructor(options: MemNetworkOptions) {
    this.#clock = options.clock;
    this.#random = options.random;
    this.#packetLimit = options.packetLimit ?? DEFAULT_PACKET_LIMIT;
    this.#streamLimit = options.streamMessageLimit ?? DEFAULT_STREAM_MESSAGE_LIMIT;
    if (options.defaults) this.setDefaults(options.defaults);
  }

  /**
   * A transport receiving on `address`. The address must be free: never used, or its
   * previous transport closed or killed (a restarted node).
   * @throws JwError `conflict` when a live transport holds the address.
   */
  transport(address: string, options: MemTransportOptions = {}): Transport {
    const old = this.#endpoints.get(address);
    if (old && !old.closed && !old.killed) {
      throw new JwError("conflict", `address ${address} is in use`);
    }
    const ep: Endpoint = {
      address,
      clock: options.clock ?? this.#clock,
      transport: undefined as unknown as MemTransport,
      closed: false,
      killed: false,
      counters: zeroCounters(),
      streams: new Set(),
    };
    ep.transport = new MemTransport(this, ep);
    this.#endpoints.set(address, ep);
    return ep.transport;
  }

  /** Changes the settings of every link without its own (merged over the current ones). */
  setDefaults(settings: LinkSettings): void {
    checkSettings(settings);
    this.#defaults = { ...this.#defaults, ...stripUndefined(settings) };
  }

  /**
   * Sets the directed link `from → to` (merged over the defaults); `undefined` removes it.
   * Call twice for both directions.
   */
  setLink(from: string, to: string, settings: LinkSettings | undefined): void {
    if (settings === undefined) {
      this.#links.delete(`${from}\n${to}`);
      return;
    }
    checkSettings(settings);
    this.#links.set(`${from}\n${to}`, stripUndefined(settings));
  }

  /** Cuts every link between a member of `groupA` and a member of `groupB`, both ways. */
  partition(groupA: string[], groupB: string[]): void {
    this.#partitions.push([new Set(groupA), new Set(groupB)]);
  }

  /** Removes every partition. */
  heal(): void {
    this.#partitions = [];
  }

  /** Silences `address` for good (see the module notes). Unknown addresses are ignored. */
  kill(address: string): void {
    const ep = this.#endpoints.get(address);
    if (ep) ep.killed = true;
  }

  /** True when the node at `address` was killed (and not replaced). */
  isKilled(address: string): boolean {
    return this.#endpoints.get(address)?.killed ?? false;
  }

  /** A copy of the counters of the node at `address` (zeros when unknown). */
  counters(address: string): NodeCounters {
    const ep = this.#endpoints.get(address);
    return ep ? { ...ep.counters } : zeroCounters();
  }

  /** The counters of every current node added up. */
  totals(): NodeCounters {
    const sum = zeroCounters();
    for (const ep of this.#endpoints.values()) {
      for (const k of Object.keys(sum) as (keyof NodeCounters)[]) sum[k] += ep.counters[k];
    }
    return sum;
  }

  #cut(a: string, b: string): boolean {
    return this.#partitions.some(([x, y]) => (x.has(a) && y.has(b)) || (x.has(b) && y.has(a)));
  }

  #settings(from: string, to: string): Required<LinkSettings> {
    const link = this.#links.get(`${from}\n${to}`);
    return link ? { ...this.#defaults, ...link } : this.#defaults;
  }

  #live(address: string): Endpoint | undefined {
    const ep = this.#endpoints.get(address);
    return ep && !ep.closed && !ep.killed ? ep : undefined;
  }

  /** @internal */
  sendPacket(from: Endpoint, to: string, data: Uint8Array): void {
    if (from.closed) return;
    from.counters.packetsSent++;
    from.counters.bytesSent += data.length;
    if (data.length > this.#packetLimit) {
      from.counters.packetsOversized++;
      from.counters.packetsDropped++;
      return;
    }
    const s = this.#settings(from.address, to);
    if (from.killed || this.#cut(from.address, to) || this.#random.float() < s.dropRate) {
      from.counters.packetsDropped++;
      return;
    }
    const copies = this.#random.float() < s.duplicateRate ? 2 : 1;
    const copy = data.slice();
    for (let i = 0; i < copies; i++) {
      const delay = s.delayMs + this.#random.float() * s.jitterMs;
      this.#clock.setTimeout(
        () => this.#arrive(to, () => this.#deliverPacket(from, to, copy)),
        delay,
      );
    }
  }

  /** Runs `fn` for the node at `to` now, or when its stalled event loop gets to it. */
  #arrive(to: string, fn: () => void): void {
    const clock = this.#endpoints.get(to)?.clock;
    if (clock instanceof PausableClock) clock.whenAwake(fn);
    else fn();
  }

  #deliverPacket(from: Endpoint, to: string, data: Uint8Array): void {
    const dest = this.#live(to);
    if (!dest || from.killed || this.#cut(from.address, to)) {
      from.counters.packetsDropped++;
      return;
    }
    dest.counters.packetsReceived++;
    dest.counters.bytesReceived += data.length;
    dest.packetHandler?.({ from: from.address, data, at: dest.clock.now() });
  }

  /** @internal */
  openStream(from: Endpoint, to: string): Promise<Stream> {
    if (from.closed) return Promise.reject(new JwError("closed", "transport is closed"));
    const dest = this.#live(to);
    if (from.killed || !dest || this.#cut(from.address, to)) {
      return Promise.reject(new JwError("not_connected", `cannot connect to ${to}`));
    }
    from.counters.streamsOpened++;
    const local = new MemStream(this, from, to);
    const remote = new MemStream(this, dest, from.address);
    local.peer = remote;
    remote.peer = local;
    from.streams.add(local);
    dest.streams.add(remote);
    const delay = this.#settings(from.address, to).delayMs;
    this.#clock.setTimeout(() =>
      this.#arrive(to, () => {
        if (this.#live(to) === dest && dest.streamHandler && !local.closed) {
          dest.streamHandler(remote);
        } else {
          remote.close();
        }
      }), delay);
    return Promise.resolve(local);
  }

  /** @internal */
  get streamLimit(): number {
    return this.#streamLimit;
  }

  /** @internal Schedules `fn` at the receiving end of a stream, in order. */
  streamDeliver(sender: MemStream, receiver: MemStream, fn: () => void): boolean {
    const from = sender.endpoint;
    const to = receiver.endpoint;
    if (from.killed || to.killed || to.closed || this.#cut(from.address, to.address)) return false;
    const now = this.#clock.now();
    const due = Math.max(now + this.#settings(from.address, to.address).delayMs, sender.lastDue);
    sender.lastDue = due;
    this.#clock.setTimeout(() => {
      if (to.killed || this.#cut(from.address, to.address)) return;
      if (to.clock instanceof PausableClock) to.clock.whenAwake(fn);
      else fn();
    }, due - now);
    return true;
  }
}

function stripUndefined(s: LinkSettings): LinkSettings {
  return Object.fromEntries(Object.entries(s).filter(([, v]) => v !== undefined));
}

class MemTransport implements Transport {
  readonly #net: MemNetwork;
  readonly #ep: Endpoint;

  constructor(net: MemNetwork, ep: Endpoint) {
    this.#net = net;
    this.#ep = ep;
  }

  get address(): string {
    return this.#ep.address;
  }

  sendPacket(to: string, data: Uint8Array): void {
    this.#net.sendPacket(this.#ep, to, data);
  }

  onPacket(handler: (packet: Packet) => void): void {
    this.#ep.packetHandler = handler;
  }

  openStream(to: string, _timeoutMs: number): Promise<Stream> {
    return this.#net.openStream(this.#ep, to);
  }

  onStream(handler: (stream: Stream) => void): void {
    this.#ep.streamHandler = handler;
  }

  close(): Promise<void> {
    if (!this.#ep.closed) {
      this.#ep.closed = true;
      this.#ep.packetHandler = undefined;
      this.#ep.streamHandler = undefined;
      for (const s of [...this.#ep.streams]) s.close();
    }
    return Promise.resolve();
  }
}

class MemStream implements Stream {
  readonly #net: MemNetwork;
  readonly endpoint: Endpoint;
  readonly remote: string;
  peer!: MemStream;
  lastDue = 0;
  closed = false;
  #peerClosed = false;
  #queue: Uint8Array[] = [];
  #waiter?: {
    resolve: (m: Uint8Array | null) => void;
    reject: (e: unknown) => void;
    timer: TimerId;
  };

  constructor(net: MemNetwork, endpoint: Endpoint, remote: string) {
    this.#net = net;
    this.endpoint = endpoint;
    this.remote = remote;
  }

  send(message: Uint8Array): Promise<void> {
    if (this.closed) return Promise.reject(new JwError("closed", "stream is closed"));
    if (message.length > this.#net.streamLimit) {
      return Promise.reject(
        new JwError("frame_too_large", `stream message of ${message.length} bytes is too large`),
      );
    }
    this.endpoint.counters.streamMessagesSent++;
    this.endpoint.counters.streamBytesSent += message.length;
    const copy = message.slice();
    const peer = this.peer;
    this.#net.streamDeliver(this, peer, () => peer.#push(copy));
    return Promise.resolve();
  }

  receive(timeoutMs: number): Promise<Uint8Array | null> {
    if (this.#queue.length > 0) return Promise.resolve(this.#queue.shift()!);
    if (this.closed) return Promise.reject(new JwError("closed", "stream is closed"));
    if (this.#peerClosed) return Promise.resolve(null);
    if (this.#waiter) {
      return Promise.reject(new JwError("internal", "receive() is already waiting"));
    }
    return new Promise((resolve, reject) => {
      const timer = this.endpoint.clock.setTimeout(() => {
        this.#waiter = undefined;
        reject(new JwError("timeout", `no stream message from ${this.remote} in ${timeoutMs} ms`));
      }, timeoutMs);
      this.#waiter = { resolve, reject, timer };
    });
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.endpoint.streams.delete(this);
    const w = this.#waiter;
    if (w) {
      this.#waiter = undefined;
      this.endpoint.clock.clearTimeout(w.timer);
      w.reject(new JwError("closed", "stream is closed"));
    }
    const peer = this.peer;
    this.#net.streamDeliver(this, peer, () => peer.#end());
  }

  #push(message: Uint8Array): void {
    if (this.closed) return;
    this.endpoint.counters.streamMessagesReceived++;
    this.endpoint.counters.streamBytesReceived += message.length;
    const w = this.#waiter;
    if (w) {
      this.#waiter = undefined;
      this.endpoint.clock.clearTimeout(w.timer);
      w.resolve(message);
    } else {
      this.#queue.push(message);
    }
  }

  #end(): void {
    this.#peerClosed = true;
    const w = this.#waiter;
    if (w && this.#queue.length === 0) {
      this.#waiter = undefined;
      this.endpoint.clock.clearTimeout(w.timer);
      w.resolve(null);
    }
  }
}

interface HeldTimer {
  id: TimerId;
  at: number;
  fn: () => void;
}

/**
 * A Clock over another that can be paused, to simulate a blocked event loop: while paused,
 * timers that fall due are held instead of run, and so is network input for the node
 * ({@link MemNetwork} hands it over through {@link PausableClock.whenAwake}).
 * {@link PausableClock.resume} catches up the way Deno's event loop does after a block:
 * first the expired timers in due order, then the input in arrival order. Time itself keeps
 * moving (`now()` is the base clock's).
 */
export class PausableClock implements Clock {
  readonly #base: Clock;
  #paused = false;
  #nextId = 1;
  readonly #baseIds = new Map<TimerId, TimerId>();
  #held: HeldTimer[] = [];
  #input: (() => void)[] = [];

  constructor(base: Clock) {
    this.#base = base;
  }

  now(): number {
    return this.#base.now();
  }

  setTimeout(fn: () => void, ms: number): TimerId {
    const id = this.#nextId++;
    const at = this.#base.now() + Math.max(0, ms);
    const baseId = this.#base.setTimeout(() => {
      this.#baseIds.delete(id);
      if (this.#paused) this.#held.push({ id, at, fn });
      else fn();
    }, ms);
    this.#baseIds.set(id, baseId);
    return id;
  }

  clearTimeout(id: TimerId): void {
    const baseId = this.#baseIds.get(id);
    if (baseId !== undefined) {
      this.#base.clearTimeout(baseId);
      this.#baseIds.delete(id);
    }
    this.#held = this.#held.filter((t) => t.id !== id);
  }

  sleep(ms: number, signal?: AbortSignal): Promise<void> {
    return new Promise((resolve, reject) => {
      if (signal?.aborted) return reject(signal.reason);
      const onAbort = () => {
        this.clearTimeout(id);
        reject(signal!.reason);
      };
      const id = this.setTimeout(() => {
        signal?.removeEventListener("abort", onAbort);
        resolve();
      }, ms);
      signal?.addEventListener("abort", onAbort, { once: true });
    });
  }

  /** True while paused. */
  get paused(): boolean {
    return this.#paused;
  }

  /** Holds every timer that falls due from now on. */
  pause(): void {
    this.#paused = true;
  }

  /** Runs `fn` now, or when resumed if paused (after the timers held until then). */
  whenAwake(fn: () => void): void {
    if (this.#paused) this.#input.push(fn);
    else fn();
  }

  /**
   * Runs the held timers in due order (ties in creation order), then the held input in
   * arrival order, then runs normally.
   */
  resume(): void {
    this.#paused = false;
    const held = this.#held.sort((a, b) => a.at - b.at || a.id - b.id);
    this.#held = [];
    for (const t of held) t.fn();
    const input = this.#input;
    this.#input = [];
    for (const fn of input) fn();
  }
}
