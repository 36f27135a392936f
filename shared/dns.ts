/**
 * DNS lookups for discovery, shared by servers (gossip seeds) and agents (server URLs):
 * "host:port" parsing, a resolver with one optional name server and a timeout on the
 * Clock that reports failures as values, and SRV ordering by priority and weight.
 *
 * The lookups go through the {@link DnsBackend} seam; {@link denoDns} is the real one
 * (`Deno.resolveDns`).
 *
 * @module
 */
import { isIP } from "node:net";
import { type Clock, realClock } from "./clock.ts";
import { JwError } from "./errors.ts";
import type { Logger } from "./log.ts";
import type { Random } from "./random.ts";

/** A parsed "host:port". `host` is an IP literal (IPv6 without brackets) or a host name. */
export interface HostPort {
  host: string;
  port: number;
}

const LABEL = "[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?";
const HOST_NAME = new RegExp(`^(?=.{1,253}$)${LABEL}(?:\\.${LABEL})*\\.?$`);

/** True when `host` is a syntactically valid DNS host name (underscores allowed, for SRV names). */
export function isHostName(host: string): boolean {
  // All-numeric dotted names ("1.2.3", "999.0.0.1") are broken IPv4, not host names.
  return HOST_NAME.test(host) && !/^[\d.]+$/.test(host);
}

/**
 * Parses "host:port": "10.0.0.1:7946", "[::1]:7946", "gossip.example.com:7946". IPv6
 * addresses must be in brackets; IPv6 text is normalised ("0:0::1" becomes "::1") and an
 * IPv4-mapped IPv6 address stays IPv6. The port may be 0 (callers that need a real port
 * check that themselves).
 *
 * @param what names the value in the error message, e.g. "seed" or "bind address".
 * @throws JwError `config` naming the text and what is wrong with it.
 */
export function parseHostPort(text: string, what = "address"): HostPort {
  const bad = (why: string) => new JwError("config", `bad ${what} ${JSON.stringify(text)}: ${why}`);
  let host: string;
  let portText: string;
  if (text.startsWith("[")) {
    const end = text.indexOf("]");
    if (end < 0) throw bad("missing ] after the IPv6 address");
    host = text.slice(1, end);
    if (isIP(host) !== 6) throw bad("not an IPv6 address inside [ ]");
    if (text[end + 1] !== ":") throw bad("expected host:port, like [::1]:7946");
    portText = text.slice(end + 2);
    host = normalizeIPv6(host);
  } else {
    const colon = text.lastIndexOf(":");
    if (colon < 0) throw bad("expected host:port, like 10.0.0.1:7946");
    host = text.slice(0, colon);
    portText = text.slice(colon + 1);
    if (host.includes(":")) throw bad("IPv6 addresses need brackets, like [::1]:7946");
    if (isIP(host) !== 4 && !isHostName(host)) throw bad("not an IPv4 address or host name");
  }
  if (!/^\d{1,5}$/.test(portText) || Number(portText) > 65535) {
    throw bad("the port must be a number from 0 to 65535");
  }
  return { host, port: Number(portText) };
}

/** Formats a host and port as "host:port", bracketing IPv6 addresses ("[::1]:7946"). */
export function formatHostPort(host: string, port: number): string {
  return host.includes(":") ? `[${host}]:${port}` : `${host}:${port}`;
}

/** The canonical text of an IPv6 address ("0:0::1" → "::1"); a zone id is kept as given. */
export function normalizeIPv6(ip: string): string {
  if (ip.includes("%")) return ip; // a zone id: URL cannot parse it, keep the text as given
  return new URL(`http://[${ip}]/`).hostname.slice(1, -1);
}

/** The DNS server every lookup of a {@link DnsResolver} asks. */
export interface NameServer {
  ipAddr: string;
  port: number;
}

/**
 * Parses a name server given as "ip:port" ("10.0.0.2:53", "[::1]:5353"); a host name is
 * refused, since resolving it would need a name server.
 * @throws JwError `config` naming the text.
 */
export function parseNameServer(text: string): NameServer {
  const ns = parseHostPort(text, "DNS name server");
  if (isIP(ns.host) === 0 || ns.port === 0) {
    throw new JwError(
      "config",
      `bad DNS name server ${JSON.stringify(text)}: expected ip:port, like 10.0.0.2:53`,
    );
  }
  return { ipAddr: ns.host, port: ns.port };
}

/** One SRV record (RFC 2782). */
export interface SrvRecord {
  priority: number;
  weight: number;
  port: number;
  target: string;
}

/** What a {@link DnsBackend} query is given. */
export interface DnsQueryOptions {
  /** The name server to ask; the system's configuration when absent. */
  nameServer?: NameServer;
  /** Aborts the query (the resolver's timeout). */
  signal: AbortSignal;
}

/**
 * The DNS seam. A name without records may resolve to [] or reject with
 * `Deno.errors.NotFound`; any other rejection is a failed lookup.
 */
export interface DnsBackend {
  /** The A (IPv4) or AAAA (IPv6) records of `name`. */
  addresses(name: string, type: "A" | "AAAA", options: DnsQueryOptions): Promise<string[]>;
  /** The SRV records of `name`. */
  srv(name: string, options: DnsQueryOptions): Promise<SrvRecord[]>;
}

/** The real {@link DnsBackend}: `Deno.resolveDns`. */
export const denoDns: DnsBackend = {
  addresses: (name, type, options) => Deno.resolveDns(name, type, options),
  srv: (name, options) => Deno.resolveDns(name, "SRV", options),
};

/** Default longest wait for one DNS answer (ms). */
export const DEFAULT_DNS_TIMEOUT_MS = 5000;

/** The answer to one lookup. */
export interface DnsLookup<T> {
  records: T[];
  /** Set when the lookup failed (no answer, timeout); an empty answer is not a failure. */
  error?: string;
}

/** Options for {@link DnsResolver}. */
export interface DnsResolverOptions {
  /** Times the lookups. Default the real clock. */
  clock?: Clock;
  /** Longest wait for one answer, in ms. Default {@link DEFAULT_DNS_TIMEOUT_MS}. */
  timeoutMs?: number;
  /** The name server asked for every lookup. Default: the system's configuration. */
  nameServer?: NameServer;
  /** Default {@link denoDns}. */
  backend?: DnsBackend;
}

/**
 * Lookups against one name server, each bounded by a timeout on the Clock; failures come
 * back as values (`error`), never as rejections. Lookups may run concurrently.
 */
export class DnsResolver {
  readonly #clock: Clock;
  readonly #timeoutMs: number;
  readonly #nameServer: NameServer | undefined;
  readonly #backend: DnsBackend;

  /** @throws JwError `config` when `timeoutMs` is not above 0. */
  constructor(options: DnsResolverOptions = {}) {
    const timeoutMs = options.timeoutMs ?? DEFAULT_DNS_TIMEOUT_MS;
    if (!(timeoutMs > 0)) throw new JwError("config", `bad DNS timeout ${timeoutMs}: must be > 0`);
    this.#clock = options.clock ?? realClock;
    this.#timeoutMs = timeoutMs;
    this.#nameServer = options.nameServer;
    this.#backend = options.backend ?? denoDns;
  }

  /**
   * A host's IPv4 then IPv6 addresses (IPv6 normalised); logs a warning naming `what` and
   * returns [] when it has none.
   */
  async addresses(host: string, logger: Logger, what: string): Promise<string[]> {
    const types = ["A", "AAAA"] as const;
    const answers = await Promise.all(types.map((type) => this.lookup(host, type)));
    const addresses = answers.flatMap((a) =>
      a.records.map((ip) => (isIP(ip) === 6 ? normalizeIPv6(ip) : ip))
    );
    const errors = answers.map((a) => a.error).filter((e) => e !== undefined);
    if (addresses.length === 0) {
      if (errors.length > 0) {
        logger.warn(`cannot resolve ${what}; skipping it`, { host, error: errors[0] });
      } else {
        logger.warn(`${what} has no addresses; skipping it`, { host });
      }
    }
    return addresses;
  }

  /** One lookup of `name`'s records of `type`. */
  lookup(name: string, type: "A" | "AAAA"): Promise<DnsLookup<string>>;
  lookup(name: string, type: "SRV"): Promise<DnsLookup<SrvRecord>>;
  lookup(
    name: string,
    type: "A" | "AAAA" | "SRV",
  ): Promise<DnsLookup<string> | DnsLookup<SrvRecord>> {
    return type === "SRV"
      ? this.#query((options) => this.#backend.srv(name, options))
      : this.#query((options) => this.#backend.addresses(name, type, options));
  }

  async #query<T>(resolve: (options: DnsQueryOptions) => Promise<T[]>): Promise<DnsLookup<T>> {
    const abort = new AbortController();
    const timer = this.#clock.setTimeout(() => abort.abort(), this.#timeoutMs);
    try {
      const options: DnsQueryOptions = { signal: abort.signal };
      if (this.#nameServer) options.nameServer = this.#nameServer;
      return { records: await resolve(options) };
    } catch (err) {
      if (err instanceof Deno.errors.NotFound) return { records: [] };
      if (abort.signal.aborted) {
        return { records: [], error: `timed out after ${this.#timeoutMs} ms` };
      }
      return { records: [], error: err instanceof Error ? err.message : String(err) };
    } finally {
      this.#clock.clearTimeout(timer);
    }
  }
}

/**
 * The usable SRV records (a target of "." means "no service here"; port 0 is dropped) in the
 * order to try them: priority lowest first. Within one priority, without `random`, weight
 * highest first (then target and port, so the order is stable); with `random`, a weighted
 * random order as RFC 2782 describes — each next record is drawn with probability
 * proportional to its weight, records of weight 0 after the others in random order — so
 * many clients reading the same records spread over the targets.
 */
export function orderSrv(records: readonly SrvRecord[], random?: Random): SrvRecord[] {
  const sorted = records
    .filter((r) => r.target !== "." && r.target !== "" && r.port !== 0)
    .sort((a, b) =>
      a.priority - b.priority || b.weight - a.weight || a.target.localeCompare(b.target) ||
      a.port - b.port
    );
  if (!random) return sorted;
  const out: SrvRecord[] = [];
  for (let i = 0; i < sorted.length;) {
    let end = i;
    while (end < sorted.length && sorted[end].priority === sorted[i].priority) end++;
    const group = sorted.slice(i, end);
    while (group.length > 0) {
      const total = group.reduce((sum, r) => sum + Math.max(0, r.weight), 0);
      let pick: number;
      if (total > 0) {
        const draw = random.float() * total;
        let sum = 0;
        pick = group.findIndex((r) => (sum += Math.max(0, r.weight)) > draw);
        if (pick < 0) pick = group.findLastIndex((r) => r.weight > 0);
      } else {
        pick = Math.min(group.length - 1, Math.floor(random.float() * group.length));
      }
      out.push(group.splice(pick, 1)[0]);
    }
    i = end;
  }
  return out;
}
