/**
 * A private dnsmasq serving fixed SRV and A/AAAA records on a free loopback port, for tests
 * of DNS seed discovery. Needs the Debian package `dnsmasq-base`
 * (scripts/install-test-deps.sh installs it).
 *
 * ```ts
 * await using dns = await startDnsmasq({
 *   srv: [{ name: "_jw-gossip._udp.example.test", target: "s1.example.test", port: 7946 }],
 *   hosts: [{ name: "s1.example.test", addresses: ["127.0.0.1"] }],
 * });
 * await resolveSeeds({ seeds: [], dns: { name: "...", nameServer: dns.nameServer }, logger });
 * ```
 *
 * @module
 */
import dgram from "node:dgram";
import { findProgram, pumpLines } from "./process.ts";

/** One SRV record. */
export interface DnsmasqSrv {
  /** e.g. "_jw-gossip._udp.example.test". */
  name: string;
  /** The target host name. */
  target: string;
  port: number;
  /** Default 0. */
  priority?: number;
  /** Default 0. */
  weight?: number;
}

/** A host name and its addresses (IPv4 and/or IPv6). */
export interface DnsmasqHost {
  name: string;
  addresses: string[];
}

/** Options for {@link startDnsmasq}. */
export interface DnsmasqOptions {
  srv?: DnsmasqSrv[];
  hosts?: DnsmasqHost[];
  /**
   * Domains answered from the records above only (a name without records gets NXDOMAIN at
   * once, never a forward). Default ["test"].
   */
  localDomains?: string[];
  /** Longest wait for dnsmasq to start, in ms. Default 10000. */
  startTimeoutMs?: number;
}

const DNSMASQ_PATHS = ["/usr/sbin/dnsmasq", "/sbin/dnsmasq", "/usr/bin/dnsmasq"];

/** A free UDP port on 127.0.0.1 (dnsmasq binds UDP and TCP on it; a clash is retried). */
async function freeUdpPort(): Promise<number> {
  const socket = dgram.createSocket("udp4");
  await new Promise<void>((resolve, reject) => {
    socket.once("error", reject);
    socket.bind(0, "127.0.0.1", () => resolve());
  });
  const { port } = socket.address();
  await new Promise<void>((resolve) => socket.close(() => resolve()));
  return port;
}

/** A running dnsmasq in the foreground; {@link Dnsmasq.stop} kills it. */
export class Dnsmasq implements AsyncDisposable {
  /** The UDP/TCP port it answers on (127.0.0.1). */
  readonly port: number;
  /** Everything it logged (stderr), line by line. */
  readonly log: string[];
  readonly #child: Deno.ChildProcess;
  readonly #pump: Promise<void>;

  constructor(port: number, child: Deno.ChildProcess, log: string[], pump: Promise<void>) {
    this.port = port;
    this.#child = child;
    this.log = log;
    this.#pump = pump;
  }

  /** "127.0.0.1:port", the form `resolveSeeds` takes as `dns.nameServer`. */
  get nameServer(): string {
    return `127.0.0.1:${this.port}`;
  }

  /** Kills dnsmasq and waits for it to exit. Idempotent. */
  async stop(): Promise<void> {
    try {
      this.#child.kill("SIGTERM");
    } catch {
      // already exited
    }
    await this.#child.status;
    await this.#pump;
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.stop();
  }
}

function recordArgs(options: DnsmasqOptions): string[] {
  const args: string[] = [];
  for (const domain of options.localDomains ?? ["test"]) args.push(`--local=/${domain}/`);
  for (const s of options.srv ?? []) {
    args.push(`--srv-host=${s.name},${s.target},${s.port},${s.priority ?? 0},${s.weight ?? 0}`);
  }
  for (const h of options.hosts ?? []) {
    args.push(`--host-record=${h.name},${h.addresses.join(",")}`);
  }
  return args;
}

/**
 * Starts dnsmasq on a free port of 127.0.0.1 serving only the given records, and resolves
 * once it answers queries. Retries on another port when the chosen one is taken.
 */
export async function startDnsmasq(options: DnsmasqOptions = {}): Promise<Dnsmasq> {
  const path = findProgram(DNSMASQ_PATHS, "dnsmasq", "dnsmasq-base");
  const failures: string[] = [];
  for (let attempt = 0; attempt < 5; attempt++) {
    const port = await freeUdpPort();
    const child = new Deno.Command(path, {
      args: [
        `--port=${port}`,
        "--listen-address=127.0.0.1",
        "--bind-interfaces",
        "--no-resolv",
        "--no-hosts",
        "--no-poll",
        "--conf-file=/dev/null",
        "--pid-file",
        "--keep-in-foreground",
        "--log-facility=-",
        ...recordArgs(options),
      ],
      stdin: "null",
      stdout: "null",
      stderr: "piped",
    }).spawn();
    const log: string[] = [];
    let onLine: (line: string) => void = () => {};
    const pump = pumpLines(child.stderr, (line) => {
      log.push(line);
      onLine(line);
    });
    // dnsmasq binds its sockets before it logs "started".
    let timer: ReturnType<typeof setTimeout> | undefined;
    const started = await new Promise<boolean>((resolve) => {
      if (log.some((l) => l.includes(": started,"))) return resolve(true);
      onLine = (line) => {
        if (line.includes(": started,")) resolve(true);
      };
      child.status.then(() => resolve(false));
      timer = setTimeout(() => resolve(false), options.startTimeoutMs ?? 10_000);
    });
    clearTimeout(timer);
    onLine = () => {};
    const dnsmasq = new Dnsmasq(port, child, log, pump);
    if (started) return dnsmasq;
    await dnsmasq.stop();
    failures.push(`port ${port}: ${log.join(" | ") || "no output"}`);
  }
  throw new Error(`dnsmasq did not start:\n${failures.join("\n")}`);
}
