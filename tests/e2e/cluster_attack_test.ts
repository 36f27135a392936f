/**
 * End to end: forged, replayed and malformed gossip sent to a real server's gossip port is
 * dropped and counted by reason, never answered, and membership stays as it was.
 */
import assert from "node:assert/strict";
import dgram from "node:dgram";
import { realClock } from "../../shared/clock.ts";
import { cryptoRandom } from "../../shared/random.ts";
import { createKeyring } from "../../server/cluster/keyring.ts";
import { encodeMessage } from "../../server/cluster/messages.ts";
import { sealTransport } from "../../server/cluster/seal.ts";
import type { Transport } from "../../server/cluster/transport.ts";
import { eventually, startServer, type TestServer } from "../helpers/mod.ts";

const KEY = btoa(String.fromCharCode(...crypto.getRandomValues(new Uint8Array(32))));
const OTHER_KEY = btoa(String.fromCharCode(...crypto.getRandomValues(new Uint8Array(32))));
const FAST = { probeInterval: "200ms", probeTimeout: "100ms", suspicionMult: 2 };

/** Seals `message` as a server with `key` in cluster `cluster` would, and returns the packet. */
async function sealed(message: Uint8Array, key: string, cluster = "jw"): Promise<Uint8Array> {
  const packets: Uint8Array[] = [];
  const capture: Transport = {
    address: "127.0.0.1:1",
    sendPacket: (_to, data) => void packets.push(data),
    onPacket: () => {},
    openStream: () => Promise.reject(new Error("no streams")),
    onStream: () => {},
    close: () => Promise.resolve(),
  };
  const t = sealTransport(capture, {
    keyring: createKeyring({ cluster, keys: [key] }),
    clock: realClock,
    random: cryptoRandom,
  });
  t.sendPacket("127.0.0.1:2", message);
  await t.close();
  return packets[0];
}

function start(id: string, seeds: string[] = []): Promise<TestServer> {
  return startServer({
    config: { id, cluster: { key: KEY, gossip: "127.0.0.1:0", seeds, ...FAST } },
  });
}

type Stats = { security: { dropped: Record<string, number> } };

Deno.test("forged and malformed gossip is dropped, counted and never answered", async (t) => {
  await using s1 = await start("a1");
  await using s2 = await start("a2", [s1.gossip!]);
  await eventually("two alive", async () => {
    const m = (await s1.api.members()).members;
    return m.filter((x) => x.state === "alive").length === 2 ? true : undefined;
  }, 20_000);
  const [host, port] = s1.gossip!.split(":");
  const socket = dgram.createSocket("udp4");
  const answers: Uint8Array[] = [];
  socket.on("message", (msg) => answers.push(new Uint8Array(msg)));
  await new Promise<void>((resolve) => socket.bind(0, "127.0.0.1", resolve));
  const send = (bytes: Uint8Array) =>
    new Promise<void>((resolve, reject) =>
      socket.send(bytes, Number(port), host, (err) => (err ? reject(err) : resolve()))
    );
  const dropped = async () => ((await s1.api.clusterStats()) as Stats).security.dropped;
  try {
    const ping = encodeMessage({ type: "ping", seq: 7, node: "a1" });
    const good = await sealed(ping, KEY);
    const cases: [string, Uint8Array, string | string[]][] = [
      ["no key at all", ping, "unsigned"],
      ["another key", await sealed(ping, OTHER_KEY), "unknown_key"],
      ["another cluster name", await sealed(ping, KEY, "other"), "unknown_key"],
      [
        "a tampered signature byte",
        (() => {
          // Another base64url letter, so the packet still parses but the signature is wrong
          // (flipping a bit could make a character base64url does not have: "malformed").
          const copy = good.slice();
          const at = copy.length - 3;
          copy[at] = copy[at] === 0x41 ? 0x42 : 0x41;
          return copy;
        })(),
        "bad_signature",
      ],
      ["a truncated packet", good.slice(0, good.length - 20), ["malformed", "bad_signature"]],
      ["garbage with dots", new TextEncoder().encode("a.b.c"), "malformed"],
    ];
    for (const [label, bytes, reason] of cases) {
      await t.step(label, async () => {
        const reasons = Array.isArray(reason) ? reason : [reason];
        const count = async () => {
          const d = await dropped();
          return reasons.reduce((sum, r) => sum + (d[r] ?? 0), 0);
        };
        const before = await count();
        await send(bytes);
        await eventually(`dropped as ${reasons.join(" or ")}`, async () => {
          return (await count()) > before ? true : undefined;
        }, 10_000);
      });
    }

    await t.step("an oversized packet is dropped before anything reads it", async () => {
      const network = async () =>
        ((await s1.api.clusterStats()) as {
          network: { packetsDropped: { oversizedInbound: number } };
        }).network.packetsDropped.oversizedInbound;
      const before = await network();
      await send(new Uint8Array(4000).fill(0x41));
      await eventually(
        "oversized counted",
        async () => (await network()) > before ? true : undefined,
        10_000,
      );
    });

    await t.step("a replayed packet is answered once, then dropped as a replay", async () => {
      const fresh = await sealed(encodeMessage({ type: "ping", seq: 9, node: "a1" }), KEY);
      await send(fresh);
      await eventually(
        "the genuine ping is answered",
        () => Promise.resolve(answers.length > 0 ? true : undefined),
        10_000,
      );
      const answered = answers.length;
      const before = (await dropped()).replayed ?? 0;
      await send(fresh);
      await eventually(
        "replay counted",
        async () => ((await dropped()).replayed ?? 0) > before ? true : undefined,
        10_000,
      );
      assert.equal(answers.length, answered, "the replay got no answer");
    });

    await t.step("nothing else was ever answered, and membership is unchanged", async () => {
      assert.equal(answers.length, 1, "only the one genuine ping was answered");
      const members = (await s2.api.members()).members;
      assert.deepEqual(members.map((m) => [m.id, m.state]).sort(), [
        ["a1", "alive"],
        ["a2", "alive"],
      ]);
    });

    await t.step("a TCP stream with a lying length is closed; gossip goes on", async () => {
      const conn = await Deno.connect({ hostname: host, port: Number(port) });
      await conn.write(new Uint8Array([0x7f, 0xff, 0xff, 0xff, 1, 2, 3]));
      const buf = new Uint8Array(16);
      const n = await conn.read(buf).catch(() => null);
      assert.equal(n, null, "the server closed the stream without answering");
      conn.close();
      const members = (await s1.api.members()).members;
      assert.equal(members.filter((m) => m.state === "alive").length, 2);
    });
  } finally {
    socket.close();
  }
});
