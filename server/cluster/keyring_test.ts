import assert from "node:assert/strict";
import { Buffer } from "node:buffer";
import { FakeClock } from "../../shared/clock.ts";
import { isJwError } from "../../shared/errors.ts";
import { cryptoRandom, seededRandom } from "../../shared/random.ts";
import {
  clusterKeyId,
  createKeyring,
  generateClusterKey,
  type Keyring,
  tokenHeader,
} from "./keyring.ts";
import { DROP_REASONS, type SealedTransport, sealTransport } from "./seal.ts";
import type { Packet, Stream, Transport } from "./transport.ts";

const key = (fill: number) => Buffer.from(new Uint8Array(32).fill(fill)).toString("base64");
const K1 = key(1);
const K2 = key(2);
const K3 = key(3);

async function sha256Id(base64: string): Promise<string> {
  const digest = new Uint8Array(
    await crypto.subtle.digest("SHA-256", Buffer.from(base64, "base64")),
  );
  return Buffer.from(digest.subarray(0, 8)).toString("base64url");
}

Deno.test("createKeyring() installs the keys and signs with the first by default", async () => {
  const ring = createKeyring({ cluster: "prod", keys: [K1, K2] });
  assert.equal(ring.cluster, "prod");
  assert.deepEqual(ring.list(), [
    { id: await sha256Id(K1), primary: true },
    { id: await sha256Id(K2), primary: false },
  ]);
  assert.equal(ring.primary().id, await sha256Id(K1));
  assert.equal(clusterKeyId(K2), await sha256Id(K2));
  assert.match(clusterKeyId(K3), /^[A-Za-z0-9_-]{11}$/);
});

Deno.test("createKeyring() takes a primary, installing it when it is not listed", () => {
  const ring = createKeyring({ cluster: "prod", keys: [K1], primary: K2 });
  assert.deepEqual(ring.list(), [
    { id: clusterKeyId(K2), primary: true },
    { id: clusterKeyId(K1), primary: false },
  ]);
  const only = createKeyring({ cluster: "prod", keys: [], primary: K3 });
  assert.deepEqual(only.list(), [{ id: clusterKeyId(K3), primary: true }]);
});

Deno.test("createKeyring() refuses keys that are not base64 of 32 bytes", async (t) => {
  const bad: [string, string][] = [
    ["16 bytes", Buffer.from(new Uint8Array(16)).toString("base64")],
    ["31 bytes", Buffer.from(new Uint8Array(31)).toString("base64")],
    ["33 bytes", Buffer.from(new Uint8Array(33)).toString("base64")],
    ["64 bytes", Buffer.from(new Uint8Array(64)).toString("base64")],
    ["empty", ""],
    ["not base64", "this is not a key at all, not even close!!!"],
    ["base64url alphabet", K1.replace(/A/g, "-") + "_"],
    ["one char too many", `${K1.slice(0, -1)}AA`],
  ];
  for (const [name, text] of bad) {
    await t.step(name, () => {
      assert.throws(
        () => createKeyring({ cluster: "prod", keys: [text] }),
        (e) => isJwError(e, "config") && (text.length < 8 || !e.message.includes(text)),
      );
      const ring = createKeyring({ cluster: "prod", keys: [K1] });
      assert.throws(() => ring.install(text), (e) => isJwError(e, "config"));
      assert.equal(ring.list().length, 1);
    });
  }
  await t.step("a key with surrounding whitespace (a file's newline) is fine", () => {
    const ring = createKeyring({ cluster: "prod", keys: [`${K1}\n`] });
    assert.equal(ring.primary().id, clusterKeyId(K1));
  });
});

Deno.test("createKeyring() refuses no keys and a bad cluster name", () => {
  assert.throws(() => createKeyring({ cluster: "prod", keys: [] }), (e) => isJwError(e, "config"));
  assert.throws(() => createKeyring({ cluster: "", keys: [K1] }), (e) => isJwError(e, "config"));
  assert.throws(
    () => createKeyring({ cluster: "x".repeat(129), keys: [K1] }),
    (e) => isJwError(e, "config"),
  );
});

Deno.test("Keyring.install() / use() / remove() keep one primary", () => {
  const ring = createKeyring({ cluster: "prod", keys: [K1] });
  ring.install(K2);
  ring.install(K2);
  assert.deepEqual(ring.list().map((k) => k.id), [clusterKeyId(K1), clusterKeyId(K2)]);
  ring.use(K2);
  assert.equal(ring.primary().id, clusterKeyId(K2));
  assert.deepEqual(ring.list().map((k) => k.primary), [false, true]);
  assert.throws(() => ring.use(K3), (e) => isJwError(e, "not_found"));
  assert.throws(() => ring.remove(K2), (e) => isJwError(e, "config"));
  ring.remove(K3); // not installed: nothing to do
  ring.remove(K1);
  assert.deepEqual(ring.list(), [{ id: clusterKeyId(K2), primary: true }]);
  ring.remove(K1);
  assert.throws(() => ring.use(K1), (e) => isJwError(e, "not_found"));
});

Deno.test("Keyring.lookup() finds a key by its exact header, plain or encrypted", () => {
  const ring = createKeyring({ cluster: "prod", keys: [K1, K2] });
  const id = clusterKeyId(K2);
  const plain = tokenHeader("prod", id, false);
  const encrypted = tokenHeader("prod", id, true);
  assert.equal(
    Buffer.from(plain, "base64url").toString(),
    `{"alg":"HS256","typ":"jw-gossip","aud":"prod","kid":"${id}"}`,
  );
  assert.equal(
    Buffer.from(encrypted, "base64url").toString(),
    `{"alg":"HS256","typ":"jw-gossip","aud":"prod","kid":"${id}","enc":"A256GCM"}`,
  );
  assert.equal(ring.lookup(plain)?.key.id, id);
  assert.equal(ring.lookup(plain)?.encrypted, false);
  assert.equal(ring.lookup(encrypted)?.encrypted, true);
  assert.equal(ring.lookup(tokenHeader("other", id, false)), undefined);
  assert.equal(ring.lookup(tokenHeader("prod", clusterKeyId(K3), false)), undefined);
  assert.equal(ring.lookup(`${plain}=`), undefined);
  ring.remove(K2);
  assert.equal(ring.lookup(plain), undefined);
  assert.equal(ring.lookup(encrypted), undefined);
});

Deno.test("generateClusterKey() makes 32 random bytes in base64 that a keyring accepts", () => {
  const fixed = generateClusterKey(seededRandom(5));
  assert.equal(fixed, generateClusterKey(seededRandom(5)));
  assert.match(fixed, /^[A-Za-z0-9+/]{43}=$/);
  assert.equal(Buffer.from(fixed, "base64").length, 32);
  const keys = new Set(Array.from({ length: 100 }, () => generateClusterKey(cryptoRandom)));
  assert.equal(keys.size, 100);
  const ring = createKeyring({ cluster: "prod", keys: [...keys] });
  assert.equal(ring.list().length, 100);
});

// ---------------------------------------------------------------------------------------
// Rotation across a cluster. A minimal packet network: every packet is delivered after a
// random delay of 0-2 ticks, so packets signed under one key are in flight while their
// receivers switch.

class DelayNet {
  #handlers = new Map<string, (packet: Packet) => void>();
  #inFlight: { due: number; from: string; to: string; data: Uint8Array }[] = [];
  #random = seededRandom(11);
  tick = 0;
  sent = 0;

  constructor(readonly clock: FakeClock) {}

  transport(address: string): Transport {
    return {
      address,
      sendPacket: (to, data) => {
        this.sent++;
        const due = this.tick + Math.floor(this.#random.float() * 3);
        this.#inFlight.push({ due, from: address, to, data: data.slice() });
      },
      onPacket: (handler) => {
        this.#handlers.set(address, handler);
      },
      openStream: (): Promise<Stream> => Promise.reject(new Error("no streams here")),
      onStream: () => {},
      close: () => Promise.resolve(),
    };
  }

  /** Delivers everything due by now, then moves one tick (100 ms) on. */
  async step(): Promise<void> {
    const due = this.#inFlight.filter((p) => p.due <= this.tick);
    this.#inFlight = this.#inFlight.filter((p) => p.due > this.tick);
    for (const p of due) {
      this.#handlers.get(p.to)?.({ from: p.from, data: p.data, at: this.clock.now() });
    }
    this.tick++;
    await this.clock.advance(100);
  }

  get inFlight(): number {
    return this.#inFlight.length;
  }
}

interface Node {
  address: string;
  keyring: Keyring;
  sealed: SealedTransport;
  received: number;
}

function cluster(n: number, encrypt = false) {
  const clock = new FakeClock();
  const net = new DelayNet(clock);
  const nodes: Node[] = [];
  for (let i = 0; i < n; i++) {
    const address = `10.0.0.${i + 1}:7946`;
    const keyring = createKeyring({ cluster: "prod", keys: [K1] });
    const sealed = sealTransport(net.transport(address), {
      keyring,
      clock,
      random: seededRandom(100 + i),
      encrypt,
    });
    const node: Node = { address, keyring, sealed, received: 0 };
    sealed.onPacket(() => node.received++);
    nodes.push(node);
  }
  /** Every node sends one packet to every other node. */
  const gossip = () => {
    for (const from of nodes) {
      for (const to of nodes) {
        if (from !== to) from.sealed.sendPacket(to.address, new TextEncoder().encode("ping"));
      }
    }
  };
  const dropped = () =>
    nodes.reduce(
      (sum, node) => sum + DROP_REASONS.reduce((s, r) => s + node.sealed.stats().dropped[r], 0),
      0,
    );
  return { clock, net, nodes, gossip, dropped };
}

/**
 * Runs `ticks` ticks of traffic; `actions[t]` run at the start of tick t. Each node acts
 * at its own tick, so the cluster is mixed for most of every phase.
 */
async function run(
  c: ReturnType<typeof cluster>,
  ticks: number,
  actions: Map<number, (() => void)[]>,
): Promise<void> {
  for (let t = 0; t < ticks; t++) {
    for (const act of actions.get(t) ?? []) act();
    c.gossip();
    await c.net.step();
  }
  while (c.net.inFlight > 0) await c.net.step();
}

for (const encrypt of [false, true]) {
  Deno.test(`Keyring rotation install → use → remove loses no packet (encrypt=${encrypt})`, async () => {
    const c = cluster(5, encrypt);
    const actions = new Map<number, (() => void)[]>();
    const at = (tick: number, act: () => void) =>
      actions.set(tick, [...(actions.get(tick) ?? []), act]);
    // Each phase starts only after the previous one reached every node (plus the network
    // delay); within a phase the nodes act at different ticks, in a shuffled order.
    const order = [3, 0, 4, 1, 2];
    order.forEach((n, i) => at(5 + 2 * i, () => c.nodes[n].keyring.install(K2)));
    order.forEach((n, i) => at(20 + 3 * i, () => c.nodes[n].keyring.use(K2)));
    [...order].reverse().forEach((n, i) => at(40 + 2 * i, () => c.nodes[n].keyring.remove(K1)));
    await run(c, 60, actions);

    assert.equal(c.dropped(), 0, "a packet sent during the rotation was rejected");
    const received = c.nodes.reduce((sum, node) => sum + node.received, 0);
    assert.equal(received, c.net.sent);
    assert.equal(received, 60 * 5 * 4);
    const old = clusterKeyId(K1);
    const next = clusterKeyId(K2);
    for (const node of c.nodes) {
      assert.deepEqual(node.keyring.list(), [{ id: next, primary: true }]);
      const byKey = node.sealed.stats().verifiedByKey;
      assert.ok(byKey[old] > 0 && byKey[next] > 0, "both keys carried traffic");
    }

    // The old key is really gone: a server still signing with it is refused everywhere.
    const straggler = sealTransport(c.net.transport("10.0.0.99:7946"), {
      keyring: createKeyring({ cluster: "prod", keys: [K1] }),
      clock: c.clock,
      random: seededRandom(9),
      encrypt,
    });
    for (const node of c.nodes) straggler.sendPacket(node.address, new Uint8Array([1]));
    await c.net.step();
    await c.net.step();
    await c.net.step();
    for (const node of c.nodes) assert.equal(node.sealed.stats().dropped.unknown_key, 1);
  });
}

Deno.test("Keyring rotation out of order (use before everyone installed) drops packets", async () => {
  const c = cluster(3);
  const actions = new Map<number, (() => void)[]>([
    [2, [() => c.nodes[0].keyring.install(K2), () => c.nodes[0].keyring.use(K2)]],
    [6, [() => c.nodes[1].keyring.install(K2), () => c.nodes[2].keyring.install(K2)]],
  ]);
  await run(c, 10, actions);
  assert.ok(c.dropped() > 0);
  assert.ok(c.nodes[1].sealed.stats().dropped.unknown_key > 0);
  assert.equal(c.nodes[0].sealed.stats().dropped.unknown_key, 0);
});
