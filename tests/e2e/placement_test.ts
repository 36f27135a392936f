/**
 * End to end: agents placed by weighted rendezvous hashing on a three-server cluster —
 * every agent given one seed URL ends on its owner; a server killed with SIGKILL loses only
 * its own agents to the other two; restarted, it gets only its share back, gradually; a
 * command given to one server reaches agents on all three with meta intact; a command to an
 * offline agent waits in its owner's mailbox, and one with a short TTL expires.
 */
import assert from "node:assert/strict";
import { owner } from "../../shared/lrw.ts";
import type { AgentInfo } from "../../shared/protocol/mod.ts";
import {
  agentAudit,
  eventually,
  startAgent,
  startServer,
  startTail,
  type TestAgent,
  type TestServer,
} from "../helpers/mod.ts";
import { startDnsmasq } from "../helpers/dnsmasq.ts";

const KEY = btoa(String.fromCharCode(...crypto.getRandomValues(new Uint8Array(32))));

/**
 * Quick SWIM timing, yet slow enough that 30 agent processes starting on two cores do not
 * make servers suspect each other (a refuted suspicion restarts a server's settle time, and
 * agents that arrived meanwhile stay where they were); health changes never count
 * (placement stays by id alone).
 */
const CLUSTER = {
  key: KEY,
  gossip: "127.0.0.1:0",
  probeInterval: "500ms",
  probeTimeout: "400ms",
  suspicionMult: 3,
  gossipInterval: "100ms",
  pushPullInterval: "3s",
};
const PLACEMENT = {
  minAge: "1s",
  settle: "2s",
  handoffRate: 3,
  handoffSpread: "1s",
  healthRise: "10m",
};
/** Agents reconnect quickly, so the test measures placement, not backoff. */
const AGENT_CONFIG = { reconnect: { min: "200ms", max: "2s", failover: "1s" } };

const IDS = ["p1", "p2", "p3"];

function placementServer(
  id: string,
  seeds: string[],
  extra: { dataDir?: string; http?: string; gossip?: string } = {},
): Promise<TestServer> {
  return startServer({
    config: {
      id,
      cluster: { ...CLUSTER, seeds, ...(extra.gossip ? { gossip: extra.gossip } : {}) },
      placement: PLACEMENT,
    },
    dataDir: extra.dataDir,
    http: extra.http,
  });
}

async function converged(servers: TestServer[], ids: string[]): Promise<void> {
  const want = [...ids].sort().join(",");
  for (const server of servers) {
    await eventually(`members of ${server.url} = ${want}`, async () => {
      const alive = (await server.api.members()).members
        .filter((m) => m.state === "alive").map((m) => m.id);
      return alive.sort().join(",") === want ? true : undefined;
    }, 20_000);
  }
}

/** The cluster's agent list once `ready` holds for it. */
function agentsWhen(
  server: TestServer,
  what: string,
  ready: (agents: AgentInfo[]) => boolean,
  timeoutMs = 30_000,
): Promise<AgentInfo[]> {
  return eventually(what, async () => {
    const agents = await server.api.agents();
    return ready(agents) ? agents : undefined;
  }, timeoutMs);
}

const ownerOf = (id: string, servers = IDS) =>
  owner(id, servers.map((s) => ({ id: s, health: 0 })))!.id;

/** Handshakes an agent's own audit log records. */
function welcomes(agent: TestAgent): number {
  return agentAudit(agent.dataDir).filter((e) => e.action === "handshake.ok").length;
}

Deno.test("placement: 30 agents, one seed URL, kill -9 and restart, commands across servers", async (t) => {
  await using p1 = await placementServer("p1", []);
  await using p2 = await placementServer("p2", [p1.gossip!]);
  await using p3 = await placementServer("p3", [p1.gossip!]);
  await converged([p1, p2, p3], IDS);

  const ids = Array.from({ length: 30 }, (_, i) => `node-${String(i + 1).padStart(2, "0")}`);
  const agents = new Map<string, TestAgent>();
  try {
    await t.step("every agent started against p1 ends on its owner", async () => {
      for (const id of ids) {
        agents.set(
          id,
          await startAgent(p1, id, { wait: false, config: AGENT_CONFIG, tags: { fleet: "t" } }),
        );
      }
      // On a loaded machine a server can be briefly suspect while agents arrive; p1 then
      // keeps an agent itself and hands it over moments later, so wait for the settled view.
      const listed = await eventually("30 agents connected, each on its owner", async () => {
        const a = await p1.api.agents();
        const astray = ids.filter((id) => {
          const x = a.find((y) => y.id === id);
          return !x?.connected || x.server !== ownerOf(id);
        });
        if (astray.length === 0) return a;
        // Shown if this times out.
        throw new Error(
          astray.map((id) => {
            const x = a.find((y) => y.id === id);
            return `${id} on ${x?.connected ? x.server : "nothing"} (owner ${ownerOf(id)})`;
          }).join(", "),
        );
      }, 60_000);
      const counts: Record<string, number> = { p1: 0, p2: 0, p3: 0 };
      for (const a of listed.filter((x) => ids.includes(x.id))) counts[a.server!]++;
      const expected: Record<string, number> = { p1: 0, p2: 0, p3: 0 };
      for (const id of ids) expected[ownerOf(id)]++;
      assert.deepEqual(counts, expected);
      assert.ok(Object.values(counts).every((n) => n > 0), `spread: ${JSON.stringify(counts)}`);
      // p1 told every agent it does not own where to go: at the handshake, or by a handoff.
      const sent = [
        ...await p1.api.audit({ action: "handshake.redirected", limit: 1000 }),
        ...await p1.api.audit({ action: "agent.handoff", limit: 1000 }),
      ];
      assert.deepEqual(
        [...new Set(sent.map((e) => e.target))].sort(),
        ids.filter((id) => ownerOf(id) !== "p1"),
      );
    });

    await t.step("a command given to p1 reaches agents on all three, meta intact", async () => {
      // A viewer of one agent on p3 asks p1: redirected to p3 (307), and sees its output.
      const onP3 = ids.find((id) => ownerOf(id) === "p3")!;
      await using tail = await startTail(p1, onP3);
      const r = await p1.client(
        "--json",
        "run",
        "tag:fleet=t",
        "exec.run",
        JSON.stringify({ cmd: "/bin/echo", args: ["everywhere"] }),
        "--meta",
        "ticket=77",
      );
      assert.equal(r.code, 0, r.stderr);
      const replies = r.stdout.trim().split("\n").map((l) => JSON.parse(l));
      const finals = replies.filter((x) => x.done === true);
      assert.deepEqual(finals.map((x) => x.agent).sort(), ids);
      for (const x of replies) assert.deepEqual(x.meta, { ticket: "77" });
      assert.ok(replies.some((x) => x.text === "everywhere"));
      assert.match(r.stderr, /^done\s+30\s/m);
      assert.match(r.stderr, /following \d+ target\(s\) on p2/);
      assert.match(r.stderr, /following \d+ target\(s\) on p3/);
      const seen = await tail.waitFor((x) => x.done === true);
      assert.equal(seen[0].agent, onP3);
      assert.deepEqual(seen[0].meta, { ticket: "77" });
      assert.ok(tail.replies.every((x) => x.agent === onP3));
    });

    const onP2 = ids.filter((id) => ownerOf(id) === "p2");
    const notP2 = ids.filter((id) => ownerOf(id) !== "p2");
    const before = new Map(ids.map((id) => [id, welcomes(agents.get(id)!)]));

    const p2Incarnation = async () =>
      (await p1.api.members()).members.find((m) => m.id === "p2")!.incarnation;
    const incarnationBefore = await p2Incarnation();

    await t.step("p2 killed: its agents re-home on p1 and p3, the others never move", async () => {
      const killedAt = Date.now();
      await p2.process.stop("SIGKILL");
      const listed = await agentsWhen(
        p1,
        "p2's agents back on p1/p3",
        (a) =>
          onP2.every((id) => {
            const x = a.find((y) => y.id === id);
            return x?.connected && x.server !== "p2";
          }),
        20_000,
      );
      const took = Date.now() - killedAt;
      assert.ok(took < 15_000, `re-homed in ${took} ms`);
      for (const id of onP2) {
        const x = listed.find((y) => y.id === id)!;
        assert.equal(x.server, ownerOf(id, ["p1", "p3"]), `${id} on its next-ranked server`);
      }
      for (const id of notP2) {
        assert.equal(welcomes(agents.get(id)!), before.get(id), `${id} never reconnected`);
      }
    });

    await t.step("p2 restarted: only its share moves back, gradually", async () => {
      const moved = new Map(ids.map((id) => [id, welcomes(agents.get(id)!)]));
      const restartedAt = Date.now();
      await using again = await placementServer("p2", [p1.gossip!], {
        dataDir: p2.dataDir,
        http: new URL(p2.url).host,
        gossip: p2.gossip,
      });
      await converged([p1, again, p3], IDS);
      // Seen as a restart however quickly it came back: its agents' avoid lists lapse.
      await eventually(
        "p1 to see p2 at a new incarnation",
        async () => (await p2Incarnation() > incarnationBefore ? true : undefined),
        5_000,
      );
      await eventually("p2's agents home again", async () => {
        const a = await p1.api.agents();
        const astray = onP2.filter((id) => a.find((y) => y.id === id)?.server !== "p2");
        if (astray.length === 0) return a;
        // Shown if this times out: where each is, and what its agent said last.
        throw new Error(
          astray.map((id) => {
            const x = a.find((y) => y.id === id);
            const said = agents.get(id)!.process.stderr.lines.slice(-6).join("\n    ");
            return `${id} on ${x?.connected ? x.server : "nothing"}:\n    ${said}`;
          }).join("\n"),
        );
      }, 40_000);
      for (const id of notP2) {
        assert.equal(welcomes(agents.get(id)!), moved.get(id), `${id} did not move`);
      }
      // Handed over by p1 and p3 at most 3 per second each, spread over time.
      const handoffs = [
        ...await p1.api.audit({ action: "agent.handoff", limit: 1000 }),
        ...await p3.api.audit({ action: "agent.handoff", limit: 1000 }),
      ].filter((h) => h.ts >= restartedAt);
      assert.deepEqual([...new Set(handoffs.map((h) => h.target))].sort(), [...onP2].sort());
      const spanMs = Math.max(...handoffs.map((h) => h.ts)) -
        Math.min(...handoffs.map((h) => h.ts));
      if (onP2.length > 6) assert.ok(spanMs >= 1000, `handoffs spread over ${spanMs} ms`);
    });

    await t.step("offline agent: delivered when it comes back; a short TTL expires", async () => {
      const [late, gone] = notP2.filter((id) => ownerOf(id) === "p3");
      assert.ok(late && gone, "two agents owned by p3");
      for (const id of [late, gone]) await agents.get(id)!.process.stop("SIGTERM");
      const receivedBefore = agentAudit(agents.get(late)!.dataDir)
        .filter((e) => e.action === "command.received").length;
      await agentsWhen(
        p1,
        "both offline",
        (a) => [late, gone].every((id) => a.find((x) => x.id === id)?.connected === false),
      );
      const queued = await p1.client(
        "run",
        `agent:${late}`,
        "exec.run",
        JSON.stringify({ cmd: "/bin/echo", args: ["you were away"] }),
        "--meta",
        "why=mailbox",
      );
      assert.equal(queued.code, 1, "not done yet");
      assert.match(queued.stdout, /^offline\s+1\s+node-\d+ \(queued until /m);
      const short = await p1.client(
        "run",
        `agent:${gone}`,
        "exec.run",
        JSON.stringify({ cmd: "/bin/echo" }),
        "--ttl",
        "1s",
      );
      assert.match(short.stdout, /^offline\s+1/m);
      await p3.waitForAudit((e) => e.action === "command.expired" && e.target === gone);

      const back = await startAgent(p3, late, {
        dataDir: agents.get(late)!.dataDir,
        config: AGENT_CONFIG,
        tags: { fleet: "t" },
      });
      agents.set(late, back);
      const sent = await p3.waitForAudit((e) =>
        e.action === "command.sent" && e.target === late && e.reason === "from the mailbox"
      );
      assert.equal(sent.actor, "operator:admin");
      const received = () =>
        agentAudit(back.dataDir).filter((e) => e.action === "command.received").length;
      await eventually(
        "the agent ran it",
        () => Promise.resolve(received() > receivedBefore ? true : undefined),
      );
      // jw client show: the state of each target now, from the server it was given to.
      const queuedId = /as (\S+)$/m.exec(queued.stderr)?.[1];
      assert.ok(queuedId, queued.stderr);
      const shown = await eventually("shown done", async () => {
        const r = await p1.client("show", queuedId);
        return r.code === 0 ? r : undefined;
      });
      assert.match(shown.stdout, /you were away/);
      assert.match(shown.stdout, /^done\s+1\s+node-\d+/m);
      const shortId = /as (\S+)$/m.exec(short.stderr)?.[1];
      const expired = await p1.client("show", shortId!);
      assert.equal(expired.code, 1);
      assert.match(expired.stdout, new RegExp(`^expired\\s+1\\s+${gone}`, "m"));
    });
  } finally {
    await Promise.all([...agents.values()].map((a) => a.process.stop("SIGTERM")));
  }
});

Deno.test("placement: agents find the cluster by DNS SRV from dnsmasq", async () => {
  await using d1 = await placementServer("d1", []);
  await using d2 = await placementServer("d2", [d1.gossip!]);
  await using d3 = await placementServer("d3", [d1.gossip!]);
  const servers = [d1, d2, d3];
  await converged(servers, ["d1", "d2", "d3"]);
  // SRV lists only d2: agents reach it and are placed from there.
  const port = Number(new URL(d2.url).port);
  await using dns = await startDnsmasq({
    srv: [{ name: "_jw._tcp.example.test", target: "jw2.example.test", port }],
    hosts: [{ name: "jw2.example.test", addresses: ["127.0.0.1"] }],
  });
  const ids = Array.from({ length: 6 }, (_, i) => `dns-${i + 1}`);
  const agents: TestAgent[] = [];
  try {
    for (const id of ids) {
      agents.push(
        await startAgent(d2, id, {
          wait: false,
          seed: false,
          config: AGENT_CONFIG,
          flags: ["--dns", "_jw._tcp.example.test", "--dns-server", dns.nameServer],
        }),
      );
    }
    const listed = await agentsWhen(
      d2,
      "6 agents connected",
      (a) => a.filter((x) => ids.includes(x.id) && x.connected).length === 6,
      60_000,
    );
    for (const id of ids) {
      const a = listed.find((x) => x.id === id)!;
      assert.equal(a.server, ownerOf(id, ["d1", "d2", "d3"]), `${id} on its owner`);
    }
  } finally {
    await Promise.all(agents.map((a) => a.process.stop("SIGTERM")));
  }
});
