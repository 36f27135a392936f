/**
 * End to end: `jw server` processes forming a cluster on loopback — by seed, by
 * `jw client join` and by DNS SRV from a real dnsmasq — agreeing on membership, sharing their
 * agents and commands, and noticing a server killed with SIGKILL and its return.
 */
import assert from "node:assert/strict";
import dgram from "node:dgram";
import { generateKeyPair } from "../../shared/crypto/keys.ts";
import { signScript } from "../../shared/crypto/script.ts";
import type { ClusterMemberInfo } from "../../shared/protocol/mod.ts";
import {
  agentAudit,
  agentOwnedBy,
  eventually,
  runJw,
  scratchDir,
  startAgent,
  startServer,
  type TestServer,
} from "../helpers/mod.ts";
import { startDnsmasq } from "../helpers/dnsmasq.ts";

/** One key for every cluster in this file (32 bytes, base64). */
const KEY = btoa(String.fromCharCode(...crypto.getRandomValues(new Uint8Array(32))));

/** Fast SWIM timing so failures are noticed within seconds. */
const FAST = {
  probeInterval: "200ms",
  probeTimeout: "100ms",
  suspicionMult: 2,
  gossipInterval: "100ms",
  pushPullInterval: "3s",
};

/** A server with the cluster key, fast timing and a free gossip port. */
function clusterServer(
  id: string,
  cluster: Record<string, unknown> = {},
  extra: { dataDir?: string; flags?: string[] } = {},
): Promise<TestServer> {
  return startServer({
    config: { id, cluster: { key: KEY, gossip: "127.0.0.1:0", ...FAST, ...cluster } },
    dataDir: extra.dataDir,
    flags: extra.flags,
  });
}

async function members(server: TestServer): Promise<ClusterMemberInfo[]> {
  return (await server.api.members()).members;
}

/** Waits until every server lists exactly `ids` as alive. */
async function converged(servers: TestServer[], ids: string[]): Promise<void> {
  const want = [...ids].sort().join(",");
  for (const server of servers) {
    await eventually(`members of ${server.url} = ${want}`, async () => {
      const alive = (await members(server)).filter((m) => m.state === "alive").map((m) => m.id);
      return alive.sort().join(",") === want ? true : undefined;
    }, 20_000);
  }
}

Deno.test("five servers join by seed and agree on members, agents and commands", async (t) => {
  await using s1 = await clusterServer("s1");
  assert.ok(s1.gossip, "the server prints its gossip address");
  const seed = ["--seed", s1.gossip!];
  await using s2 = await clusterServer("s2", {}, { flags: seed });
  await using s3 = await clusterServer("s3", {}, { flags: seed });
  await using s4 = await clusterServer("s4", {}, { flags: seed });
  await using s5 = await clusterServer("s5", {}, { flags: seed });
  const all = [s1, s2, s3, s4, s5];

  await t.step("jw client members on every server shows the same five", async () => {
    await converged(all, ["s1", "s2", "s3", "s4", "s5"]);
    for (const server of all) {
      const r = await server.client("--json", "members");
      assert.equal(r.code, 0, r.stderr);
      const listed = JSON.parse(r.stdout) as ClusterMemberInfo[];
      assert.equal(listed.length, 5);
      assert.equal(listed.filter((m) => m.self).length, 1);
      for (const m of listed) {
        assert.equal(m.state, "alive");
        assert.match(m.gossip!, /^127\.0\.0\.1:\d+$/);
        assert.equal(typeof m.health, "number");
      }
      const urls = Object.fromEntries(listed.map((m) => [m.id, m.url]));
      assert.equal(urls.s3, s3.url);
    }
    const table = await s4.client("members");
    assert.match(table.stdout, /s4 \*\s+alive/);
  });

  await t.step("an agent on one server is listed by every server, with its server", async () => {
    const far1 = agentOwnedBy("s3", ["s1", "s2", "s3", "s4", "s5"], "far");
    await using _agent = await startAgent(s3, far1, { tags: { role: "web" } });
    for (const server of [s1, s5]) {
      await eventually(`${far1} listed by ${server.url}`, async () => {
        const a = (await server.api.agents()).find((x) => x.id === far1);
        return a?.connected && a.server === "s3" ? a : undefined;
      }, 20_000);
    }
  });

  await t.step("a command given to one server reaches agents on another", async () => {
    const far2 = agentOwnedBy("s2", ["s1", "s2", "s3", "s4", "s5"], "far");
    await using agent = await startAgent(s2, far2);
    const r = await s5.client(
      "--json",
      "run",
      `agent:${far2}`,
      "exec.run",
      JSON.stringify({ cmd: "/bin/echo", args: ["through the cluster"] }),
    );
    // s5 has no such agent itself; s2 delivers it.
    assert.ok(r.code === 0 || r.code === 1, r.stderr);
    const sent = await eventually(
      "command.sent on s2",
      async () =>
        (await s2.api.audit({ action: "command.sent" })).find((e) =>
          e.target === far2 && e.reason === "via server:s5"
        ),
      20_000,
    );
    assert.equal(sent.actor, "operator:admin");
    await eventually(
      `${far2} ran it`,
      () =>
        Promise.resolve(
          agentAudit(agent.dataDir).find((e) => e.action === "command.received"),
        ),
      20_000,
    );
  });
});

Deno.test("servers join with jw client join, and by DNS SRV from dnsmasq", async (t) => {
  await using s1 = await clusterServer("j1");
  await using s2 = await clusterServer("j2");
  await using s3 = await clusterServer("j3");

  await t.step("jw client join", async () => {
    for (const server of [s2, s3]) {
      const r = await server.client("join", s1.gossip!);
      assert.equal(r.code, 0, r.stderr);
      assert.match(r.stdout, /joined 1 of 1/);
    }
    await converged([s1, s2, s3], ["j1", "j2", "j3"]);
    const audited = await s2.api.audit({ action: "cluster.join" });
    assert.equal(audited[0].outcome, "ok");
  });

  await t.step("a join to nothing fails clearly", async () => {
    const r = await s2.client("join", "127.0.0.1:1");
    assert.equal(r.code, 1);
    assert.match(r.stderr, /not_connected/);
    const bad = await s2.client("join", "nowhere");
    assert.equal(bad.code, 2);
  });

  await t.step("DNS SRV", async () => {
    const [, port] = s1.gossip!.split(":");
    await using dns = await startDnsmasq({
      srv: [{
        name: "_jw-gossip._udp.example.test",
        target: "g1.example.test",
        port: Number(port),
      }],
      hosts: [{ name: "g1.example.test", addresses: ["127.0.0.1"] }],
    });
    await using s4 = await clusterServer("j4", {
      dns: { name: "_jw-gossip._udp.example.test", nameServer: dns.nameServer },
    });
    await converged([s1, s2, s3, s4], ["j1", "j2", "j3", "j4"]);
  });
});

Deno.test("a server killed with SIGKILL is reported failed, and rejoins when restarted", async (t) => {
  await using s1 = await clusterServer("k1");
  await using s2 = await clusterServer("k2", { seeds: [s1.gossip!] });
  await using s3 = await clusterServer("k3", { seeds: [s1.gossip!] });
  await converged([s1, s2, s3], ["k1", "k2", "k3"]);
  const before = (await members(s1)).find((m) => m.id === "k3")!.incarnation;

  await t.step("kill -9 → dead on the others", async () => {
    await s3.process.stop("SIGKILL");
    for (const server of [s1, s2]) {
      await eventually(`k3 dead on ${server.url}`, async () => {
        const m = (await members(server)).find((x) => x.id === "k3");
        return m?.state === "dead" ? m : undefined;
      }, 20_000);
    }
  });

  await t.step("restarted → alive again with a higher incarnation", async () => {
    // Back on its configured address, as a restarted server is.
    await using again = await clusterServer("k3", { seeds: [s1.gossip!], gossip: s3.gossip }, {
      dataDir: s3.dataDir,
    });
    await converged([s1, s2, again], ["k1", "k2", "k3"]);
    const after = (await members(s1)).find((m) => m.id === "k3")!;
    assert.ok(after.incarnation > before, `${after.incarnation} > ${before}`);
    assert.equal(after.gossip, again.gossip);

    // The seed itself restarts with no seeds of its own: it rejoins the servers it met.
    await s1.process.stop("SIGTERM");
    for (const server of [s2, again]) {
      await eventually(`k1 left on ${server.url}`, async () => {
        const m = (await members(server)).find((x) => x.id === "k1");
        return m === undefined || m.state === "left" ? true : undefined;
      }, 20_000);
    }
    await using seed = await clusterServer("k1", { gossip: s1.gossip }, { dataDir: s1.dataDir });
    await converged([seed, s2, again], ["k1", "k2", "k3"]);
  });
});

Deno.test("a server with seeds but no cluster key refuses to start", async () => {
  const r = await runJw(["server", "--http", "127.0.0.1:0", "--seed", "127.0.0.1:7401"]);
  assert.equal(r.code, 2);
  assert.match(r.stderr, /cluster\.key is required/);
  assert.match(r.stderr, /gen-key/);
});

Deno.test("a script uploaded to one server is registered through another", async () => {
  const signer = await generateKeyPair();
  const dir = await scratchDir("cluster-scripts-");
  await Deno.writeTextFile(`${dir}/ops.pub`, JSON.stringify(signer.publicJwk));
  await using s1 = await clusterServer("c1");
  await using s2 = await clusterServer("c2", { seeds: [s1.gossip!] });
  await converged([s1, s2], ["c1", "c2"]);
  const edge = agentOwnedBy("c2", ["c1", "c2"], "edge");
  await using agent = await startAgent(s2, edge, {
    flags: ["--trust-signer", `${dir}/ops.pub`],
  });
  const text = await signScript(
    "/*---\nname: hello\nversion: 1\n---*/\nemit({ hello: true });\n",
    signer,
  );
  await s1.api.uploadScript(text);
  // s2 learns of it by gossip, fetches it from s1 when asked to register it.
  const done = await eventually("registered through s2", async () => {
    const events: Record<string, unknown>[] = [];
    for await (
      const e of s2.api.run({
        target: `agent:${edge}`,
        job: { key: "script.register", args: { name: "hello" } },
      })
    ) events.push(e as unknown as Record<string, unknown>);
    const d = events.find((e) => e.done === true && e.agent === edge);
    return d && d.error === null ? d : undefined;
  }, 20_000);
  assert.equal((done.data as { name: string }).name, "hello");
  assert.deepEqual((await s2.api.scripts()).map((s) => [s.name, s.version]), [["hello", 1]]);
  assert.ok(
    agentAudit(agent.dataDir).some((e) => e.action === "script.register" && e.outcome === "ok"),
  );

  // Deleted on s1: gone from s2 too.
  await s1.api.deleteScript("hello");
  await eventually(
    "deleted on s2",
    async () => (await s2.api.scripts()).length === 0 ? true : undefined,
    20_000,
  );
});

Deno.test("with SSDP on, servers on one LAN find each other without seeds", async () => {
  // A free UDP port for the multicast group.
  const probe = dgram.createSocket("udp4");
  await new Promise<void>((resolve) => probe.bind(0, "127.0.0.1", resolve));
  const port = probe.address().port;
  await new Promise<void>((resolve) => probe.close(() => resolve()));
  const ssdp = { enabled: true, port, interface: "127.0.0.1", interval: "1s" };
  await using l1 = await clusterServer("l1", { ssdp });
  await using l2 = await clusterServer("l2", { ssdp });
  await using l3 = await clusterServer("l3", { ssdp });
  await converged([l1, l2, l3], ["l1", "l2", "l3"]);
});
