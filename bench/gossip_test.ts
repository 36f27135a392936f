import assert from "node:assert/strict";
import type { MemberState } from "./_gossip_nodes.ts";
import {
  allAlive,
  type GossipFigures,
  listedAs,
  notAlive,
  type Observer,
  summarizeRuns,
  trafficFigures,
  watchNodes,
} from "./gossip.ts";

/** A clock that moves only when a poll is answered (2 ms) or a poll interval is waited. */
function fakeTime() {
  let now = 0;
  return {
    now: () => now,
    sleep: (ms: number) => {
      now += ms;
      return Promise.resolve();
    },
    advance: (ms: number) => (now += ms),
  };
}

/** A node whose member list changes from `before` to `after` at time `at`. */
function scripted(
  name: string,
  time: ReturnType<typeof fakeTime>,
  at: number,
  before: Record<string, MemberState>,
  after: Record<string, MemberState>,
): Observer & { polls: number } {
  const node = {
    name,
    polls: 0,
    members() {
      node.polls++;
      time.advance(2);
      return Promise.resolve(new Map(Object.entries(time.now() >= at ? after : before)));
    },
  };
  return node;
}

Deno.test("watchNodes() takes the midpoint between the last poll without and the first with", async () => {
  const time = fakeTime();
  const node = scripted("n1", time, 25, { n2: "alive" }, { n2: "left" });
  const { times, missing } = await watchNodes([node], {
    left: listedAs("n2", "left"),
    gone: notAlive("n2"),
  }, { t0: 0, pollMs: 10, timeoutMs: 1000, now: time.now, sleep: time.sleep });
  // Polls answered at 1 (sent 0, back 2), 13 and 25: the change falls between 13 and 25.
  assert.deepEqual(times, { left: 19, gone: 19 });
  assert.deepEqual(missing, []);
  assert.equal(node.polls, 3);
});

Deno.test("watchNodes() reports the slowest node, and NaN with the reason on a timeout", async () => {
  const time = fakeTime();
  const early = scripted("early", time, 0, {}, { x: "failed" });
  const late = scripted("late", time, 60, { x: "alive" }, { x: "failed" });
  const { times } = await watchNodes([early, late], { failed: listedAs("x", "failed") }, {
    t0: 0,
    pollMs: 10,
    timeoutMs: 1000,
    now: time.now,
    sleep: time.sleep,
  });
  assert.ok(times.failed >= 50 && times.failed <= 70, `${times.failed}`);

  const never = scripted("never", time, Infinity, { x: "suspect" }, {});
  const t0 = time.now();
  const out = await watchNodes([never], { failed: listedAs("x", "failed") }, {
    t0,
    pollMs: 10,
    timeoutMs: 100,
    now: time.now,
    sleep: time.sleep,
  });
  assert.ok(Number.isNaN(out.times.failed));
  assert.deepEqual(out.missing, ["never: failed (x=suspect)"]);
});

Deno.test("watchNodes() ignores failed polls", async () => {
  const time = fakeTime();
  let calls = 0;
  const flaky: Observer = {
    name: "flaky",
    members() {
      time.advance(2);
      if (++calls < 3) return Promise.reject(new Error("connection refused"));
      return Promise.resolve(new Map([["a", "alive" as const], ["b", "alive" as const]]));
    },
  };
  const { times } = await watchNodes([flaky], { join: allAlive(["a", "b"]) }, {
    t0: 0,
    pollMs: 10,
    timeoutMs: 1000,
    now: time.now,
    sleep: time.sleep,
  });
  // Two failed polls teach nothing: the lower bound stays at t0 (0); the answer is at 25.
  assert.equal(times.join, 12.5);
});

Deno.test("the conditions read one member list", () => {
  const list = new Map<string, MemberState>([["a", "alive"], ["b", "leaving"], ["c", "suspect"]]);
  assert.equal(allAlive(["a"])(list), true);
  assert.equal(allAlive(["a", "b"])(list), false);
  assert.equal(listedAs("b", "leaving")(list), true);
  assert.equal(notAlive("b")(list), true);
  assert.equal(notAlive("c")(list), false, "a suspect is still alive");
  assert.equal(notAlive("gone")(list), true, "a node no longer listed is not alive");
});

Deno.test("trafficFigures() divides by nodes and seconds", () => {
  const f = trafficFigures({
    windowUs: 10_000_000,
    udpPackets: 100,
    udpPayload: 16_000,
    tcpPackets: 40,
    tcpPayload: 4_000,
    tcpDataSegments: 8,
    tcpConnections: 2,
    ipBytes: 24_000,
  }, 5);
  assert.deepEqual(f, {
    bytes: 400,
    ipBytes: 480,
    udpPackets: 2,
    udpPayloadMean: 160,
    tcpBytes: 80,
    tcpBytesPerConnection: 2000,
  });
});

Deno.test("summarizeRuns() takes the median and range of each figure, leaving out NaN", () => {
  const run = (joinMs: number, bytes: number): GossipFigures => ({
    joinMs,
    failedMs: 5000,
    leftMs: NaN,
    notAliveMs: 100,
    bytes,
    ipBytes: bytes,
    udpPackets: 2,
    udpPayloadMean: 100,
    tcpBytes: 10,
    tcpBytesPerConnection: 500,
  });
  const s = summarizeRuns("jw", 5, [run(300, 10), run(100, 30), run(NaN, 20)]);
  assert.equal(s.median.joinMs, 200);
  assert.equal(s.min.joinMs, 100);
  assert.equal(s.max.joinMs, 300);
  assert.equal(s.median.bytes, 20);
  assert.ok(Number.isNaN(s.median.leftMs));
  assert.equal(s.runs.length, 3);
});
