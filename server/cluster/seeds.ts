/**
 * Seed discovery: the "host:port" gossip addresses a server first joins. Seeds come from a
 * static list (IP literals, or host names resolved to A/AAAA records) and from DNS SRV records
 * (each target resolved to A/AAAA, the port taken from the record). A DNS failure is logged at
 * warn and that source is skipped, so a cluster still starts from the seeds that did resolve.
 *
 * The lookups themselves are shared/dns.ts (one name server, a timeout on the Clock, SRV
 * ordering). The address helpers the gossip transports share, {@link parseHostPort} and
 * {@link formatHostPort}, are re-exported from there.
 *
 * @module
 */
import { isIP } from "node:net";
import { type Clock, realClock } from "../../shared/clock.ts";
import {
  DEFAULT_DNS_TIMEOUT_MS,
  DnsResolver,
  formatHostPort,
  isHostName,
  orderSrv,
  parseHostPort,
  parseNameServer,
} from "../../shared/dns.ts";
import { JwError } from "../../shared/errors.ts";
import type { Logger } from "../../shared/log.ts";

export {
  DEFAULT_DNS_TIMEOUT_MS,
  formatHostPort,
  type HostPort,
  isHostName,
  parseHostPort,
} from "../../shared/dns.ts";

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
  const resolver = new DnsResolver({
    clock: options.clock ?? realClock,
    timeoutMs: options.timeoutMs ?? DEFAULT_DNS_TIMEOUT_MS,
    nameServer: dns?.nameServer === undefined ? undefined : parseNameServer(dns.nameServer),
  });

  const staticLists = statics.map(async ({ host, port }) => {
    if (isIP(host) !== 0) return [formatHostPort(host, port)];
    const addresses = await resolver.addresses(host, logger, "seed host");
    return addresses.map((ip) => formatHostPort(ip, port));
  });
  const srvList = dns ? resolveSrv(dns.name, resolver, logger) : Promise.resolve([]);
  const lists = [...await Promise.all(staticLists), await srvList];
  return [...new Set(lists.flat())];
}

async function resolveSrv(name: string, resolver: DnsResolver, logger: Logger): Promise<string[]> {
  const srv = await resolver.lookup(name, "SRV");
  if (srv.error) {
    logger.warn("DNS seed lookup failed; skipping DNS seeds", { name, error: srv.error });
    return [];
  }
  const records = orderSrv(srv.records);
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
