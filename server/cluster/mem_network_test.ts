import assert from "node:assert/strict";
import { FakeClock } from "../../shared/clock.ts";
import { isJwError } from "../../shared/errors.ts";
import { seededRandom } from "../../shared/random.ts";
import { MemNetwork, PausableClock } from "./mem_network.ts";
import type { Packet, Transport } from "./transport.ts";

function setup(seed = 1) {
  const clock = new FakeClock(0);
  const net = new MemNetwork({ clock, random: seededRandom(seed) });
  return { clock, net };
}

function inbox(t: Transport): Packet[] {
  const got: Packet[] = [];
  t.onPacket((p) => got.push(p));
  return got;
}

const bytes = (n: number, fill = 1) => new Uint8Array(n).fill(fill);

Deno.test("MemNetwork delivers packets after delay + jitter, never inside sendPacket", async () => {
  const { clock, net } = setup();
  net.setDefaults({ delayMs: 10, jitterMs: 5 });
  const a = net.transport("a:1");
  const b = net.transport("b:1");
  const got = inbox(b);
  for (let i = 0; i < 100; i++) a.sendPacket("b:1", bytes(3, i));
  assert.equal(got.length, 0);
  await clock.advance(9);
  assert.equal(got.length, 0);
  await clock.advance(6);
  assert.equal(got.length, 100);
  assert.ok(got.every((p) => p.from === "a:1" && p.at >= 10 && p.at <= 15));
  assert.ok(new Set(got.map((p) => p.at)).size > 10, "jitter spreads arrivals");
  assert.deepEqual(net.counters("a:1").packetsSent, 100);
  assert.deepEqual(net.counters("b:1").bytesReceived, 300);
});

Deno.test("MemNetwork drops and duplicates packets at the configured rates", async () => {
  const { clock, net } = setup(2);
  const a = net.transport("a:1");
  const b = net.transport("b:1");
  const got = inbox(b);
  net.setDefaults({ dropRate: 0.3 });
  for (let i = 0; i < 2000; i++) a.sendPacket("b:1", bytes(1));
  await clock.advance(1);
  assert.ok(got.length > 1300 && got.length < 1500, `${got.length} of 2000 arrived`);
  assert.equal(net.counters("a:1").packetsDropped, 2000 - got.length);
  got.length = 0;
  net.setDefaults({ dropRate: 0, duplicateRate: 0.5 });
  for (let i = 0; i < 1000; i++) a.sendPacket("b:1", bytes(1));
  await clock.advance(1);
  assert.ok(got.length > 1400 && got.length < 1600, `${got.length} for 1000 sent`);
});

Deno.test("MemNetwork per-link settings apply to one direction only", async () => {
  const { clock, net } = setup();
  const a = net.transport("a:1");
  const b = net.transport("b:1");
  const atA = inbox(a);
  const atB = inbox(b);
  net.setLink("a:1", "b:1", { dropRate: 1 });
  a.sendPacket("b:1", bytes(1));
  b.sendPacket("a:1", bytes(1));
  await clock.advance(1);
  assert.equal(atB.length, 0);
  assert.equal(atA.length, 1);
  net.setLink("a:1", "b:1", undefined);
  a.sendPacket("b:1", bytes(1));
  await clock.advance(1);
  assert.equal(atB.length, 1);
  assert.throws(() => net.setLink("a:1", "b:1", { dropRate: 2 }), (e) => isJwError(e, "config"));
});

Deno.test("MemNetwork partitions cut both ways until healed, and drop packets in flight", async () => {
  const { clock, net } = setup();
  net.setDefaults({ delayMs: 5 });
  const [a, b, c] = ["a:1", "b:1", "c:1"].map((x) => net.transport(x));
  const [atA, atB, atC] = [a, b, c].map(inbox);
  a.sendPacket("b:1", bytes(1)); // in flight when the partition starts
  net.partition(["a:1"], ["b:1"]);
  b.sendPacket("a:1", bytes(1));
  a.sendPacket("c:1", bytes(1));
  await clock.advance(10);
  assert.deepEqual([atA.length, atB.length, atC.length], [0, 0, 1]);
  await assert.rejects(a.openStream("b:1", 100), (e) => isJwError(e, "not_connected"));
  net.heal();
  a.sendPacket("b:1", bytes(1));
  await clock.advance(10);
  assert.equal(atB.length, 1);
});

Deno.test("MemNetwork drops oversized packets and counts them", async () => {
  const clock = new FakeClock(0);
  const net = new MemNetwork({ clock, random: seededRandom(1), packetLimit: 100 });
  const a = net.transport("a:1");
  const got = inbox(net.transport("b:1"));
  a.sendPacket("b:1", bytes(100));
  a.sendPacket("b:1", bytes(101));
  await clock.advance(1);
  assert.deepEqual(got.map((p) => p.data.length), [100]);
  const c = net.counters("a:1");
  assert.equal(c.packetsOversized, 1);
  assert.equal(c.packetsDropped, 1);
  assert.equal(c.bytesSent, 201);
});

Deno.test("MemNetwork streams carry whole messages in order and signal the end", async () => {
  const { clock, net } = setup();
  net.setDefaults({ delayMs: 3, jitterMs: 50 });
  const a = net.transport("a:1");
  const b = net.transport("b:1");
  const received: string[] = [];
  let ended = false;
  b.onStream(async (s) => {
    assert.equal(s.remote, "a:1");
    for (;;) {
      const m = await s.receive(1000);
      if (m === null) break;
      received.push(new TextDecoder().decode(m));
      await s.send(m);
    }
    ended = true;
    s.close();
  });
  const s = await a.openStream("b:1", 1000);
  for (const word of ["one", "two", "three"]) await s.send(new TextEncoder().encode(word));
  const echoed: string[] = [];
  const reading = (async () => {
    for (let i = 0; i < 3; i++) echoed.push(new TextDecoder().decode((await s.receive(1000))!));
  })();
  await clock.advance(20);
  await reading;
  assert.deepEqual(received, ["one", "two", "three"]);
  assert.deepEqual(echoed, received);
  s.close();
  await clock.advance(10);
  assert.equal(ended, true);
  await assert.rejects(s.send(bytes(1)), (e) => isJwError(e, "closed"));
  assert.equal(net.counters("a:1").streamsOpened, 1);
  assert.equal(net.counters("b:1").streamMessagesReceived, 3);
});

Deno.test("MemNetwork stream errors: unknown peer, timeout, oversized, closed transport", async () => {
  const clock = new FakeClock(0);
  const net = new MemNetwork({ clock, random: seededRandom(1), streamMessageLimit: 10 });
  const a = net.transport("a:1");
  const b = net.transport("b:1");
  await assert.rejects(a.openStream("zz:1", 100), (e) => isJwError(e, "not_connected"));
  let peer: import("./transport.ts").Stream | undefined;
  b.onStream((s) => peer = s);
  const s = await a.openStream("b:1", 100);
  await assert.rejects(s.send(bytes(11)), (e) => isJwError(e, "frame_too_large"));
  const waiting = s.receive(500);
  waiting.catch(() => {});
  await clock.advance(499);
  await clock.advance(1);
  await assert.rejects(waiting, (e) => isJwError(e, "timeout"));
  assert.ok(peer);
  const peerWaiting = peer.receive(10_000);
  await b.close();
  await assert.rejects(peerWaiting, (e) => isJwError(e, "closed"));
  await clock.advance(1);
  assert.equal(await s.receive(100), null, "the closed side's peer sees the end");
  await assert.rejects(b.openStream("a:1", 100), (e) => isJwError(e, "closed"));
  // The address is free again.
  const b2 = net.transport("b:1");
  assert.equal(b2.address, "b:1");
  assert.throws(() => net.transport("b:1"), (e) => isJwError(e, "conflict"));
});

Deno.test("MemNetwork.kill() silences a node: packets and streams go nowhere", async () => {
  const { clock, net } = setup();
  const a = net.transport("a:1");
  const b = net.transport("b:1");
  const atA = inbox(a);
  const atB = inbox(b);
  let peer: import("./transport.ts").Stream | undefined;
  b.onStream((s) => peer = s);
  const s = await a.openStream("b:1", 100);
  await clock.advance(1);
  assert.ok(peer);
  net.kill("b:1");
  assert.equal(net.isKilled("b:1"), true);
  a.sendPacket("b:1", bytes(1));
  b.sendPacket("a:1", bytes(1));
  await s.send(bytes(1));
  const waiting = s.receive(1000);
  waiting.catch(() => {});
  await peer.send(bytes(1));
  await clock.advance(1000);
  assert.deepEqual([atA.length, atB.length], [0, 0]);
  await assert.rejects(waiting, (e) => isJwError(e, "timeout"));
  await assert.rejects(a.openStream("b:1", 100), (e) => isJwError(e, "not_connected"));
  await assert.rejects(b.openStream("a:1", 100), (e) => isJwError(e, "not_connected"));
  // A restart on the same address works.
  const b2 = net.transport("b:1");
  const atB2 = inbox(b2);
  a.sendPacket("b:1", bytes(1));
  await clock.advance(1);
  assert.equal(atB2.length, 1);
});

Deno.test("PausableClock holds timers and input while paused, then catches up timers first", async () => {
  const clock = new FakeClock(0);
  const net = new MemNetwork({ clock, random: seededRandom(1), defaults: { delayMs: 5 } });
  const pausable = new PausableClock(clock);
  const a = net.transport("a:1");
  const b = net.transport("b:1", { clock: pausable });
  const log: string[] = [];
  b.onPacket((p) => log.push(`packet@${p.at}`));
  pausable.setTimeout(() => log.push(`timer200@${pausable.now()}`), 200);
  pausable.setTimeout(() => log.push(`timer100@${pausable.now()}`), 100);
  const cancelled = pausable.setTimeout(() => log.push("cancelled"), 150);
  pausable.pause();
  assert.equal(pausable.paused, true);
  a.sendPacket("b:1", bytes(1));
  await clock.advance(300);
  pausable.clearTimeout(cancelled);
  assert.deepEqual(log, []);
  pausable.resume();
  assert.deepEqual(log, ["timer100@300", "timer200@300", "packet@300"]);
  a.sendPacket("b:1", bytes(1));
  await clock.advance(5);
  assert.deepEqual(log.at(-1), "packet@305");
  const slept = pausable.sleep(10);
  await clock.advance(10);
  await slept;
  assert.equal(clock.pending, 0);
});
