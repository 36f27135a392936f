/**
 * Seed discovery: the "host:port" gossip addresses a server first joins. Seeds come from a
 * static list (IP literals, or host names resolved to A/AAAA records) and from DNS SRV records
 * (each target resolved to A/AAAA, the port taken from the record). A DNS failure is logged at
 * warn and that source is skipped, so a cluster still starts from the seeds that did resolve.
 *
 * Also the address helpers the gossip transports share: {@link parseHostPort} and
 * {@link formatHostPort}.
 *
 * @module
 */
import { isIP } from "node:net";
import { type Clock, realClock } from "../../shared/clock.ts";
import { JwError } from "../../shared/errors.ts";
import type { Logger } from "../../shared/log.ts";

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

function normalizeIPv6(ip: string): string {
  if (ip.includes("%")) return ip; // a zone id: URL cannot parse it, keep the text as given
  return new URL(`http://[${ip}]/`).hostname.slice(1, -1);
}

/** Where SRV records for seeds are looked up. */
export interface SeedDnsOptions {
  /** The SRV name, e.g. "_jw-gossip._udp.example.com". */
  name: string;
  /**
   * "ip:port" of the DNS server used for every lookup (the SRV name, its targets and static
   * seed host names). Default: the system's resolver configuration.
   */
  nameServer?: string;
}

/** Options for {@link resolveSeeds}. */
export interface ResolveSeedsOptions {
  /** Static seeds as "host:port"; host names are resolved to A and AAAA records. */
  seeds: readonly string[];
  /** SRV discovery; none by default. */
  dns?: SeedDnsOptions;
  /** Receives a warning for every source skipped. */
  logger: Logger;
  /** Times the DNS lookups. Default the real clock. */
  clock?: Clock;
  /** Longest wait for one DNS answer, in ms. Default 5000. */
  timeoutMs?: number;
}

/** Default longest wait for one DNS answer (ms). */
export const DEFAULT_DNS_TIMEOUT_MS = 5000;

type AddressRecordType = "A" | "AAAA";

interface Lookup<T> {
  records: T[];
  /** Set when the lookup failed (no answer, timeout); an empty answer is not a failure. */
  error?: string;
}

/**
 * Resolves the seed list: static seeds in the order given, then the SRV targets ordered by
 * priority (lowest first), then weight (highest first), each host's IPv4 addresses before its
 * IPv6 ones. Duplicates are dropped (the first occurrence stays). The lookups run at the same
 * time; each waits at most `timeoutMs`.
 *
 * A static seed or SRV target whose name does not resolve, an SRV name without records, and an
 * unreachable name server are logged at warn and skipped: the result may be empty.
 *
 * @throws JwError `config` for a malformed seed, SRV name or name server (before any lookup).
 */
export async function resolveSeeds(options: ResolveSeedsOptions): Promise<string[]> {
  const { logger } = options;
  const statics = options.seeds.map((seed) => {
    const parsed = parseHostPort(seed, "seed");
    if (parsed.port === 0) throw new JwError("config", `bad seed ${JSON.stringify(seed)}: port 0`);
    return parsed;
  });
  const dns = options.dns;
  if (dns && !isHostName(dns.name)) {
    throw new JwError("config", `bad DNS seed name ${JSON.stringify(dns.name)}`);
  }
  let nameServer: Deno.ResolveDnsOptions["nameServer"];
  if (dns?.nameServer !== undefined) {
    const ns = parseHostPort(dns.nameServer, "DNS name server");
    if (isIP(ns.host) === 0 || ns.port === 0) {
      throw new JwError(
        "config",
        `bad DNS name server ${JSON.stringify(dns.nameServer)}: expected ip:port, like 10.0.0.2:53`,
      );
    }
    nameServer = { ipAddr: ns.host, port: ns.port };
  }
  const timeoutMs = options.timeoutMs ?? DEFAULT_DNS_TIMEOUT_MS;
  if (!(timeoutMs > 0)) throw new JwError("config", `bad DNS timeout ${timeoutMs}: must be > 0`);
  const resolver = new Resolver(options.clock ?? realClock, timeoutMs, nameServer);

  const staticLists = statics.map(async ({ host, port }) => {
    if (isIP(host) !== 0) return [formatHostPort(host, port)];
    const addresses = await resolver.addresses(host, logger, "seed host");
    return addresses.map((ip) => formatHostPort(ip, port));
  });
  const srvList = dns ? resolveSrv(dns.name, resolver, logger) : Promise.resolve([]);
  const lists = [...await Promise.all(staticLists), await srvList];
  return [...new Set(lists.flat())];
}

async function resolveSrv(name: string, resolver: Resolver, logger: Logger): Promise<string[]> {
  const srv = await resolver.lookup(name, "SRV");
  if (srv.error) {
    logger.warn("DNS seed lookup failed; skipping DNS seeds", { name, error: srv.error });
    return [];
  }
  const records = srv.records
    .filter((r) => r.target !== "." && r.target !== "" && r.port !== 0)
    .sort((a, b) =>
      a.priority - b.priority || b.weight - a.weight || a.target.localeCompare(b.target) ||
      a.port - b.port
    );
  if (records.length === 0) {
    logger.warn("no SRV records for DNS seeds", { name });
    return [];
  }
  const targets = new Map<string, Promise<string[]>>();
  for (const r of records) {
    if (!targets.has(r.target)) {
      targets.set(r.target, resolver.addresses(r.target.replace(/\.$/, ""), logger, "SRV target"));
    }
  }
  const out: string[] = [];
  for (const r of records) {
    for (const ip of await targets.get(r.target)!) out.push(formatHostPort(ip, r.port));
  }
  return out;
}

/** Deno.resolveDns with one name server, a timeout on the Clock, and failures as values. */
class Resolver {
  readonly #clock: Clock;
  readonly #timeoutMs: number;
  readonly #nameServer: Deno.ResolveDnsOptions["nameServer"];

  constructor(clock: Clock, timeoutMs: number, nameServer: Deno.ResolveDnsOptions["nameServer"]) {
    this.#clock = clock;
    this.#timeoutMs = timeoutMs;
    this.#nameServer = nameServer;
  }

  /** A host's IPv4 then IPv6 addresses; logs a warning and returns [] when it has none. */
  async addresses(host: string, logger: Logger, what: string): Promise<string[]> {
    const types: AddressRecordType[] = ["A", "AAAA"];
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

  lookup(name: string, type: AddressRecordType): Promise<Lookup<string>>;
  lookup(name: string, type: "SRV"): Promise<Lookup<Deno.SrvRecord>>;
  lookup(
    name: string,
    type: AddressRecordType | "SRV",
  ): Promise<Lookup<string> | Lookup<Deno.SrvRecord>> {
    return type === "SRV"
      ? this.#query((options) => Deno.resolveDns(name, type, options))
      : this.#query((options) => Deno.resolveDns(name, type, options));
  }

  async #query<T>(
    resolve: (options: Deno.ResolveDnsOptions) => Promise<T[]>,
  ): Promise<Lookup<T>> {
    const abort = new AbortController();
    const timer = this.#clock.setTimeout(() => abort.abort(), this.#timeoutMs);
    try {
      return { records: await resolve({ nameServer: this.#nameServer, signal: abort.signal }) };
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
