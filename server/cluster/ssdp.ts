/**
 * LAN seed discovery in the style of SSDP (UPnP's Simple Service Discovery Protocol): servers
 * announce their gossip address by UDP multicast and learn each other's, so servers on one LAN
 * find each other with no seed list. It is one more seed source next to static seeds and DNS
 * SRV (seeds.ts): every peer it finds is handed to `onPeer`, which joins it.
 *
 * Three messages, HTTP-like text in one datagram each (CRLF line ends). An announcement:
 *
 * ```
 * NOTIFY * HTTP/1.1
 * HOST: 239.255.255.250:1900
 * CACHE-CONTROL: max-age=30
 * NT: urn:jabberwocky:gossip:1
 * NTS: ssdp:alive
 * USN: uuid:<server id>
 * LOCATION: <gossip host:port>
 * X-JW-CLUSTER: <cluster name>
 * X-JW-TOKEN: <token>
 * ```
 *
 * A search, `M-SEARCH * HTTP/1.1` with `HOST`, `MAN: "ssdp:discover"`, `MX: 1`,
 * `ST: urn:jabberwocky:gossip:1`, `USN`, `X-JW-CLUSTER` and `X-JW-TOKEN`; and its answer,
 * `HTTP/1.1 200 OK` with the announcement's headers, but `ST` for `NT`, an empty `EXT` and no
 * `HOST` or `NTS`.
 *
 * A server multicasts NOTIFY at start and then every `intervalMs` (±10 % jitter), and an
 * M-SEARCH at start and on {@link Ssdp.search}; every server that hears an M-SEARCH answers the
 * searcher by unicast `200 OK` after a random delay of at most 1 s, so a server started later
 * finds the others at once rather than after a whole interval.
 *
 * Trust: `X-JW-TOKEN` is `sign(payload)`, where the payload is the JSON
 * `{"v":1,"k":"alive"|"search","c":<cluster>,"id":<server id>,"g":<gossip>,"t":<ms>}`
 * (`g` only in announcements). A message is believed only when `verify(token)` returns a payload
 * whose fields equal the message's headers, whose cluster is ours, and whose time is within
 * `windowMs` of our clock; an announcement older than the last one believed from the same
 * server is stale. {@link keyringSsdpAuth} makes `sign`/`verify` from the cluster keyring. Only
 * signed searches are answered, each search once, with at most one pending answer per searcher
 * address and a bounded number in all, so the port is no traffic amplifier for strangers.
 *
 * Everything else on the port — other SSDP traffic (UPnP devices share port 1900), our own
 * messages looped back, other clusters, bad tokens, malformed text — is ignored and counted
 * ({@link SsdpStats}), never answered and never thrown. IPv4 only.
 *
 * @module
 */
import { Buffer } from "node:buffer";
import { createHmac, timingSafeEqual } from "node:crypto";
import dgram from "node:dgram";
import { isIP } from "node:net";
import { networkInterfaces } from "node:os";
import type { Clock, TimerId } from "../../shared/clock.ts";
import { JwError } from "../../shared/errors.ts";
import type { Logger } from "../../shared/log.ts";
import type { Random } from "../../shared/random.ts";
import type { Keyring } from "./keyring.ts";
import { formatHostPort, parseHostPort } from "./seeds.ts";

/** The SSDP search target (NT/ST) of Jabberwocky gossip announcements. */
export const SSDP_TARGET = "urn:jabberwocky:gossip:1";

/** Default multicast group: SSDP's. */
export const DEFAULT_SSDP_GROUP = "239.255.255.250";

/** Default UDP port: SSDP's. */
export const DEFAULT_SSDP_PORT = 1900;

/** Default period between NOTIFY announcements (ms). */
export const DEFAULT_SSDP_INTERVAL_MS = 10_000;

/** Default largest difference between a message's signed time and our clock (ms). */
export const DEFAULT_SSDP_WINDOW_MS = 30_000;

/** Longest random delay before answering an M-SEARCH (ms), like SSDP's `MX: 1`. */
export const SSDP_MAX_ANSWER_DELAY_MS = 1000;

/** Multicast TTL of our datagrams: UPnP's default, enough for one router hop. */
export const SSDP_TTL = 2;

/** The JWS `typ` of SSDP tokens made by {@link keyringSsdpAuth}. */
export const SSDP_TOKEN_TYPE = "jw-ssdp";

/** Datagrams larger than this are not parsed (counted as malformed). */
const MAX_DATAGRAM_BYTES = 4096;

/** Answers waiting for their random delay, at most. */
const MAX_PENDING_ANSWERS = 64;

/** Servers remembered (last announcement and last search), at most each; oldest forgotten. */
const MAX_REMEMBERED = 4096;

/** Makes and checks the tokens that prove a message comes from a holder of the cluster key. */
export interface SsdpAuth {
  /** A token over `payload`; must not contain CR or LF. */
  sign(payload: Uint8Array): string;
  /** The payload a valid token carries; undefined for any token that is not valid. */
  verify(token: string): Uint8Array | undefined;
}

/** Options of {@link startSsdp}. */
export interface SsdpOptions extends SsdpAuth {
  /** This server's id, announced as `USN: uuid:<id>`; messages with it are our own. */
  serverId: string;
  /** The cluster name; announcements of other clusters are ignored. */
  cluster: string;
  /**
   * The gossip "host:port" to announce: an address peers can reach (the advertise address),
   * never an unspecified one like 0.0.0.0.
   */
  gossip: string;
  /** IPv4 multicast group. Default 239.255.255.250. */
  group?: string;
  /**
   * UDP port, shared by every server on the host (the socket is bound with SO_REUSEADDR).
   * Default 1900.
   */
  port?: number;
  /**
   * IPv4 address of the one interface to use. Default: every IPv4 interface (the group is
   * joined and announcements are sent on each).
   */
  interface?: string;
  /** Period between announcements (ms), jittered ±10 %. Default 10000. */
  intervalMs?: number;
  /**
   * Largest difference between a message's signed time and our clock (ms): the servers'
   * clocks must agree this well. Default 30000.
   */
  windowMs?: number;
  /** Drives announcements, answer delays and time checks. */
  clock: Clock;
  /** Jitter and answer delays. */
  random: Random;
  logger: Logger;
  /**
   * Called with the gossip address of a server found: once for each server, again when its
   * address changes, and again when it was not heard for three intervals. Exceptions are
   * logged, not propagated.
   */
  onPeer(address: string): void;
}

/** Why received datagrams were ignored. */
export interface SsdpIgnored {
  /** Our own messages, looped back by multicast. */
  own: number;
  /** SSDP traffic for another target (UPnP devices and the like), or `ssdp:byebye`. */
  otherTarget: number;
  /** Messages of another cluster. */
  otherCluster: number;
  /** A missing or invalid token, or one whose payload differs from the headers. */
  badToken: number;
  /** Signed time outside the window, or older than the last announcement of that server. */
  stale: number;
  /** A search already answered: a replay, or the same search heard on two interfaces. */
  replayed: number;
  /** Not SSDP text: bad start line or header, duplicate header, bad address, too large. */
  malformed: number;
}

/** Counters since start. */
export interface SsdpStats {
  notifiesSent: number;
  searchesSent: number;
  answersSent: number;
  /** Valid NOTIFY announcements from other servers. */
  notifiesAccepted: number;
  /** Valid answers to our searches. */
  answersAccepted: number;
  /** Valid searches from other servers (each gets one answer unless dropped). */
  searchesAccepted: number;
  /** Calls of `onPeer`. */
  peersReported: number;
  /** Answers not sent: one was already pending for that address, or too many were. */
  answersDropped: number;
  /** Datagrams not sent: `sign` failed, or the socket failed to send. */
  sendFailed: number;
  /** Sockets that could not bind or join the group, and socket error events. */
  socketErrors: number;
  ignored: SsdpIgnored;
}

/** A running SSDP announcer and listener. */
export interface Ssdp extends AsyncDisposable {
  /** Multicasts an M-SEARCH now. Does nothing after stop(); never throws. */
  search(): void;
  /** A snapshot of the counters. */
  stats(): SsdpStats;
  /** Cancels every timer and closes every socket. Idempotent. */
  stop(): Promise<void>;
}

/**
 * Starts announcing and listening: binds the multicast socket (and one sending socket per
 * interface), then sends the first NOTIFY and M-SEARCH. Network trouble — a port or
 * interface that cannot be bound or joined, a failed send — is logged at warn and counted; the
 * rest keeps working, so a server never fails to start because of discovery.
 *
 * @throws JwError `config` for a bad option (before any socket is opened).
 */
export async function startSsdp(options: SsdpOptions): Promise<Ssdp> {
  const settings = checkOptions(options);
  const ssdp = new SsdpImpl(options, settings);
  await ssdp.open();
  return ssdp;
}

interface Settings {
  group: string;
  port: number;
  /** Interface addresses; null: the OS default interface only. */
  interfaces: string[] | null;
  intervalMs: number;
  windowMs: number;
}

function checkOptions(options: SsdpOptions): Settings {
  const bad = (what: string, value: unknown, why: string) =>
    new JwError("config", `bad SSDP ${what} ${JSON.stringify(value)}: ${why}`);
  if (!isHeaderValue(options.serverId) || /\s/.test(options.serverId)) {
    throw bad("server id", options.serverId, "must be non-empty, without spaces or controls");
  }
  if (!isHeaderValue(options.cluster)) {
    throw bad("cluster name", options.cluster, "must be non-empty, without controls");
  }
  const gossip = parseHostPort(options.gossip, "SSDP gossip address");
  if (gossip.port === 0 || isUnspecified(gossip.host)) {
    throw bad(
      "gossip address",
      options.gossip,
      "announce an address peers can reach (set the advertise address)",
    );
  }
  const group = options.group ?? DEFAULT_SSDP_GROUP;
  if (!isMulticast(group)) {
    throw bad("group", group, "must be an IPv4 multicast address (224.0.0.0/4)");
  }
  const port = options.port ?? DEFAULT_SSDP_PORT;
  if (!Number.isInteger(port) || port < 1 || port > 65535) {
    throw bad("port", port, "must be from 1 to 65535");
  }
  if (options.interface !== undefined && isIP(options.interface) !== 4) {
    throw bad("interface", options.interface, "must be an IPv4 address");
  }
  const intervalMs = options.intervalMs ?? DEFAULT_SSDP_INTERVAL_MS;
  if (!Number.isFinite(intervalMs) || intervalMs < 100) {
    throw bad("interval", intervalMs, "must be at least 100 ms");
  }
  const windowMs = options.windowMs ?? DEFAULT_SSDP_WINDOW_MS;
  if (!Number.isFinite(windowMs) || windowMs <= 0) {
    throw bad("time window", windowMs, "must be > 0 ms");
  }
  const interfaces = options.interface !== undefined ? [options.interface] : ipv4Interfaces();
  return { group, port, interfaces, intervalMs, windowMs };
}

function isHeaderValue(text: unknown): text is string {
  return typeof text === "string" && text.length > 0 && text === text.trim() &&
    // deno-lint-ignore no-control-regex
    !/[\x00-\x1f\x7f]/.test(text);
}

/** True for an IPv4 multicast address (224.0.0.0/4). */
function isMulticast(ip: string): boolean {
  const first = Number(ip.split(".")[0]);
  return isIP(ip) === 4 && first >= 224 && first <= 239;
}

function isUnspecified(host: string): boolean {
  return host === "0.0.0.0" || host === "::";
}

/** Every IPv4 interface address, or null when they cannot be listed (no --allow-sys). */
function ipv4Interfaces(): string[] | null {
  try {
    const addresses = Object.values(networkInterfaces()).flat()
      .filter((a) => a !== undefined && a.family === "IPv4")
      .map((a) => a!.address);
    return addresses.length > 0 ? [...new Set(addresses)] : null;
  } catch {
    return null;
  }
}

/** The signed fields of a message. */
interface Payload {
  kind: "alive" | "search";
  cluster: string;
  id: string;
  /** The gossip address (announcements only). */
  gossip?: string;
  /** Signing time, ms since the epoch. */
  t: number;
}

type MessageKind = "notify" | "search" | "answer";

interface Message {
  kind: MessageKind;
  /** Header values by upper-case name. */
  headers: Map<string, string>;
}

const START_LINES: Record<string, MessageKind> = {
  "NOTIFY * HTTP/1.1": "notify",
  "M-SEARCH * HTTP/1.1": "search",
  "HTTP/1.1 200 OK": "answer",
};

/** Parses SSDP text; undefined when it is not well-formed (duplicate headers are refused). */
function parseMessage(data: Uint8Array): Message | undefined {
  let text: string;
  try {
    text = new TextDecoder("utf-8", { fatal: true }).decode(data);
  } catch {
    return undefined;
  }
  const lines = text.split(/\r?\n/);
  const kind = START_LINES[lines[0]];
  if (kind === undefined) return undefined;
  const headers = new Map<string, string>();
  for (const line of lines.slice(1)) {
    if (line === "") break; // end of headers; a body, if any, is ignored
    const colon = line.indexOf(":");
    if (colon <= 0) return undefined;
    const name = line.slice(0, colon).trim().toUpperCase();
    if (!/^[A-Z0-9-]+$/.test(name) || headers.has(name)) return undefined;
    headers.set(name, line.slice(colon + 1).trim());
  }
  return { kind, headers };
}

function formatMessage(startLine: string, headers: [string, string][]): Uint8Array {
  const lines = [startLine, ...headers.map(([name, value]) => `${name}: ${value}`), "", ""];
  return new TextEncoder().encode(lines.join("\r\n"));
}

function encodePayload(p: Payload): Uint8Array {
  const body: Record<string, unknown> = { v: 1, k: p.kind, c: p.cluster, id: p.id };
  if (p.gossip !== undefined) body.g = p.gossip;
  body.t = p.t;
  return new TextEncoder().encode(JSON.stringify(body));
}

function decodePayload(bytes: Uint8Array): Payload | undefined {
  let body: unknown;
  try {
    body = JSON.parse(new TextDecoder("utf-8", { fatal: true }).decode(bytes));
  } catch {
    return undefined;
  }
  if (typeof body !== "object" || body === null) return undefined;
  const b = body as Record<string, unknown>;
  if (b.v !== 1 || (b.k !== "alive" && b.k !== "search")) return undefined;
  if (typeof b.c !== "string" || typeof b.id !== "string" || !Number.isSafeInteger(b.t)) {
    return undefined;
  }
  if (b.k === "alive" ? typeof b.g !== "string" : b.g !== undefined) return undefined;
  return {
    kind: b.k,
    cluster: b.c,
    id: b.id,
    gossip: b.g as string | undefined,
    t: b.t as number,
  };
}

function newStats(): SsdpStats {
  return {
    notifiesSent: 0,
    searchesSent: 0,
    answersSent: 0,
    notifiesAccepted: 0,
    answersAccepted: 0,
    searchesAccepted: 0,
    peersReported: 0,
    answersDropped: 0,
    sendFailed: 0,
    socketErrors: 0,
    ignored: {
      own: 0,
      otherTarget: 0,
      otherCluster: 0,
      badToken: 0,
      stale: 0,
      replayed: 0,
      malformed: 0,
    },
  };
}

interface PeerEntry {
  gossip: string;
  /** Signed time of the newest announcement believed. */
  t: number;
  /** Our clock when it was last heard. */
  seenAt: number;
}

/** Sets `key` as the newest entry of `map`, forgetting the oldest past {@link MAX_REMEMBERED}. */
function remember<V>(map: Map<string, V>, key: string, value: V): void {
  map.delete(key);
  map.set(key, value);
  if (map.size > MAX_REMEMBERED) map.delete(map.keys().next().value!);
}

class SsdpImpl implements Ssdp {
  readonly #o: SsdpOptions;
  readonly #s: Settings;
  readonly #log: Logger;
  readonly #stats = newStats();
  /** Receives the group's datagrams (and unicast to the port). */
  #listener: dgram.Socket | null = null;
  /** One per interface: sends to the group, receives answers to our searches. */
  readonly #senders: dgram.Socket[] = [];
  readonly #peers = new Map<string, PeerEntry>();
  /** Signed time of the last search answered, by searcher id. */
  readonly #searches = new Map<string, number>();
  /** Answers waiting for their delay, by destination "ip:port". */
  readonly #pending = new Map<string, TimerId>();
  #announceTimer: TimerId | undefined;
  #stopped = false;
  #stopping: Promise<void> | null = null;

  constructor(options: SsdpOptions, settings: Settings) {
    this.#o = options;
    this.#s = settings;
    this.#log = options.logger;
  }

  async open(): Promise<void> {
    const { group, port, interfaces } = this.#s;
    const listener = await this.#bind(port, undefined, true);
    if (listener) {
      for (const iface of interfaces ?? [undefined]) {
        try {
          listener.addMembership(group, iface);
        } catch (err) {
          this.#socketError("cannot join the SSDP multicast group", err, { group, iface });
        }
      }
      this.#listener = listener;
    }
    for (const iface of interfaces ?? [undefined]) {
      const sender = await this.#bind(0, iface, false);
      if (!sender) continue;
      try {
        if (iface !== undefined) sender.setMulticastInterface(iface);
        sender.setMulticastTTL(SSDP_TTL);
        sender.setMulticastLoopback(true);
        this.#senders.push(sender);
      } catch (err) {
        this.#socketError("cannot set up an SSDP sending socket", err, { iface });
        await closeSocket(sender);
      }
    }
    if (this.#stopped) return; // stop() came while binding
    this.#log.info("SSDP discovery started", {
      group: `${group}:${port}`,
      interfaces: interfaces?.join(",") ?? "default",
      gossip: this.#o.gossip,
    });
    this.#announce();
    this.search();
  }

  /** A bound socket with the message handler, or null (logged and counted) when it failed. */
  async #bind(
    port: number,
    address: string | undefined,
    reuseAddr: boolean,
  ): Promise<dgram.Socket | null> {
    const socket = dgram.createSocket({ type: "udp4", reuseAddr });
    try {
      await new Promise<void>((resolve, reject) => {
        socket.once("error", reject);
        socket.bind(port, address, () => {
          socket.off("error", reject);
          resolve();
        });
      });
    } catch (err) {
      this.#socketError("cannot bind an SSDP socket", err, { address: address ?? "0.0.0.0", port });
      await closeSocket(socket);
      return null;
    }
    socket.on("message", (msg, rinfo) => this.#receive(socket, msg, rinfo));
    socket.on("error", (err) => this.#socketError("SSDP socket error", err, {}));
    return socket;
  }

  #socketError(message: string, err: unknown, fields: Record<string, unknown>): void {
    this.#stats.socketErrors++;
    this.#log.warn(message, { ...fields, error: err instanceof Error ? err.message : String(err) });
  }

  stats(): SsdpStats {
    return structuredClone(this.#stats);
  }

  // ---- sending ----

  #announce(): void {
    if (this.#stopped) return;
    const message = this.#announcement("notify");
    if (message) {
      for (const sender of this.#senders) {
        this.#send(sender, message, this.#s.port, this.#s.group, "notify");
      }
    }
    const jitter = 0.9 + 0.2 * this.#o.random.float();
    this.#announceTimer = this.#o.clock.setTimeout(
      () => this.#announce(),
      Math.round(this.#s.intervalMs * jitter),
    );
  }

  search(): void {
    if (this.#stopped) return;
    const { group, port } = this.#s;
    const token = this.#token({ kind: "search" });
    if (token === undefined) return;
    const message = formatMessage("M-SEARCH * HTTP/1.1", [
      ["HOST", `${group}:${port}`],
      ["MAN", '"ssdp:discover"'],
      ["MX", String(SSDP_MAX_ANSWER_DELAY_MS / 1000)],
      ["ST", SSDP_TARGET],
      ["USN", `uuid:${this.#o.serverId}`],
      ["X-JW-CLUSTER", this.#o.cluster],
      ["X-JW-TOKEN", token],
    ]);
    for (const sender of this.#senders) this.#send(sender, message, port, group, "search");
  }

  /** A NOTIFY, or the 200 OK answer to a search; undefined when it cannot be signed. */
  #announcement(kind: "notify" | "answer"): Uint8Array | undefined {
    const { group, port } = this.#s;
    const token = this.#token({ kind: "alive", gossip: this.#o.gossip });
    if (token === undefined) return undefined;
    const maxAge = ["CACHE-CONTROL", `max-age=${Math.ceil((3 * this.#s.intervalMs) / 1000)}`] as [
      string,
      string,
    ];
    const common: [string, string][] = [
      ["USN", `uuid:${this.#o.serverId}`],
      ["LOCATION", this.#o.gossip],
      ["X-JW-CLUSTER", this.#o.cluster],
      ["X-JW-TOKEN", token],
    ];
    return kind === "notify"
      ? formatMessage("NOTIFY * HTTP/1.1", [
        ["HOST", `${group}:${port}`],
        maxAge,
        ["NT", SSDP_TARGET],
        ["NTS", "ssdp:alive"],
        ...common,
      ])
      : formatMessage("HTTP/1.1 200 OK", [maxAge, ["EXT", ""], ["ST", SSDP_TARGET], ...common]);
  }

  /** The signed token, or undefined (logged and counted) when `sign` failed. */
  #token(fields: { kind: Payload["kind"]; gossip?: string }): string | undefined {
    let token: unknown;
    try {
      token = this.#o.sign(encodePayload({
        ...fields,
        cluster: this.#o.cluster,
        id: this.#o.serverId,
        t: this.#o.clock.now(),
      }));
    } catch (err) {
      token = err;
    }
    if (typeof token === "string" && /^[\x21-\x7e]+$/.test(token)) return token;
    this.#stats.sendFailed++;
    this.#log.warn("cannot sign an SSDP message; not sent", {
      error: token instanceof Error ? token.message : "not a printable token",
    });
    return undefined;
  }

  #send(
    socket: dgram.Socket,
    message: Uint8Array,
    port: number,
    host: string,
    what: "notify" | "search" | "answer",
  ): void {
    const failed = (err: unknown) => {
      this.#stats.sendFailed++;
      this.#log.debug("SSDP send failed", {
        to: formatHostPort(host, port),
        what,
        error: `${err}`,
      });
    };
    try {
      socket.send(message, port, host, (err) => {
        if (err) return failed(err);
        if (what === "notify") this.#stats.notifiesSent++;
        else if (what === "search") this.#stats.searchesSent++;
        else this.#stats.answersSent++;
      });
    } catch (err) {
      failed(err);
    }
  }

  // ---- receiving ----

  #receive(socket: dgram.Socket, data: Uint8Array, rinfo: dgram.RemoteInfo): void {
    if (this.#stopped) return;
    const from = formatHostPort(rinfo.address, rinfo.port);
    const ignore = (reason: keyof SsdpIgnored) => {
      this.#stats.ignored[reason]++;
      this.#log.debug("ignored SSDP datagram", { from, reason });
    };
    const message = data.byteLength <= MAX_DATAGRAM_BYTES ? parseMessage(data) : undefined;
    if (!message) return ignore("malformed");
    const h = message.headers;
    const target = message.kind === "notify" ? h.get("NT") : h.get("ST");
    if (target !== SSDP_TARGET || (message.kind === "notify" && h.get("NTS") !== "ssdp:alive")) {
      return ignore("otherTarget");
    }
    const id = /^uuid:(\S+)$/.exec(h.get("USN") ?? "")?.[1];
    const cluster = h.get("X-JW-CLUSTER");
    if (id === undefined || cluster === undefined) return ignore("malformed");
    if (id === this.#o.serverId) return ignore("own");
    if (cluster !== this.#o.cluster) return ignore("otherCluster");

    const token = h.get("X-JW-TOKEN");
    let signed: Uint8Array | undefined;
    try {
      signed = token ? this.#o.verify(token) : undefined;
    } catch {
      signed = undefined;
    }
    const payload = signed && decodePayload(signed);
    const kind = message.kind === "search" ? "search" : "alive";
    if (
      !payload || payload.kind !== kind || payload.cluster !== cluster || payload.id !== id ||
      payload.gossip !== (kind === "alive" ? h.get("LOCATION") : undefined)
    ) {
      return ignore("badToken");
    }
    if (Math.abs(this.#o.clock.now() - payload.t) > this.#s.windowMs) return ignore("stale");

    if (payload.kind === "search") {
      const last = this.#searches.get(id);
      if (last !== undefined && payload.t <= last) return ignore("replayed");
      remember(this.#searches, id, payload.t);
      this.#stats.searchesAccepted++;
      return this.#scheduleAnswer(socket, rinfo);
    }
    const gossip = payload.gossip!;
    if (!isReachable(gossip)) return ignore("malformed");
    const known = this.#peers.get(id);
    if (known && payload.t < known.t) return ignore("stale");
    if (message.kind === "notify") this.#stats.notifiesAccepted++;
    else this.#stats.answersAccepted++;
    const now = this.#o.clock.now();
    const isNew = !known || known.gossip !== gossip ||
      now - known.seenAt > 3 * this.#s.intervalMs;
    remember(this.#peers, id, { gossip, t: payload.t, seenAt: now });
    if (!isNew) return;
    this.#stats.peersReported++;
    this.#log.debug("SSDP found a server", { id, gossip, from });
    try {
      this.#o.onPeer(gossip);
    } catch (err) {
      this.#log.warn("SSDP peer handler failed", { gossip, error: String(err) });
    }
  }

  #scheduleAnswer(socket: dgram.Socket, rinfo: dgram.RemoteInfo): void {
    const to = formatHostPort(rinfo.address, rinfo.port);
    if (this.#pending.has(to) || this.#pending.size >= MAX_PENDING_ANSWERS) {
      this.#stats.answersDropped++;
      return;
    }
    const delay = Math.floor(this.#o.random.float() * SSDP_MAX_ANSWER_DELAY_MS);
    const timer = this.#o.clock.setTimeout(() => {
      this.#pending.delete(to);
      const answer = this.#stopped ? undefined : this.#announcement("answer");
      if (answer) this.#send(socket, answer, rinfo.port, rinfo.address, "answer");
    }, delay);
    this.#pending.set(to, timer);
  }

  // ---- lifecycle ----

  stop(): Promise<void> {
    this.#stopping ??= this.#stop();
    return this.#stopping;
  }

  async #stop(): Promise<void> {
    this.#stopped = true;
    if (this.#announceTimer !== undefined) this.#o.clock.clearTimeout(this.#announceTimer);
    for (const timer of this.#pending.values()) this.#o.clock.clearTimeout(timer);
    this.#pending.clear();
    const sockets = [...this.#senders, ...(this.#listener ? [this.#listener] : [])];
    this.#senders.length = 0;
    this.#listener = null;
    await Promise.all(sockets.map(closeSocket));
  }

  [Symbol.asyncDispose](): Promise<void> {
    return this.stop();
  }
}

/** True for "host:port" with a port and a host peers can reach (not 0.0.0.0 or ::). */
function isReachable(address: string): boolean {
  try {
    const { host, port } = parseHostPort(address);
    return port !== 0 && !isUnspecified(host);
  } catch {
    return false;
  }
}

function closeSocket(socket: dgram.Socket): Promise<void> {
  return new Promise((resolve) => {
    try {
      socket.close(() => resolve());
    } catch {
      resolve(); // never bound, or already closed
    }
  });
}

/**
 * `sign`/`verify` for {@link startSsdp} from the cluster keyring: a compact HS256 JWS
 * `HEADER.PAYLOAD.SIG` with header `{"alg":"HS256","typ":"jw-ssdp","kid":<key id>}`, signed with
 * the primary key and accepted under any installed key (so key rotation does not interrupt
 * discovery). Its `typ` differs from gossip and peer tokens', so none is accepted as another.
 * The cluster name and time are checked by startSsdp on the payload.
 */
export function keyringSsdpAuth(keyring: Keyring): SsdpAuth {
  const b64 = (bytes: Uint8Array | string) => Buffer.from(bytes).toString("base64url");
  return {
    sign(payload) {
      const key = keyring.primary();
      const head = `${b64(JSON.stringify({ alg: "HS256", typ: SSDP_TOKEN_TYPE, kid: key.id }))}.${
        b64(payload)
      }`;
      return `${head}.${createHmac("sha256", key.hmacKey).update(head).digest("base64url")}`;
    },
    verify(token) {
      const parts = token.split(".");
      if (parts.length !== 3 || !parts.every((p) => /^[A-Za-z0-9_-]+$/.test(p))) return undefined;
      let header: Record<string, unknown>;
      try {
        header = JSON.parse(Buffer.from(parts[0], "base64url").toString("utf8"));
      } catch {
        return undefined;
      }
      if (header?.alg !== "HS256" || header.typ !== SSDP_TOKEN_TYPE) return undefined;
      const key = typeof header.kid === "string" ? keyring.byId(header.kid) : undefined;
      if (!key) return undefined;
      const want = createHmac("sha256", key.hmacKey).update(`${parts[0]}.${parts[1]}`).digest();
      const got = Buffer.from(parts[2], "base64url");
      if (got.length !== want.length || !timingSafeEqual(got, want)) return undefined;
      return new Uint8Array(Buffer.from(parts[1], "base64url"));
    },
  };
}
