import assert from "node:assert/strict";
import { DatabaseSync } from "node:sqlite";
import { FakeClock } from "../shared/clock.ts";
import { AgentConfig } from "../shared/config/mod.ts";
import { MemFs } from "../shared/fs/mod.ts";
import { silentLogger } from "../shared/log.ts";
import { type JwAgent, startAgent } from "./mod.ts";
import { FakeExecutor } from "./_fake_executor.ts";
import { type FakePeer, FakeTransport } from "./_fake_transport.ts";
import { until } from "./_test_commands.ts";

const T0 = Date.UTC(2026, 0, 1);

/** Agents on one data directory, a fake clock, a fake transport and a fake executor. */
class Fleet {
  readonly clock = new FakeClock(T0);
  readonly transport = Object.assign(new FakeTransport(), { delivery: { dseq: 0 } });
  /** Each process prints its args and exits 0. */
  readonly executor = new FakeExecutor((p) => p.out(p.spec.args.join(" ")).exit(0));
  readonly fs = new MemFs();
  readonly config: AgentConfig;

  constructor(readonly dir: string, over: Record<string, unknown> = {}) {
    this.config = AgentConfig.parse({
      id: "a1",
      server: "http://127.0.0.1:7400",
      data: dir,
      allowRun: ["/bin/echo"],
      reconnect: { min: "5ms", max: "20ms", failover: "10ms" },
      ...over,
    });
  }

  start(): Promise<JwAgent> {
    return startAgent(this.config, {
      clock: this.clock,
      transport: this.transport,
      executor: this.executor,
      fs: this.fs,
      logger: silentLogger,
    });
  }

  /** The server side of the handshake on connection `n`, up to the welcome. */
  async welcome(agent: JwAgent, n: number): Promise<FakePeer> {
    // Let the connect happen without time passing (discovery is async), else back off.
    for (let i = 0; i < 100 && this.transport.peers.length <= n; i++) await Promise.resolve();
    while (this.transport.peers.length <= n) await this.clock.advance(10);
    const peer = await this.transport.peer(n);
    await peer.expect("hello");
    const now = Math.floor(this.clock.now() / 1000);
    const kid = agent.kid;
    peer.send({
      v: 1,
      id: "c-1",
      type: "challenge",
      header: { alg: "EdDSA", typ: "JWT", kid },
      payload: {
        nonce: "nonce-0123456789abcdef",
        iat: now,
        exp: now + 30,
        aud: "s1",
        sub: "a1",
        kid,
      },
    });
    await peer.expect("response");
    const welcomed = agent.welcomed();
    peer.send({
      v: 1,
      id: "w-1",
      type: "welcome",
      serverId: "s1",
      agentId: "a1",
      heartbeatMs: 24 * 3_600_000,
      maxFrameBytes: 1 << 20,
    });
    await welcomed;
    return peer;
  }
}

async function withFleet(fn: (fleet: Fleet) => Promise<void>, over = {}): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix: "jw-agent-jobs-" });
  try {
    await fn(new Fleet(dir, over));
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

/** The stdout texts the peer received after its welcome, as "job:text". */
function outputs(peer: FakePeer): string[] {
  return peer.received
    .filter((f) => f.type === "output" && typeof f.text === "string")
    .map((f) => `${(f.job as { id: string }).id}:${f.text}`);
}

/** The done outputs the peer received. */
function dones(peer: FakePeer): Record<string, unknown>[] {
  return peer.received.filter((f) => f.type === "output" && f.done === true);
}

/** A read-only handle on the agent's database, for `using`. */
function readOnly(dir: string): { db: DatabaseSync } & Disposable {
  const db = new DatabaseSync(`${dir}/agent.db`, { readOnly: true });
  return { db, [Symbol.dispose]: () => db.close() };
}

/** Frames waiting in the outbox. */
/** Stored (unacknowledged) `done` outputs of job `job`. */
function queuedDone(db: DatabaseSync, job: string): number {
  const rows = db.prepare("SELECT frame FROM outbox").all() as { frame: string }[];
  return rows.map((r) => JSON.parse(r.frame)).filter((f) => f.job?.id === job && f.done).length;
}

/** Frames until the `done` output of envelope `id` whose `run` is set (or the install answer). */
async function untilDone(peer: FakePeer, id: string): Promise<Record<string, unknown>[]> {
  const frames: Record<string, unknown>[] = [];
  for (;;) {
    const f = await peer.next();
    if (f.id !== id) continue;
    frames.push(f);
    if (f.type === "output" && f.done === true) return frames;
  }
}

Deno.test("startAgent() reloads a persistent interval job after a restart and runs it with its meta", async () => {
  await withFleet(async (fleet) => {
    const first = await fleet.start();
    const peer0 = await fleet.welcome(first, 0);
    peer0.send({
      v: 1,
      id: "env-every",
      type: "command",
      meta: { ticket: "OPS-7" },
      job: {
        id: "every",
        key: "exec.run",
        args: { cmd: "/bin/echo", args: ["tick"] },
        schedule: { trigger: "interval", every: "1m" },
        persistent: true,
      },
    });
    const [answer] = await untilDone(peer0, "env-every");
    assert.deepEqual(answer.data, {
      installed: {
        id: "every",
        key: "exec.run",
        trigger: { trigger: "interval", every: "1m" },
        persistent: true,
        next: T0 + 60_000,
        replaced: false,
      },
    });
    await fleet.clock.advance(60_000);
    const run1 = await untilDone(peer0, "env-every");
    assert.deepEqual(run1.map((f) => f.text ?? null), ["tick", null]);
    await first.close();

    const second = await fleet.start();
    const peer1 = await fleet.welcome(second, 1);
    const restarted = fleet.clock.now();
    await fleet.clock.advance(60_000);
    const run2 = await untilDone(peer1, "env-every");
    assert.deepEqual(run2.map((f) => f.text ?? null), ["tick", null]);
    const done = run2[1];
    assert.deepEqual(done.meta, { ticket: "OPS-7" });
    assert.deepEqual(done.job, { id: "every", key: "exec.run" });
    assert.equal(done.start, restarted + 60_000);
    assert.notEqual(done.run, run1[1].run);
    assert.equal(done.exitCode, 0);
    await second.close();
  });
});

Deno.test("startAgent() fires onStart, onConnect, onDisconnect and onStop at their moments; offline output survives restarts", async () => {
  await withFleet(async (fleet) => {
    const a = await fleet.start();
    const peer0 = await fleet.welcome(a, 0);
    for (const event of ["onStart", "onConnect", "onDisconnect", "onStop"]) {
      peer0.send({
        v: 1,
        id: `env-${event}`,
        type: "command",
        job: {
          id: event,
          key: "exec.run",
          args: { cmd: "/bin/echo", args: [event] },
          schedule: { trigger: event },
          persistent: true,
        },
      });
      const [answer] = await untilDone(peer0, `env-${event}`);
      assert.equal(answer.error, null);
    }
    assert.deepEqual(outputs(peer0), [], "installing runs nothing");

    // onStop runs while the socket is still open, before it closes.
    await a.close();
    assert.deepEqual(outputs(peer0), ["onStop:onStop"]);
    assert.deepEqual(peer0.closeInfo, { code: 1000, reason: "agent stopping" });

    // onStart runs at start (offline: queued), onConnect at the welcome, after the queue.
    const b = await fleet.start();
    const peer1 = await fleet.welcome(b, 1);
    await until(() => dones(peer1).length === 2, "onStart and onConnect runs");
    assert.deepEqual(outputs(peer1), ["onStart:onStart", "onConnect:onConnect"]);

    // The server goes away: onDisconnect runs offline; the agent stops before reconnecting,
    // so onStop runs offline too. Both wait on disk.
    peer1.close(1001, "server restarting");
    using db = readOnly(fleet.dir);
    await until(() => queuedDone(db.db, "onDisconnect") === 1, "onDisconnect's done in the outbox");
    await b.close();
    assert.equal(fleet.executor.spawned.length, 5, "onStop ran");
    assert.deepEqual(outputs(peer1), ["onStart:onStart", "onConnect:onConnect"]);

    const c = await fleet.start();
    const peer2 = await fleet.welcome(c, 2);
    await until(() => dones(peer2).length === 4, "queued and new runs");
    assert.deepEqual(outputs(peer2), [
      "onDisconnect:onDisconnect",
      "onStop:onStop",
      "onStart:onStart",
      "onConnect:onConnect",
    ]);
    assert.deepEqual(dones(peer2).map((f) => [f.id, f.seq, f.error]), [
      ["env-onDisconnect", 1, null],
      ["env-onStop", 1, null],
      ["env-onStart", 1, null],
      ["env-onConnect", 1, null],
    ]);
    await c.close();
    assert.equal(fleet.executor.spawned.length, 8);
  });
});

Deno.test("startAgent() refuses commands the allowCommands ACL does not list", async () => {
  await withFleet(async (fleet) => {
    const agent = await fleet.start();
    const peer = await fleet.welcome(agent, 0);
    for (const key of ["exec.run", "job.list"]) {
      peer.send({
        v: 1,
        id: `env-${key}`,
        type: "command",
        job: { key, args: { cmd: "/bin/echo" } },
      });
      const frames = await untilDone(peer, `env-${key}`);
      assert.equal(frames.length, 1);
      assert.equal((frames[0].error as { code: string }).code, "forbidden");
    }
    peer.send({
      v: 1,
      id: "env-tags",
      type: "command",
      job: { key: "tags.set", args: { tags: { a: "1" } } },
    });
    const ok = await untilDone(peer, "env-tags");
    assert.equal(ok.at(-1)!.error, null);
    assert.equal(fleet.executor.spawned.length, 0);
    await agent.close();
  }, { allowCommands: ["tags.*"] });
});
