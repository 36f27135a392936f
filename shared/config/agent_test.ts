import assert from "node:assert/strict";
import { isJwError } from "../errors.ts";
import { AgentConfig, agentEnv } from "./agent.ts";
import { loadConfig } from "./load.ts";

function configError(fn: () => unknown): string {
  try {
    fn();
  } catch (err) {
    assert.ok(isJwError(err, "config"), String(err));
    return err.message;
  }
  throw new Error("expected a config error");
}

Deno.test("AgentConfig takes seeds, a DNS name and the failover delay", () => {
  const config = loadConfig(AgentConfig, {
    env: {
      JW_SEEDS: "http://10.0.0.1:7400, https://jw.example.test",
      JW_DNS: "_jw._tcp.example.test",
      JW_DNS_SERVER: "127.0.0.1:5353",
      JW_DNS_TLS: "true",
    },
    envMap: agentEnv,
    flags: { id: "a1", "reconnect.failover": "2s" },
  });
  assert.equal(config.server, undefined);
  assert.deepEqual(config.seeds, ["http://10.0.0.1:7400", "https://jw.example.test"]);
  assert.deepEqual(config.dns, {
    name: "_jw._tcp.example.test",
    nameServer: "127.0.0.1:5353",
    tls: true,
  });
  assert.equal(config.reconnect.failover, 2000);
  const defaults = AgentConfig.parse({ id: "a1", server: "http://10.0.0.1:7400" });
  assert.deepEqual(defaults.seeds, []);
  assert.equal(defaults.dns, undefined);
  assert.equal(defaults.reconnect.failover, 5000);
});

Deno.test("AgentConfig refuses bad seeds and DNS settings by path", async (t) => {
  const cases: [string, Record<string, unknown>, RegExp][] = [
    ["seed of another scheme", { seeds: ["ftp://x.test"] }, /config seeds\.0: expected an http/],
    ["bad DNS name", { "dns.name": "no such name" }, /config dns\.name: expected a DNS name/],
    [
      "name server by host name",
      { "dns.name": "_jw._tcp.example.test", "dns.nameServer": "ns.test:53" },
      /config dns\.nameServer: bad DNS name server "ns\.test:53": expected ip:port/,
    ],
    ["name server without a name", { "dns.nameServer": "10.0.0.2:53" }, /config dns\.name: /],
  ];
  for (const [name, flags, message] of cases) {
    await t.step(name, () => {
      assert.match(
        configError(() => loadConfig(AgentConfig, { flags: { id: "a1", ...flags } })),
        message,
      );
    });
  }
});
