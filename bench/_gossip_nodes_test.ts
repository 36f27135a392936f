import assert from "node:assert/strict";
import { jwState, newClusterKey, operatorHash, serfState, startJwNode } from "./_gossip_nodes.ts";
import { delay } from "./_proc.ts";

Deno.test("jwState() and serfState() speak the same words", () => {
  assert.equal(jwState("dead"), "failed");
  assert.equal(jwState("left"), "left");
  assert.equal(jwState("suspect"), "suspect");
  assert.equal(serfState("failed"), "failed");
  assert.equal(serfState("leaving"), "leaving");
  assert.throws(() => jwState("gone"), /unknown state "gone"/);
  assert.throws(() => serfState("none"), /unknown status "none"/);
});

Deno.test("newClusterKey() makes 32 random bytes in base64", () => {
  const key = newClusterKey();
  assert.equal(atob(key).length, 32);
  assert.notEqual(key, newClusterKey());
});

Deno.test("startJwNode(): a join through the API, then SIGTERM shows as left", async () => {
  const dir = await Deno.makeTempDir({ prefix: "jw-gossip-nodes-test-" });
  const key = newClusterKey();
  const hash = operatorHash();
  const mk = async (name: string) => {
    await Deno.mkdir(`${dir}/${name}`);
    return startJwNode({ name, dir: `${dir}/${name}`, key, operatorHash: hash });
  };
  const a = await mk("a");
  const b = await mk("b");
  try {
    assert.match(a.gossip, /^127\.0\.0\.1:\d+$/);
    assert.equal(a.port, Number(a.gossip.split(":")[1]));
    await b.join([a.gossip]);
    let seen: string | undefined;
    for (let i = 0; i < 200 && seen !== "alive"; i++) {
      seen = (await a.members()).get("b");
      if (seen !== "alive") await delay(25);
    }
    assert.equal(seen, "alive");
    await b.leave();
    for (let i = 0; i < 200 && seen !== "left"; i++) {
      seen = (await a.members()).get("b");
      if (seen !== "left") await delay(25);
    }
    assert.equal(seen, "left");
    assert.equal((await a.members()).get("a"), "alive");
  } finally {
    await Promise.all([a.kill(), b.kill()]);
    await Deno.remove(dir, { recursive: true });
  }
});
