import assert from "node:assert/strict";
import { FakeClock } from "../shared/clock.ts";
import type { DnsBackend, SrvRecord } from "../shared/dns.ts";
import { isJwError } from "../shared/errors.ts";
import { createLogger, type Logger, silentLogger } from "../shared/log.ts";
import type { Random } from "../shared/random.ts";
import { startDnsmasq } from "../tests/helpers/dnsmasq.ts";
import { createDiscovery, type DiscoveryOptions } from "./discovery.ts";

const NAME = "_jw._tcp.example.test";

/** A Random whose floats are always `f`. */
function fixedRandom(f: number): Random {
  return { float: () => f, bytes: (n) => new Uint8Array(n) };
}

function recordingLogger(): { logger: Logger; lines: string[] } {
  const lines: string[] = [];
  return {
    logger: createLogger("discovery", { level: "debug", sink: (l) => lines.push(l) }),
    lines,
  };
}

/** A DNS backend answering from `srv` and `hosts`; `fail` makes SRV lookups fail. */
class FakeDns implements DnsBackend {
  fail = false;
  srvLookups = 0;
  constructor(
    public records: SrvRecord[],
    readonly hosts: Record<string, string[]> = {},
  ) {}
  srv(name: string): Promise<SrvRecord[]> {
    this.srvLookups++;
    if (this.fail) return Promise.reject(new Error("connection refused"));
    return Promise.resolve(name === NAME ? this.records : []);
  }
  addresses(name: string, type: "A" | "AAAA"): Promise<string[]> {
    const all = this.hosts[name] ?? [];
    return Promise.resolve(all.filter((ip) => ip.includes(":") === (type === "AAAA")));
  }
}

function discovery(dns: FakeDns, over: Partial<DiscoveryOptions> = {}) {
  return createDiscovery({
    dns: { name: NAME },
    logger: silentLogger,
    clock: new FakeClock(),
    random: fixedRandom(0),
    dnsBackend: dns,
    ...over,
  });
}

Deno.test("Discovery lists SRV targets by priority before the seeds, each once", async () => {
  const dns = new FakeDns([
    { priority: 10, weight: 0, port: 7400, target: "backup.example.test." },
    { priority: 0, weight: 0, port: 7400, target: "main.example.test." },
    { priority: 0, weight: 0, port: 7400, target: "." },
  ]);
  const d = discovery(dns, {
    seeds: ["https://seed.example.test", "http://main.example.test:7400", "ws://10.0.0.9:80/x"],
  });
  assert.equal(d.configured, true);
  assert.deepEqual(await d.urls(), [
    "ws://main.example.test:7400/v1/agent",
    "ws://backup.example.test:7400/v1/agent",
    "wss://seed.example.test/v1/agent",
    "ws://10.0.0.9/x",
  ]);
  assert.equal(dns.srvLookups, 1);
});

Deno.test("Discovery connects to SRV targets with TLS when asked", async () => {
  const dns = new FakeDns([{ priority: 0, weight: 0, port: 443, target: "s1.example.test." }]);
  const d = discovery(dns, { dns: { name: NAME, tls: true } });
  assert.deepEqual(await d.urls(), ["wss://s1.example.test/v1/agent"]);
});

Deno.test("Discovery with its own name server resolves the targets through it to addresses", async () => {
  const dns = new FakeDns(
    [
      { priority: 0, weight: 0, port: 7400, target: "s1.example.test." },
      { priority: 1, weight: 0, port: 7401, target: "s2.example.test." },
    ],
    { "s1.example.test": ["127.0.0.1", "::1"], "s2.example.test": ["127.0.0.2"] },
  );
  const d = discovery(dns, { dns: { name: NAME, nameServer: "127.0.0.1:5353" } });
  assert.deepEqual(await d.urls(), [
    "ws://127.0.0.1:7400/v1/agent",
    "ws://[::1]:7400/v1/agent",
    "ws://127.0.0.2:7401/v1/agent",
  ]);
});

Deno.test("Discovery keeps the last good SRV answer when a lookup fails, and warns", async () => {
  const dns = new FakeDns([{ priority: 0, weight: 0, port: 7400, target: "s1.example.test." }]);
  const { logger, lines } = recordingLogger();
  const d = discovery(dns, { seeds: ["http://seed.example.test:1"], logger });
  dns.fail = true;
  assert.deepEqual(await d.urls(), ["ws://seed.example.test:1/v1/agent"], "nothing good yet");
  dns.fail = false;
  const good = await d.urls();
  assert.equal(good.length, 2);
  dns.fail = true;
  assert.deepEqual(await d.urls(), good);
  dns.records = [];
  dns.fail = false;
  assert.deepEqual(
    await d.urls(),
    ["ws://seed.example.test:1/v1/agent"],
    "an empty answer is news",
  );
  assert.equal(lines.filter((l) => /WARN .*DNS server lookup failed/.test(l)).length, 2);
  assert.match(lines.at(-2)!, /using="the last answer"/);
  assert.match(lines.at(-1)!, /WARN .*no SRV records for servers/);
});

Deno.test("Discovery refuses a bad configuration before any lookup", async (t) => {
  const cases: [string, Partial<DiscoveryOptions>, RegExp][] = [
    ["seed not a URL", { seeds: ["seed.example.test:7400"] }, /seed\.example\.test:7400/],
    ["seed of another scheme", { seeds: ["ftp://x.example.test"] }, /must be http/],
    ["bad SRV name", { dns: { name: "not a name" } }, /bad DNS name "not a name"/],
    ["name server by name", { dns: { name: NAME, nameServer: "ns.test:53" } }, /expected ip:port/],
  ];
  for (const [name, over, message] of cases) {
    await t.step(name, () => {
      const dns = new FakeDns([]);
      assert.throws(
        () => discovery(dns, over),
        (e) => isJwError(e, "config") && message.test(e.message),
      );
      assert.equal(dns.srvLookups, 0);
    });
  }
  await t.step("nothing configured", async () => {
    const d = createDiscovery({ logger: silentLogger });
    assert.equal(d.configured, false);
    assert.deepEqual(await d.urls(), []);
  });
});

Deno.test("Discovery finds servers in SRV records served by a real DNS server", async () => {
  await using dns = await startDnsmasq({
    srv: [
      { name: NAME, target: "s2.example.test", port: 7402, priority: 10 },
      { name: NAME, target: "s1.example.test", port: 7401 },
    ],
    hosts: [
      { name: "s1.example.test", addresses: ["127.0.0.1"] },
      { name: "s2.example.test", addresses: ["127.0.0.2"] },
    ],
  });
  const d = createDiscovery({
    dns: { name: NAME, nameServer: dns.nameServer },
    seeds: ["http://127.0.0.9:7400"],
    logger: silentLogger,
  });
  assert.deepEqual(await d.urls(), [
    "ws://127.0.0.1:7401/v1/agent",
    "ws://127.0.0.2:7402/v1/agent",
    "ws://127.0.0.9:7400/v1/agent",
  ]);
});
