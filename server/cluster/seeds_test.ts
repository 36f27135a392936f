import assert from "node:assert/strict";
import dgram from "node:dgram";
import { FakeClock } from "../../shared/clock.ts";
import { isJwError } from "../../shared/errors.ts";
import { createLogger, type Logger } from "../../shared/log.ts";
import { startDnsmasq } from "../../tests/helpers/dnsmasq.ts";
import { formatHostPort, parseHostPort, resolveSeeds } from "./seeds.ts";

function recordingLogger(): { logger: Logger; lines: string[] } {
  const lines: string[] = [];
  return { logger: createLogger("seeds", { level: "debug", sink: (l) => lines.push(l) }), lines };
}

Deno.test("parseHostPort() accepts IPv4, bracketed IPv6 and host names", async (t) => {
  const cases: [string, string, number][] = [
    ["127.0.0.1:7946", "127.0.0.1", 7946],
    ["[::1]:7946", "::1", 7946],
    ["[0:0:0:0:0:0:0:1]:1", "::1", 1],
    ["[FE80::1]:65535", "fe80::1", 65535],
    ["gossip.example.com:7946", "gossip.example.com", 7946],
    ["_jw-gossip._udp.example.com:53", "_jw-gossip._udp.example.com", 53],
    ["localhost:0", "localhost", 0],
  ];
  for (const [text, host, port] of cases) {
    await t.step(text, () => assert.deepEqual(parseHostPort(text), { host, port }));
  }
});

Deno.test("parseHostPort() refuses malformed addresses with a config error", async (t) => {
  const cases: [string, RegExp][] = [
    ["127.0.0.1", /expected host:port/],
    ["::1:7946", /IPv6 addresses need brackets/],
    ["[::1]7946", /expected host:port/],
    ["[::1:7946", /missing \]/],
    ["[1.2.3.4]:7946", /not an IPv6 address/],
    ["999.1.1.1:7946", /not an IPv4 address or host name/],
    ["bad host:7946", /not an IPv4 address or host name/],
    [":7946", /not an IPv4 address or host name/],
    ["host:", /port must be a number/],
    ["host:65536", /port must be a number/],
    ["host:-1", /port must be a number/],
    ["host:80a", /port must be a number/],
  ];
  for (const [text, message] of cases) {
    await t.step(text, () => {
      assert.throws(
        () => parseHostPort(text, "seed"),
        (err) =>
          isJwError(err, "config") && message.test(err.message) && err.message.includes(text),
      );
    });
  }
});

Deno.test("formatHostPort() brackets IPv6 only", () => {
  assert.equal(formatHostPort("10.0.0.1", 7946), "10.0.0.1:7946");
  assert.equal(formatHostPort("::1", 7946), "[::1]:7946");
  assert.equal(formatHostPort("gossip.example.com", 1), "gossip.example.com:1");
});

Deno.test("resolveSeeds() keeps static IP seeds in order, normalised and deduplicated", async () => {
  const { logger, lines } = recordingLogger();
  const seeds = await resolveSeeds({
    seeds: ["10.0.0.2:7946", "[0::1]:7946", "10.0.0.1:7946", "10.0.0.2:7946", "[::1]:7946"],
    logger,
  });
  assert.deepEqual(seeds, ["10.0.0.2:7946", "[::1]:7946", "10.0.0.1:7946"]);
  assert.deepEqual(lines, []);
});

Deno.test("resolveSeeds() refuses bad seeds, SRV names and name servers", async (t) => {
  const { logger } = recordingLogger();
  const cases: [string, Parameters<typeof resolveSeeds>[0], RegExp][] = [
    ["seed without port", { seeds: ["10.0.0.1"], logger }, /bad seed "10.0.0.1"/],
    ["seed with port 0", { seeds: ["10.0.0.1:0"], logger }, /port 0/],
    ["bad SRV name", { seeds: [], dns: { name: "bad name" }, logger }, /bad DNS seed name/],
    [
      "name server by host name",
      { seeds: [], dns: { name: "_jw._udp.example.test", nameServer: "ns.example:53" }, logger },
      /expected ip:port/,
    ],
    [
      "name server without port",
      { seeds: [], dns: { name: "_jw._udp.example.test", nameServer: "10.0.0.1" }, logger },
      /bad DNS name server/,
    ],
  ];
  for (const [name, options, message] of cases) {
    await t.step(name, async () => {
      await assert.rejects(
        resolveSeeds(options),
        (err) => isJwError(err, "config") && message.test(err.message),
      );
    });
  }
});

Deno.test("resolveSeeds() orders SRV targets by priority then weight, with SRV ports", async () => {
  await using dns = await startDnsmasq({
    srv: [
      { name: "_jw-gossip._udp.example.test", target: "s2.example.test", port: 7002, priority: 10 },
      { name: "_jw-gossip._udp.example.test", target: "s1.example.test", port: 7001, weight: 10 },
      { name: "_jw-gossip._udp.example.test", target: "s3.example.test", port: 7003, weight: 50 },
      { name: "_jw-gossip._udp.example.test", target: "gone.example.test", port: 7004 },
    ],
    hosts: [
      { name: "s1.example.test", addresses: ["127.0.0.1"] },
      { name: "s2.example.test", addresses: ["127.0.0.2"] },
      { name: "s3.example.test", addresses: ["127.0.0.3", "::1"] },
      { name: "static.example.test", addresses: ["127.0.0.9", "::9"] },
    ],
  });
  const { logger, lines } = recordingLogger();
  const seeds = await resolveSeeds({
    seeds: ["static.example.test:7946", "127.0.0.1:7001", "10.9.9.9:7946"],
    dns: { name: "_jw-gossip._udp.example.test", nameServer: dns.nameServer },
    logger,
  });
  assert.deepEqual(seeds, [
    "127.0.0.9:7946",
    "[::9]:7946",
    "127.0.0.1:7001", // static, so the SRV duplicate is dropped
    "10.9.9.9:7946",
    "127.0.0.3:7003", // priority 0, weight 50
    "[::1]:7003",
    "127.0.0.2:7002", // priority 10
  ]);
  // The target without addresses is skipped with a warning.
  assert.equal(lines.filter((l) => l.includes("WARN")).length, 1, lines.join("\n"));
  assert.match(lines[0], /WARN .*SRV target has no addresses.*host=gone\.example\.test/);
});

Deno.test("resolveSeeds() warns and skips names without records", async () => {
  await using dns = await startDnsmasq({
    hosts: [{ name: "s1.example.test", addresses: ["127.0.0.1"] }],
  });
  const { logger, lines } = recordingLogger();
  const seeds = await resolveSeeds({
    seeds: ["missing.example.test:7946"],
    dns: { name: "_none._udp.example.test", nameServer: dns.nameServer },
    logger,
  });
  assert.deepEqual(seeds, []);
  assert.equal(lines.length, 2, lines.join("\n"));
  assert.ok(
    lines.some((l) => /WARN .*no SRV records.*name=_none\._udp\.example\.test/.test(l)),
    lines.join("\n"),
  );
  assert.ok(
    lines.some((l) => /WARN .*seed host has no addresses.*host=missing\.example\.test/.test(l)),
    lines.join("\n"),
  );
});

Deno.test("resolveSeeds() skips an unreachable name server after the timeout", async () => {
  // A UDP socket that never answers stands in for a dead name server.
  const silent = dgram.createSocket("udp4");
  await new Promise<void>((resolve) => silent.bind(0, "127.0.0.1", () => resolve()));
  try {
    const clock = new FakeClock();
    const { logger, lines } = recordingLogger();
    let settled = false;
    const result = resolveSeeds({
      seeds: ["10.0.0.1:7946", "host.example.test:7946"],
      dns: {
        name: "_jw-gossip._udp.example.test",
        nameServer: `127.0.0.1:${silent.address().port}`,
      },
      logger,
      clock,
      timeoutMs: 2000,
    }).finally(() => settled = true);
    await clock.advance(1999);
    assert.equal(settled, false);
    await clock.advance(1);
    assert.deepEqual(await result, ["10.0.0.1:7946"]);
    assert.ok(
      lines.some((l) => /WARN .*DNS seed lookup failed.*timed out after 2000 ms/.test(l)),
      lines.join("\n"),
    );
    assert.ok(
      lines.some((l) => /WARN .*cannot resolve seed host.*host=host\.example\.test/.test(l)),
      lines.join("\n"),
    );
    assert.equal(clock.pending, 0);
  } finally {
    await new Promise<void>((resolve) => silent.close(() => resolve()));
  }
});
