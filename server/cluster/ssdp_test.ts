import assert from "node:assert/strict";
import { Buffer } from "node:buffer";
import { createHmac, timingSafeEqual } from "node:crypto";
import dgram from "node:dgram";
import { FakeClock } from "../../shared/clock.ts";
import { isJwError } from "../../shared/errors.ts";
import { createLogger, type Logger, silentLogger } from "../../shared/log.ts";
import { seededRandom } from "../../shared/random.ts";
import { createKeyring, generateClusterKey } from "./keyring.ts";
import { peerToken } from "./peer_auth.ts";
import {
  keyringSsdpAuth,
  type Ssdp,
  type SsdpAuth,
  type SsdpIgnored,
  type SsdpOptions,
  startSsdp,
} from "./ssdp.ts";

const GROUP = "239.255.255.250";
const LOOPBACK = "127.0.0.1";
const CLUSTER = "jw-test";
const INTERVAL_MS = 60_000;

/** The test signature: base64url(payload).base64url(HMAC-SHA256(key, payload)). */
function hmacAuth(key: string): SsdpAuth {
  const mac = (data: Uint8Array) => createHmac("sha256", key).update(data).digest();
  return {
    sign: (payload) =>
      `${Buffer.from(payload).toString("base64url")}.${mac(payload).toString("base64url")}`,
    verify(token) {
      const [body, sig, extra] = token.split(".");
      if (body === undefined || sig === undefined || extra !== undefined) return undefined;
      const payload = new Uint8Array(Buffer.from(body, "base64url"));
      const got = Buffer.from(sig, "base64url");
      const want = mac(payload);
      return got.length === want.length && timingSafeEqual(got, want) ? payload : undefined;
    },
  };
}

const AUTH = hmacAuth("test key");
const FORGER = hmacAuth("not the cluster key");

/** A UDP port free right now (the SSDP sockets share it with SO_REUSEADDR). */
async function freePort(): Promise<number> {
  const socket = dgram.createSocket("udp4");
  await new Promise<void>((resolve) => socket.bind(0, LOOPBACK, () => resolve()));
  const { port } = socket.address();
  await new Promise<void>((resolve) => socket.close(() => resolve()));
  return port;
}

/** Lets the event loop run (and the fake clock move `stepMs` a turn) until `condition` holds. */
async function until(
  condition: () => boolean,
  clock?: FakeClock,
  stepMs = 10,
  maxTurns = 1000,
): Promise<void> {
  for (let turn = 0; turn < maxTurns; turn++) {
    if (condition()) return;
    await new Promise((resolve) => setTimeout(resolve, 0));
    if (clock) await clock.advance(stepMs);
  }
  assert.fail(`condition not met after ${maxTurns} event loop turns`);
}

/** Runs the event loop for `turns` turns, so datagrams in flight arrive. */
async function settle(clock?: FakeClock, stepMs = 10, turns = 50): Promise<void> {
  for (let turn = 0; turn < turns; turn++) {
    await new Promise((resolve) => setTimeout(resolve, 0));
    if (clock) await clock.advance(stepMs);
  }
}

interface Node {
  ssdp: Ssdp;
  gossip: string;
  /** Addresses `onPeer` was called with, in order. */
  found: string[];
}

async function startNode(
  name: string,
  port: number,
  clock: FakeClock,
  options: Partial<SsdpOptions> = {},
): Promise<Node> {
  const gossip = `127.0.0.${10 + Number(name.replace(/\D/g, "") || 0)}:7401`;
  const found: string[] = [];
  const ssdp = await startSsdp({
    serverId: name,
    cluster: CLUSTER,
    gossip,
    port,
    interface: LOOPBACK,
    intervalMs: INTERVAL_MS,
    clock,
    random: seededRandom(name.length * 7919 + name.charCodeAt(name.length - 1)),
    logger: silentLogger,
    ...AUTH,
    onPeer: (address) => found.push(address),
    ...options,
  });
  return { ssdp, gossip, found };
}

/** A plain socket on loopback that sends to the group and records what it receives. */
class RawPeer implements AsyncDisposable {
  readonly received: string[] = [];
  readonly #socket: dgram.Socket;
  readonly #port: number;

  private constructor(socket: dgram.Socket, port: number) {
    this.#socket = socket;
    this.#port = port;
    socket.on("message", (msg) => this.received.push(new TextDecoder().decode(msg)));
  }

  static async open(port: number): Promise<RawPeer> {
    const socket = dgram.createSocket("udp4");
    await new Promise<void>((resolve) => socket.bind(0, LOOPBACK, () => resolve()));
    socket.setMulticastInterface(LOOPBACK);
    return new RawPeer(socket, port);
  }

  send(data: string | Uint8Array): void {
    this.#socket.send(data, this.#port, GROUP);
  }

  [Symbol.asyncDispose](): Promise<void> {
    return new Promise((resolve) => this.#socket.close(() => resolve()));
  }
}

interface Fields {
  id: string;
  gossip?: string;
  t: number;
  cluster?: string;
  /** What the payload says, when it should differ from the headers. */
  signed?: { cluster?: string; id?: string; gossip?: string; kind?: string };
  auth?: SsdpAuth;
  /** Replaces the token; null leaves the header out. */
  token?: string | null;
}

function token(f: Fields, kind: "alive" | "search"): string {
  const body: Record<string, unknown> = {
    v: 1,
    k: f.signed?.kind ?? kind,
    c: f.signed?.cluster ?? f.cluster ?? CLUSTER,
    id: f.signed?.id ?? f.id,
  };
  if (kind === "alive") body.g = f.signed?.gossip ?? f.gossip;
  body.t = f.t;
  return (f.auth ?? AUTH).sign(new TextEncoder().encode(JSON.stringify(body)));
}

function lines(start: string, headers: [string, string][], f: Fields, kind: "alive" | "search") {
  const tok = f.token === undefined ? token(f, kind) : f.token;
  if (tok !== null) headers.push(["X-JW-TOKEN", tok]);
  return [start, ...headers.map(([n, v]) => `${n}: ${v}`), "", ""].join("\r\n");
}

/** A NOTIFY as another server would send it. */
function notify(f: Fields, nt = "urn:jabberwocky:gossip:1", nts = "ssdp:alive"): string {
  return lines(
    "NOTIFY * HTTP/1.1",
    [
      ["HOST", `${GROUP}:1900`],
      ["CACHE-CONTROL", "max-age=30"],
      ["NT", nt],
      ["NTS", nts],
      ["USN", `uuid:${f.id}`],
      ["LOCATION", f.gossip ?? ""],
      ["X-JW-CLUSTER", f.cluster ?? CLUSTER],
    ],
    f,
    "alive",
  );
}

/** An M-SEARCH as another server would send it. */
function mSearch(f: Fields): string {
  return lines(
    "M-SEARCH * HTTP/1.1",
    [
      ["HOST", `${GROUP}:1900`],
      ["MAN", '"ssdp:discover"'],
      ["MX", "1"],
      ["ST", "urn:jabberwocky:gossip:1"],
      ["USN", `uuid:${f.id}`],
      ["X-JW-CLUSTER", f.cluster ?? CLUSTER],
    ],
    f,
    "search",
  );
}

function headersOf(text: string): Map<string, string> {
  const map = new Map<string, string>();
  for (const line of text.split("\r\n").slice(1)) {
    const colon = line.indexOf(":");
    if (colon > 0) map.set(line.slice(0, colon), line.slice(colon + 1).trim());
  }
  return map;
}

/** True when `address:port` can be bound without SO_REUSEADDR: no socket holds it. */
async function portIsFree(port: number, address?: string): Promise<boolean> {
  const socket = dgram.createSocket({ type: "udp4", reuseAddr: false });
  const bound = await new Promise<boolean>((resolve) => {
    socket.once("error", () => resolve(false));
    socket.bind(port, address, () => resolve(true));
  });
  await new Promise<void>((resolve) => {
    try {
      socket.close(() => resolve());
    } catch {
      resolve();
    }
  });
  return bound;
}

/** A member of the group on `port` recording the source ports of what it hears. */
async function watchGroup(port: number): Promise<{ ports: Set<number> } & AsyncDisposable> {
  const socket = dgram.createSocket({ type: "udp4", reuseAddr: true });
  await new Promise<void>((resolve) => socket.bind(port, undefined, () => resolve()));
  socket.addMembership(GROUP, LOOPBACK);
  const ports = new Set<number>();
  socket.on("message", (_msg, rinfo) => ports.add(rinfo.port));
  return {
    ports,
    [Symbol.asyncDispose]: () => new Promise((resolve) => socket.close(() => resolve())),
  };
}

function recordingLogger(): { logger: Logger; lines: string[] } {
  const out: string[] = [];
  return { logger: createLogger("ssdp", { level: "debug", sink: (l) => out.push(l) }), lines: out };
}

Deno.test("startSsdp() refuses bad options with a config error", async (t) => {
  const clock = new FakeClock();
  const base: SsdpOptions = {
    serverId: "s1",
    cluster: CLUSTER,
    gossip: "127.0.0.1:7401",
    port: 1,
    interface: LOOPBACK,
    clock,
    random: seededRandom(1),
    logger: silentLogger,
    ...AUTH,
    onPeer: () => {},
  };
  const cases: [string, Partial<SsdpOptions>, RegExp][] = [
    ["empty server id", { serverId: "" }, /server id ""/],
    ["server id with a space", { serverId: "s 1" }, /server id/],
    ["server id with CRLF", { serverId: "s1\r\nX: y" }, /server id/],
    ["cluster with a newline", { cluster: "jw\n" }, /cluster name/],
    ["gossip 0.0.0.0", { gossip: "0.0.0.0:7401" }, /advertise address/],
    ["gossip port 0", { gossip: "10.0.0.1:0" }, /advertise address/],
    ["gossip without port", { gossip: "10.0.0.1" }, /bad SSDP gossip address/],
    ["unicast group", { group: "10.0.0.1" }, /multicast/],
    ["IPv6 group", { group: "ff02::c" }, /multicast/],
    ["port 0", { port: 0 }, /port 0/],
    ["port 70000", { port: 70000 }, /port 70000/],
    ["interface by name", { interface: "eth0" }, /interface "eth0"/],
    ["tiny interval", { intervalMs: 5 }, /interval 5/],
    ["zero window", { windowMs: 0 }, /time window 0/],
  ];
  for (const [name, override, message] of cases) {
    await t.step(name, async () => {
      await assert.rejects(
        startSsdp({ ...base, ...override }),
        (err) => isJwError(err, "config") && message.test(err.message),
      );
    });
  }
  assert.equal(clock.pending, 0);
});

Deno.test("two servers find each other by NOTIFY and report each address once", async () => {
  const port = await freePort();
  const clock = new FakeClock();
  const a = await startNode("s1", port, clock);
  // s1's first NOTIFY and M-SEARCH have gone round (it heard them itself) before s2 starts.
  await until(() => a.ssdp.stats().ignored.own === 2);
  const b = await startNode("s2", port, clock);
  await using _stop = {
    [Symbol.asyncDispose]: () => Promise.all([a, b].map((n) => n.ssdp.stop())).then(() => {}),
  };

  // s1 hears s2's first NOTIFY without any timer firing.
  await until(() => a.found.length === 1);
  assert.deepEqual(a.found, [b.gossip]);
  assert.equal(a.ssdp.stats().notifiesAccepted, 1);
  assert.equal(a.ssdp.stats().answersAccepted, 0);

  // s2 started after s1's first NOTIFY: it learns s1 from the answer to its M-SEARCH.
  await until(() => b.found.length === 1, clock);
  assert.deepEqual(b.found, [a.gossip]);
  assert.equal(b.ssdp.stats().answersAccepted, 1);

  // The periodic NOTIFY reaches both; the known addresses are not reported again.
  const before = [a.ssdp.stats().notifiesAccepted, b.ssdp.stats().notifiesAccepted];
  await until(
    () =>
      a.ssdp.stats().notifiesAccepted > before[0] && b.ssdp.stats().notifiesAccepted > before[1],
    clock,
    1000,
  );
  assert.deepEqual(a.found, [b.gossip]);
  assert.deepEqual(b.found, [a.gossip]);
  assert.equal(a.ssdp.stats().peersReported, 1);
  assert.equal(a.ssdp.stats().ignored.badToken, 0);
});

Deno.test("a server started later finds the others by M-SEARCH within a second", async () => {
  const port = await freePort();
  const clock = new FakeClock();
  const nodes: Node[] = [];
  try {
    nodes.push(await startNode("s1", port, clock), await startNode("s2", port, clock));
    await until(() => nodes.every((n) => n.found.length === 1), clock);
    const startedAt = clock.now();
    const c = await startNode("s3", port, clock);
    nodes.push(c);
    await until(() => c.found.length === 2, clock);
    assert.ok(clock.now() - startedAt <= 1100, `took ${clock.now() - startedAt} ms`);
    assert.deepEqual(c.found.toSorted(), [nodes[0].gossip, nodes[1].gossip]);
    const stats = c.ssdp.stats();
    assert.equal(stats.answersAccepted, 2);
    assert.equal(stats.notifiesAccepted, 0, "no periodic NOTIFY was due yet");
    // The earlier two heard the newcomer's own NOTIFY and answered its search.
    for (const n of nodes.slice(0, 2)) {
      assert.deepEqual(n.found.at(-1), c.gossip);
      assert.ok(n.ssdp.stats().answersSent >= 1);
    }
  } finally {
    await Promise.all(nodes.map((n) => n.ssdp.stop()));
  }
});

Deno.test("a server ignores its own announcements and searches", async () => {
  const port = await freePort();
  const clock = new FakeClock();
  const a = await startNode("s1", port, clock);
  try {
    await until(() => a.ssdp.stats().ignored.own >= 2);
    await settle(clock, 100, 20);
    const stats = a.ssdp.stats();
    assert.equal(stats.notifiesSent, 1);
    assert.equal(stats.searchesSent, 1);
    assert.equal(stats.answersSent, 0, "it never answers its own search");
    assert.equal(stats.notifiesAccepted + stats.answersAccepted, 0);
    assert.deepEqual(a.found, []);
  } finally {
    await a.ssdp.stop();
  }
});

Deno.test("forged, foreign and malformed datagrams are ignored and counted", async (t) => {
  const port = await freePort();
  const clock = new FakeClock();
  const a = await startNode("s1", port, clock);
  await using raw = await RawPeer.open(port);
  try {
    await until(() => a.ssdp.stats().ignored.own >= 2);
    const now = clock.now();
    const good = { id: "x1", gossip: "10.0.0.9:7401", t: now };
    const cases: [string, string | Uint8Array, keyof SsdpIgnored][] = [
      ["signed with another key", notify({ ...good, auth: FORGER }), "badToken"],
      ["no token", notify({ ...good, token: null }), "badToken"],
      ["a token that is not one", notify({ ...good, token: "garbage" }), "badToken"],
      ["another cluster", notify({ ...good, cluster: "other" }), "otherCluster"],
      [
        "another cluster's key",
        notify({ ...good, cluster: "other", auth: FORGER }),
        "otherCluster",
      ],
      ["payload of another cluster", notify({ ...good, signed: { cluster: "other" } }), "badToken"],
      [
        "LOCATION not the signed one",
        notify({ ...good, signed: { gossip: "10.6.6.6:1" } }),
        "badToken",
      ],
      ["USN not the signed one", notify({ ...good, signed: { id: "x2" } }), "badToken"],
      ["a search token on a NOTIFY", notify({ ...good, signed: { kind: "search" } }), "badToken"],
      ["too old", notify({ ...good, t: now - 31_000 }), "stale"],
      ["from the future", notify({ ...good, t: now + 31_000 }), "stale"],
      ["our own id", notify({ ...good, id: "s1" }), "own"],
      ["a UPnP device", notify(good, "upnp:rootdevice"), "otherTarget"],
      ["a byebye", notify(good, undefined, "ssdp:byebye"), "otherTarget"],
      [
        "a search for everything",
        mSearch({ id: "x1", t: now }).replace(/\r\nST: [^\r]*/, "\r\nST: ssdp:all"),
        "otherTarget",
      ],
      ["garbage", "hello there", "malformed"],
      ["invalid UTF-8", new Uint8Array([0x4e, 0xff, 0xfe, 0x0d, 0x0a]), "malformed"],
      ["a header without colon", notify(good).replace("NTS: ", "NTS "), "malformed"],
      [
        "a duplicate header",
        notify(good).replace("NTS:", "LOCATION: 10.6.6.6:1\r\nNTS:"),
        "malformed",
      ],
      ["no USN", notify(good).replace(/USN: .*\r\n/, ""), "malformed"],
      [
        "too large",
        notify(good).replace("\r\n\r\n", `\r\nX-PAD: ${"a".repeat(5000)}\r\n\r\n`),
        "malformed",
      ],
      ["an unreachable LOCATION", notify({ ...good, gossip: "0.0.0.0:7401" }), "malformed"],
    ];
    for (const [name, datagram, reason] of cases) {
      await t.step(name, async () => {
        const before = a.ssdp.stats();
        raw.send(datagram);
        await until(() => a.ssdp.stats().ignored[reason] === before.ignored[reason] + 1);
        const after = a.ssdp.stats();
        assert.equal(after.notifiesAccepted, before.notifiesAccepted);
        assert.equal(after.searchesAccepted, before.searchesAccepted);
      });
    }
    assert.deepEqual(a.found, []);
    // The control: the same announcement, properly signed, is believed.
    raw.send(notify(good));
    await until(() => a.found.length === 1);
    assert.deepEqual(a.found, [good.gossip]);
  } finally {
    await a.ssdp.stop();
  }
});

Deno.test("only signed searches are answered: once each, by unicast, after at most 1 s", async () => {
  const port = await freePort();
  const clock = new FakeClock();
  const a = await startNode("s1", port, clock);
  await using raw = await RawPeer.open(port);
  try {
    await until(() => a.ssdp.stats().ignored.own >= 2);

    raw.send(mSearch({ id: "x1", t: clock.now(), auth: FORGER }));
    raw.send(mSearch({ id: "x1", t: clock.now(), cluster: "other" }));
    await until(() =>
      a.ssdp.stats().ignored.badToken === 1 && a.ssdp.stats().ignored.otherCluster === 1
    );
    await settle(clock, 100, 20);
    assert.equal(raw.received.length, 0);
    assert.equal(a.ssdp.stats().answersSent, 0);

    const search = mSearch({ id: "x1", t: clock.now() });
    raw.send(search);
    const sentAt = clock.now();
    await until(() => raw.received.length === 1, clock);
    assert.ok(clock.now() - sentAt <= 1000 + 10);
    const answer = raw.received[0];
    assert.ok(answer.startsWith("HTTP/1.1 200 OK\r\n"), answer);
    const h = headersOf(answer);
    assert.equal(h.get("ST"), "urn:jabberwocky:gossip:1");
    assert.equal(h.get("USN"), "uuid:s1");
    assert.equal(h.get("LOCATION"), a.gossip);
    assert.equal(h.get("X-JW-CLUSTER"), CLUSTER);
    const payload = AUTH.verify(h.get("X-JW-TOKEN")!);
    assert.ok(payload, "the answer's token verifies");
    const { t: signedAt, ...fields } = JSON.parse(new TextDecoder().decode(payload));
    assert.deepEqual(fields, { v: 1, k: "alive", c: CLUSTER, id: "s1", g: a.gossip });
    assert.ok(signedAt >= sentAt && signedAt <= clock.now());

    // The same search again (a replay) is not answered.
    raw.send(search);
    await until(() => a.ssdp.stats().ignored.replayed === 1);
    // Two fresh searches in a row from one address get one answer.
    raw.send(mSearch({ id: "x1", t: clock.now() + 1 }));
    raw.send(mSearch({ id: "x1", t: clock.now() + 2 }));
    await until(() => a.ssdp.stats().answersDropped === 1);
    await settle(clock, 100, 20);
    assert.equal(raw.received.length, 2);
    assert.equal(a.ssdp.stats().searchesAccepted, 3);
    assert.equal(a.ssdp.stats().answersSent, 2);
  } finally {
    await a.ssdp.stop();
  }
});

Deno.test("an address is reported again when it changes or was not heard for three intervals", async () => {
  const port = await freePort();
  const clock = new FakeClock();
  const a = await startNode("s1", port, clock);
  await using raw = await RawPeer.open(port);
  const accepted = () => a.ssdp.stats().notifiesAccepted;
  const send = async (gossip: string, t: number) => {
    const before = a.ssdp.stats();
    raw.send(notify({ id: "x1", gossip, t }));
    await until(() => {
      const s = a.ssdp.stats();
      return s.notifiesAccepted + s.ignored.stale > before.notifiesAccepted + before.ignored.stale;
    });
  };
  try {
    const t0 = clock.now();
    await send("10.0.0.9:7401", t0);
    await send("10.0.0.9:7401", t0 + 1);
    assert.deepEqual(a.found, ["10.0.0.9:7401"]);
    await send("10.0.0.10:7401", t0 + 2);
    assert.deepEqual(a.found, ["10.0.0.9:7401", "10.0.0.10:7401"]);
    // An older announcement (a replay) cannot move it back.
    await send("10.0.0.9:7401", t0 + 1);
    assert.equal(a.ssdp.stats().ignored.stale, 1);
    assert.equal(a.found.length, 2);
    assert.equal(accepted(), 3);
    // Not heard for three intervals: reported again when it comes back.
    await clock.advance(3 * INTERVAL_MS + 1);
    await send("10.0.0.10:7401", clock.now());
    assert.deepEqual(a.found, ["10.0.0.9:7401", "10.0.0.10:7401", "10.0.0.10:7401"]);
    assert.equal(a.ssdp.stats().peersReported, 3);
  } finally {
    await a.ssdp.stop();
  }
});

Deno.test("an onPeer that throws is logged and discovery goes on", async () => {
  const port = await freePort();
  const clock = new FakeClock();
  const { logger, lines: logged } = recordingLogger();
  let calls = 0;
  const a = await startNode("s1", port, clock, {
    logger,
    onPeer: () => {
      calls++;
      throw new Error("boom");
    },
  });
  await using raw = await RawPeer.open(port);
  try {
    raw.send(notify({ id: "x1", gossip: "10.0.0.9:7401", t: clock.now() }));
    raw.send(notify({ id: "x2", gossip: "10.0.0.8:7401", t: clock.now() }));
    await until(() => calls === 2);
    assert.equal(logged.filter((l) => l.includes("SSDP peer handler failed")).length, 2);
  } finally {
    await a.ssdp.stop();
  }
});

Deno.test("network trouble is logged and counted, never thrown", async (t) => {
  await t.step("the port is held exclusively by another socket", async () => {
    const holder = dgram.createSocket({ type: "udp4", reuseAddr: false });
    await new Promise<void>((resolve) => holder.bind(0, undefined, () => resolve()));
    const port = holder.address().port;
    const { logger, lines: logged } = recordingLogger();
    const a = await startNode("s1", port, new FakeClock(), { logger });
    try {
      const stats = a.ssdp.stats();
      assert.equal(stats.socketErrors, 1);
      assert.ok(logged.some((l) => l.includes("WARN") && l.includes("cannot bind an SSDP socket")));
      await until(() => a.ssdp.stats().notifiesSent === 1, undefined, 0);
    } finally {
      await a.ssdp.stop();
      await new Promise<void>((resolve) => holder.close(() => resolve()));
    }
  });
  await t.step("the interface address is not on this host", async () => {
    const { logger, lines: logged } = recordingLogger();
    const a = await startNode("s1", await freePort(), new FakeClock(), {
      logger,
      interface: "198.51.100.7",
    });
    try {
      assert.ok(a.ssdp.stats().socketErrors >= 1);
      assert.ok(logged.some((l) => l.includes("WARN")));
      a.ssdp.search();
      assert.equal(a.ssdp.stats().searchesSent, 0);
    } finally {
      await a.ssdp.stop();
    }
  });
});

Deno.test("stop() cancels every timer, closes the sockets and is idempotent", async () => {
  const port = await freePort();
  const clock = new FakeClock();
  await using raw = await RawPeer.open(port);
  let senderPort: number;
  const a = await startNode("s1", port, clock);
  {
    await using watcher = await watchGroup(port);
    a.ssdp.search();
    await until(() => watcher.ports.size === 1);
    senderPort = [...watcher.ports][0];
  }
  assert.equal(await portIsFree(port), false, "the group listener holds the port");
  assert.equal(await portIsFree(senderPort, LOOPBACK), false, "the sender holds its port");
  assert.equal(clock.pending, 1, "the next announcement");
  raw.send(mSearch({ id: "x1", t: clock.now() }));
  await until(() => a.ssdp.stats().searchesAccepted === 1);
  assert.equal(clock.pending, 2, "the next announcement and one answer");

  await a.ssdp.stop();
  assert.equal(clock.pending, 0);
  assert.equal(await portIsFree(port), true, "the group listener is closed");
  assert.equal(await portIsFree(senderPort, LOOPBACK), true, "the sender is closed");
  await a.ssdp.stop();
  a.ssdp.search();
  await clock.advance(2 * INTERVAL_MS);
  await settle();
  const stats = a.ssdp.stats();
  assert.equal(stats.searchesSent, 2);
  assert.equal(stats.notifiesSent, 1);
  assert.equal(stats.answersSent, 0);
  assert.equal(raw.received.length, 0);
});

Deno.test("keyringSsdpAuth() signs with the primary key and accepts only its own tokens", async (t) => {
  const key = generateClusterKey();
  const next = generateClusterKey();
  const keyring = createKeyring({ cluster: CLUSTER, keys: [key] });
  const auth = keyringSsdpAuth(keyring);
  const payload = new TextEncoder().encode('{"v":1}');

  await t.step("round trip", () => {
    const tok = auth.sign(payload);
    assert.match(tok, /^[\w-]+\.[\w-]+\.[\w-]+$/);
    assert.deepEqual(auth.verify(tok), payload);
  });
  await t.step("accepted under any installed key during rotation", () => {
    const other = createKeyring({ cluster: CLUSTER, keys: [key, next], primary: next });
    assert.deepEqual(auth.verify(keyringSsdpAuth(other).sign(payload)), undefined);
    keyring.install(next);
    assert.deepEqual(auth.verify(keyringSsdpAuth(other).sign(payload)), payload);
  });
  await t.step("refused", () => {
    const stranger = keyringSsdpAuth(
      createKeyring({ cluster: CLUSTER, keys: [generateClusterKey()] }),
    );
    const tok = auth.sign(payload);
    const [h, p, s] = tok.split(".");
    const cases: [string, string][] = [
      ["another key", stranger.sign(payload)],
      ["a changed payload", `${h}.${Buffer.from('{"v":2}').toString("base64url")}.${s}`],
      ["a changed signature", `${h}.${p}.${s.slice(0, -2)}AA`],
      ["no signature", `${h}.${p}.`],
      ["two parts", `${h}.${p}`],
      ["a peer token", peerToken(keyring, "s1", "x", Date.now())],
      ["empty", ""],
    ];
    for (const [name, bad] of cases) assert.equal(auth.verify(bad), undefined, name);
  });
});

Deno.test("a sign() that throws or makes an unprintable token sends nothing and throws nothing", async (t) => {
  for (
    const [name, sign] of [
      ["throws", () => {
        throw new Error("no key");
      }],
      ["CRLF in the token", () => "abc\r\nX-EVIL: 1"],
    ] as [string, SsdpAuth["sign"]][]
  ) {
    await t.step(name, async () => {
      const port = await freePort();
      const clock = new FakeClock();
      const { logger, lines: logged } = recordingLogger();
      await using watcher = await watchGroup(port);
      const a = await startNode("s1", port, clock, { sign, logger });
      try {
        a.ssdp.search();
        await clock.advance(INTERVAL_MS * 1.1); // the next NOTIFY is due within ±10 %
        await settle();
        const stats = a.ssdp.stats();
        assert.equal(stats.notifiesSent + stats.searchesSent, 0);
        assert.equal(stats.sendFailed, 4, "two NOTIFYs and two M-SEARCHes");
        assert.equal(watcher.ports.size, 0);
        assert.ok(logged.some((l) => l.includes("WARN") && l.includes("cannot sign")));
      } finally {
        await a.ssdp.stop();
      }
    });
  }
});
