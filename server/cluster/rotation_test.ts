/**
 * Key rotation under traffic, end to end in one process: sealed memberlists on the in-memory
 * network rotate their cluster key (install → use → remove), each node at its own moment,
 * while probes and gossip flow, and nobody is suspected and no packet is refused.
 */
import assert from "node:assert/strict";
import { FakeClock } from "../../shared/clock.ts";
import { seededRandom } from "../../shared/random.ts";
import { createKeyring, generateClusterKey, type Keyring } from "./keyring.ts";
import { MemNetwork } from "./mem_network.ts";
import { createMemberlist, type Memberlist } from "./memberlist.ts";
import { type SealedTransport, sealTransport } from "./seal.ts";

interface Node {
  name: string;
  ml: Memberlist;
  keyring: Keyring;
  sealed: SealedTransport;
  leaves: string[];
}

Deno.test("the cluster key rotates under traffic without a suspicion or a refused packet", async () => {
  const clock = new FakeClock(Date.UTC(2026, 0, 1));
  const random = seededRandom(42);
  const net = new MemNetwork({
    clock,
    random: seededRandom(7),
    defaults: { delayMs: 1, jitterMs: 4 },
  });
  const oldKey = generateClusterKey(random);
  const newKey = generateClusterKey(random);
  const nodes: Node[] = [];
  for (let i = 1; i <= 5; i++) {
    const keyring = createKeyring({ cluster: "jw", keys: [oldKey] });
    const sealed = sealTransport(net.transport(`10.0.0.${i}:7401`), {
      keyring,
      clock,
      random: seededRandom(100 + i),
    });
    const leaves: string[] = [];
    const ml = createMemberlist({
      name: `n${i}`,
      transport: sealed,
      clock,
      random: seededRandom(200 + i),
      config: { packetLimit: sealed.maxPacketMessage, pushPullInterval: 5000 },
      delegate: { notifyLeave: (m) => leaves.push(`${m.name}:${m.state}`) },
    });
    nodes.push({ name: `n${i}`, ml, keyring, sealed, leaves });
  }
  try {
    const joins = nodes.slice(1).map((n) => n.ml.join(["10.0.0.1:7401"]));
    await clock.advance(3000);
    assert.deepEqual(await Promise.all(joins), [1, 1, 1, 1]);
    for (const n of nodes) assert.equal(n.ml.numMembers(), 5, `${n.name} sees everyone`);

    // Each step reaches the nodes one at a time, 700 ms apart, with traffic in between.
    const step = async (change: (k: Keyring) => void) => {
      for (const n of nodes) {
        change(n.keyring);
        await clock.advance(700);
      }
      await clock.advance(3000);
    };
    await step((k) => k.install(newKey));
    await step((k) => k.use(newKey));
    await step((k) => k.remove(oldKey));
    await clock.advance(10_000);

    const newId = nodes[0].keyring.list().find((k) => k.primary)!.id;
    for (const n of nodes) {
      const stats = n.sealed.stats();
      assert.deepEqual(
        Object.entries(stats.dropped).filter(([, count]) => count > 0),
        [],
        `${n.name} refused nothing`,
      );
      assert.ok(stats.verified.packets > 50, `${n.name} kept receiving`);
      assert.ok((stats.verifiedByKey[newId] ?? 0) > 0, `${n.name} heard the new key`);
      assert.equal(n.keyring.list().length, 1);
      assert.equal(n.ml.stats().suspicions, 0, `${n.name} suspected nobody`);
      assert.deepEqual(n.leaves, []);
      assert.equal(n.ml.numMembers(), 5);
    }

    // A node still holding only the old key is now outside the cluster.
    const stale = sealTransport(net.transport("10.0.0.9:7401"), {
      keyring: createKeyring({ cluster: "jw", keys: [oldKey] }),
      clock,
      random: seededRandom(9),
    });
    const outsider = createMemberlist({
      name: "n9",
      transport: stale,
      clock,
      random: seededRandom(9),
      config: { packetLimit: stale.maxPacketMessage, streamTimeout: 500 },
    });
    const joining = outsider.join(["10.0.0.1:7401"]).then(() => "joined", (e) => String(e));
    await clock.advance(2000);
    assert.match(await joining, /not_connected|timeout|closed/);
    assert.ok(nodes[0].sealed.stats().dropped.unknown_key > 0);
    await outsider.shutdown();
  } finally {
    for (const n of nodes) await n.ml.shutdown();
  }
});
