/**
 * Where an agent finds servers when it has nothing better (no server list from a server):
 * DNS SRV records first, then the configured seed URLs. Every URL comes out as the agent
 * endpoint (`ws(s)://…/v1/agent`, see url.ts), once.
 *
 * @module
 */
import { type Clock, realClock } from "../shared/clock.ts";
import {
  type DnsBackend,
  DnsResolver,
  formatHostPort,
  isHostName,
  orderSrv,
  parseNameServer,
  type SrvRecord,
} from "../shared/dns.ts";
import { JwError } from "../shared/errors.ts";
import type { Logger } from "../shared/log.ts";
import { cryptoRandom, type Random } from "../shared/random.ts";
import { agentUrl } from "./url.ts";

/** Servers found by DNS SRV. */
export interface DnsDiscoveryOptions {
  /** The SRV name, e.g. "_jw._tcp.example.com"; each record's target and port is a server. */
  name: string;
  /**
   * "ip:port" of the DNS server asked instead of the system's. It is asked for the targets'
   * addresses too, and the URLs then carry those addresses rather than the target names
   * (which the system resolver would not know). Default: the system's configuration.
   */
  nameServer?: string;
  /** Connect to the targets with https (wss) instead of http (ws). Default false. */
  tls?: boolean;
}

/** Options for {@link createDiscovery}. */
export interface DiscoveryOptions {
  /** SRV discovery; none by default. */
  dns?: DnsDiscoveryOptions;
  /** Server URLs (http(s) or ws(s)), tried after the SRV targets in this order. Default []. */
  seeds?: readonly string[];
  /** Receives a warning for every lookup that fails. */
  logger: Logger;
  /** Times the DNS lookups. Default the real clock. */
  clock?: Clock;
  /** Orders SRV records of equal priority by weight (RFC 2782). Default `cryptoRandom`. */
  random?: Random;
  /** Longest wait for one DNS answer, in ms. Default 5000. */
  timeoutMs?: number;
  /** The DNS seam. Default `Deno.resolveDns`. */
  dnsBackend?: DnsBackend;
}

/** The discovered server URLs. */
export interface Discovery {
  /** True when a DNS name or at least one seed is configured. */
  readonly configured: boolean;
  /**
   * The URLs to try, looked up now: the SRV targets (priority order, weighted random within
   * a priority), then the seeds; duplicates dropped. A failed SRV lookup is logged at warn
   * and the last good answer is used instead (none before the first), so this never
   * rejects; the result may be empty.
   */
  urls(): Promise<string[]>;
}

/**
 * Creates the discovery, checking the configuration before any lookup.
 * @throws JwError `config` for a seed that is not an http(s)/ws(s) URL, a bad SRV name or a
 *   bad name server.
 */
export function createDiscovery(options: DiscoveryOptions): Discovery {
  const seeds = (options.seeds ?? []).map((seed) => agentUrl(seed));
  const dns = options.dns;
  let srv: (() => Promise<string[]>) | undefined;
  if (dns) {
    if (!isHostName(dns.name)) {
      throw new JwError("config", `bad DNS name ${JSON.stringify(dns.name)}: not a host name`);
    }
    const nameServer = dns.nameServer === undefined ? undefined : parseNameServer(dns.nameServer);
    const resolver = new DnsResolver({
      clock: options.clock ?? realClock,
      timeoutMs: options.timeoutMs,
      nameServer,
      backend: options.dnsBackend,
    });
    const scheme = dns.tls ? "https" : "http";
    const random = options.random ?? cryptoRandom;
    const { logger } = options;
    let last: string[] = [];
    srv = async () => {
      const answer = await resolver.lookup(dns.name, "SRV");
      if (answer.error !== undefined) {
        logger.warn("DNS server lookup failed", {
          name: dns.name,
          error: answer.error,
          ...(last.length ? { using: "the last answer" } : {}),
        });
        return last;
      }
      const records = orderSrv(answer.records, random);
      if (records.length === 0) logger.warn("no SRV records for servers", { name: dns.name });
      const urls = nameServer === undefined
        ? records.flatMap((r) => urlOf(scheme, `${r.target.replace(/\.$/, "")}:${r.port}`))
        : await addressUrls(records, resolver, scheme, logger);
      last = urls;
      return urls;
    };
  }
  return {
    configured: dns !== undefined || seeds.length > 0,
    async urls() {
      const found = srv ? await srv() : [];
      return [...new Set([...found, ...seeds])];
    },
  };
}

/** The agent URL of `scheme://hostPort`, or none when that is not a URL. */
function urlOf(scheme: string, hostPort: string): string[] {
  try {
    return [agentUrl(`${scheme}://${hostPort}`)];
  } catch {
    return [];
  }
}

/** URLs with each target's addresses (IPv4 first), in the records' order. */
async function addressUrls(
  records: readonly SrvRecord[],
  resolver: DnsResolver,
  scheme: string,
  logger: Logger,
): Promise<string[]> {
  const targets = new Map<string, Promise<string[]>>();
  for (const r of records) {
    if (!targets.has(r.target)) {
      targets.set(r.target, resolver.addresses(r.target.replace(/\.$/, ""), logger, "SRV target"));
    }
  }
  const out: string[] = [];
  for (const r of records) {
    for (const ip of await targets.get(r.target)!) {
      out.push(...urlOf(scheme, formatHostPort(ip, r.port)));
    }
  }
  return out;
}
