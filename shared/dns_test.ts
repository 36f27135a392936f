import assert from "node:assert/strict";
import { FakeClock } from "./clock.ts";
import { type DnsBackend, DnsResolver, orderSrv, parseNameServer, type SrvRecord } from "./dns.ts";
import { isJwError } from "./errors.ts";
import { createLogger, type Logger } from "./log.ts";
import { type Random, seededRandom } from "./random.ts";
import { startDnsmasq } from "../tests/helpers/dnsmasq.ts";

function recordingLogger(): { logger: Logger; lines: string[] } {
  const lines: string[] = [];
  return { logger: createLogger("dns", { level: "debug", sink: (l) => lines.push(l) }), lines };
}

function srv(target: string, port: number, priority = 0, weight = 0): SrvRecord {
  return { target, port, priority, weight };
}

function fixedRandom(f: number): Random {
  return { float: () => f, bytes: (n) => new Uint8Array(n) };
}

Deno.test("orderSrv() drops unusable records and orders by priority, then weight", () => {
  const records = [
    srv("c.test.", 3, 10, 5),
    srv(".", 1), // "no service"
    srv("a.test.", 1, 0, 10),
    srv("zero.test.", 0), // port 0
    srv("b.test.", 2, 0, 50),
    srv("a.test.", 4, 0, 10),
  ];
  assert.deepEqual(orderSrv(records).map((r) => `${r.target}:${r.port}`), [
    "b.test.:2",
    "a.test.:1",
    "a.test.:4",
    "c.test.:3",
  ]);
});

Deno.test("orderSrv() with a Random draws by weight within a priority, never across", () => {
  const records = [
    srv("heavy.test.", 1, 0, 90),
    srv("light.test.", 2, 0, 10),
    srv("none.test.", 3, 0, 0),
    srv("backup.test.", 4, 5, 100),
  ];
  const random = seededRandom(7);
  const firsts = new Map<string, number>();
  for (let i = 0; i < 2000; i++) {
    const order = orderSrv(records, random).map((r) => r.target);
    assert.equal(order.length, 4);
    assert.equal(order[2], "none.test.", "weight 0 after the weighted ones");
    assert.equal(order[3], "backup.test.", "a higher priority value always comes last");
    firsts.set(order[0], (firsts.get(order[0]) ?? 0) + 1);
  }
  const heavy = (firsts.get("heavy.test.") ?? 0) / 2000;
  assert.ok(heavy > 0.86 && heavy < 0.94, `heavy first ${heavy} of the time, expected ~0.9`);
  // A draw at the very bottom or top of the range picks the first or last weighted record.
  assert.equal(orderSrv(records, fixedRandom(0))[0].target, "heavy.test.");
  assert.equal(orderSrv(records, fixedRandom(0.999999))[0].target, "light.test.");
  // All weights 0: a uniform shuffle, so clients still spread.
  const flat = [srv("x.test.", 1), srv("y.test.", 2), srv("z.test.", 3)];
  const seen = new Set<string>();
  for (let i = 0; i < 200; i++) seen.add(orderSrv(flat, random)[0].target);
  assert.equal(seen.size, 3);
});

Deno.test("parseNameServer() takes ip:port only", async (t) => {
  assert.deepEqual(parseNameServer("10.0.0.2:53"), { ipAddr: "10.0.0.2", port: 53 });
  assert.deepEqual(parseNameServer("[0::1]:5353"), { ipAddr: "::1", port: 5353 });
  const bad: [string, RegExp][] = [
    ["ns.example:53", /expected ip:port/],
    ["10.0.0.2", /bad DNS name server/],
    ["10.0.0.2:0", /expected ip:port/],
  ];
  for (const [text, message] of bad) {
    await t.step(text, () => {
      assert.throws(
        () => parseNameServer(text),
        (e) => isJwError(e, "config") && message.test(e.message),
      );
    });
  }
});

Deno.test("DnsResolver reports failures as values: none, an error, a timeout on the Clock", async () => {
  const clock = new FakeClock();
  const backend: DnsBackend = {
    srv: (name, options) => {
      if (name === "_none.test") return Promise.reject(new Deno.errors.NotFound("no records"));
      if (name === "_broken.test") return Promise.reject(new Error("server failure"));
      // Hangs until the resolver's timeout aborts it.
      return new Promise((_, reject) => {
        options.signal.addEventListener("abort", () => reject(new Error("aborted")));
      });
    },
    addresses: (_name, type) => Promise.resolve(type === "A" ? ["10.0.0.1"] : ["0:0::1"]),
  };
  const resolver = new DnsResolver({ clock, timeoutMs: 1000, backend });
  assert.deepEqual(await resolver.lookup("_none.test", "SRV"), { records: [] });
  assert.deepEqual(await resolver.lookup("_broken.test", "SRV"), {
    records: [],
    error: "server failure",
  });
  let settled = false;
  const slow = resolver.lookup("_slow.test", "SRV").finally(() => (settled = true));
  await clock.advance(999);
  assert.equal(settled, false);
  await clock.advance(1);
  assert.deepEqual(await slow, { records: [], error: "timed out after 1000 ms" });
  const { logger } = recordingLogger();
  assert.deepEqual(await resolver.addresses("h.test", logger, "host"), ["10.0.0.1", "::1"]);
  assert.equal(clock.pending, 0);
  assert.throws(() => new DnsResolver({ timeoutMs: 0 }), (e) => isJwError(e, "config"));
});

Deno.test("DnsResolver reads SRV and address records from a real DNS server", async () => {
  await using dns = await startDnsmasq({
    srv: [
      { name: "_jw._tcp.example.test", target: "s1.example.test", port: 7401, priority: 10 },
      { name: "_jw._tcp.example.test", target: "s2.example.test", port: 7402, weight: 5 },
    ],
    hosts: [
      { name: "s1.example.test", addresses: ["127.0.0.1"] },
      { name: "s2.example.test", addresses: ["127.0.0.2", "::2"] },
    ],
  });
  const resolver = new DnsResolver({ nameServer: parseNameServer(dns.nameServer) });
  const answer = await resolver.lookup("_jw._tcp.example.test", "SRV");
  assert.equal(answer.error, undefined);
  assert.deepEqual(orderSrv(answer.records).map((r) => [r.target, r.port]), [
    ["s2.example.test.", 7402],
    ["s1.example.test.", 7401],
  ]);
  const { logger, lines } = recordingLogger();
  assert.deepEqual(await resolver.addresses("s2.example.test", logger, "target"), [
    "127.0.0.2",
    "::2",
  ]);
  assert.deepEqual(await resolver.addresses("gone.example.test", logger, "target"), []);
  assert.equal(lines.length, 1);
  assert.match(lines[0], /WARN .*target has no addresses.*host=gone\.example\.test/);
  assert.deepEqual(await resolver.lookup("_none._tcp.example.test", "SRV"), { records: [] });
});
