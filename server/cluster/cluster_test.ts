import assert from "node:assert/strict";
import { FakeClock } from "../../shared/clock.ts";
import { seededRandom } from "../../shared/random.ts";
import { type Cluster, startCluster } from "./cluster.ts";
import { MemNetwork } from "./mem_network.ts";

const FAST = {
  probeInterval: 500,
  probeTimeout: 400,
  gossipInterval: 100,
  pushPullInterval: 3_000,
  suspicionMult: 3,
};

/** Advances `clock` in 10 ms steps until `check` holds (at most `maxMs`). */
async function until(clock: FakeClock, check: () => boolean, maxMs: number): Promise<number> {
  const start = clock.now();
  while (!check()) {
    assert.ok(clock.now() - start < maxMs, `not within ${maxMs} ms`);
    await clock.advance(10);
  }
  return clock.now() - start;
}

Deno.test("cluster: a server restarted before the others noticed comes back as a new incarnation", async () => {
  const clock = new FakeClock(1_000_000);
  const net = new MemNetwork({ clock, random: seededRandom(5) });
  let seed = 100;
  const start = (id: string, address: string): Cluster =>
    startCluster({
      serverId: id,
      url: `http://${id}.test:7400`,
      transport: net.transport(address),
      clock,
      random: seededRandom(seed++),
      memberlist: FAST,
    });
  const a = start("a", "10.0.0.1:7401");
  const b = start("b", "10.0.0.2:7401");
  const join = b.join([a.members()[0].gossip]);
  await until(clock, () => a.members().some((m) => m.id === "b" && m.state === "alive"), 5_000);
  assert.equal(await join, 1);
  const before = a.members().find((m) => m.id === "b")!;
  assert.equal(before.url, "http://b.test:7400");

  // b dies and is back at the same address, with the same URL, before a probes it.
  net.kill("10.0.0.2:7401");
  const again = start("b", "10.0.0.2:7401");
  const rejoin = again.join(["10.0.0.1:7401"]);
  await until(
    clock,
    () => (a.members().find((m) => m.id === "b")?.incarnation ?? 0) > before.incarnation,
    2_000,
  );
  assert.equal(await rejoin, 1);
  const after = a.members().find((m) => m.id === "b")!;
  assert.equal(after.state, "alive");
  assert.equal(after.url, "http://b.test:7400");
  assert.equal(again.members().find((m) => m.id === "a")?.state, "alive");

  let left = false;
  const leaving = Promise.all([a.leave(100), again.leave(100), b.leave(100)]).then(() => {
    left = true;
  });
  await until(clock, () => left, 1_000);
  await leaving;
});
