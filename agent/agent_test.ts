import assert from "node:assert/strict";
import { DatabaseSync } from "node:sqlite";
import { AgentConfig } from "../shared/config/mod.ts";
import { isJwError } from "../shared/errors.ts";
import { MemFs } from "../shared/fs/mod.ts";
import { silentLogger } from "../shared/log.ts";
import { rank } from "../shared/lrw.ts";
import { startAgent } from "./mod.ts";
import { FakeExecutor } from "./_fake_executor.ts";
import { startTestServer } from "./_test_server.ts";

async function withTempDir(fn: (dir: string) => Promise<void>): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix: "jw-agent-test-" });
  try {
    await fn(dir);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

Deno.test("startAgent() handshakes with a real server, runs exec.run and closes cleanly", async () => {
  await withTempDir(async (dir) => {
    await using server = startTestServer();
    const config = AgentConfig.parse({
      id: "a1",
      server: server.url,
      data: `${dir}/data`,
      allowRun: ["/bin/echo"],
      tags: { role: "web" },
    });
    const agent = await startAgent(config, { logger: silentLogger });
    assert.equal(agent.id, "a1");
    assert.match(agent.kid, /^[A-Za-z0-9_-]{43}$/);
    const conn = await server.conn(0);
    await conn.handshake("s1");
    await agent.welcomed();
    assert.equal(agent.connected, true);
    assert.deepEqual(conn.hello?.tags, { role: "web" });

    await conn.send({
      v: 1,
      id: "cmd-1",
      type: "command",
      meta: { ticket: { n: 1 } },
      job: { id: "job-1", key: "exec.run", args: { cmd: "/bin/echo", args: ["hi"] } },
    });
    const frames = await conn.untilDone("cmd-1");
    assert.deepEqual(frames.map((f) => [f.seq, f.text ?? null]), [[0, "hi"], [1, null]]);
    const last = frames[1];
    assert.equal(last.exitCode, 0);
    assert.equal(last.error, null);
    assert.deepEqual(last.meta, { ticket: { n: 1 } });
    assert.deepEqual(last.job, { id: "job-1", key: "exec.run" });

    await agent.close();
    await agent.close();
    assert.deepEqual(await conn.closed, { code: 1000, reason: "agent stopping" });
    assert.equal(agent.connected, false);
    await assert.rejects(agent.welcomed(), (e) => isJwError(e, "closed"));

    assert.equal((await Deno.stat(`${dir}/data/agent.key`)).mode! & 0o777, 0o600);
    assert.equal((await Deno.stat(`${dir}/data/agent.pub`)).mode! & 0o777, 0o644);
    const db = new DatabaseSync(`${dir}/data/agent.db`);
    try {
      const rows = db.prepare("SELECT action, actor, key, outcome FROM audit ORDER BY seq").all();
      assert.deepEqual(rows.map((r) => ({ ...r })), [
        { action: "handshake.ok", actor: "server:s1", key: null, outcome: "ok" },
        { action: "command.received", actor: "server:s1", key: "exec.run", outcome: "ok" },
        { action: "command.executed", actor: "server:s1", key: "exec.run", outcome: "ok" },
      ]);
    } finally {
      db.close();
    }

    // Same data directory: same key.
    const again = await startAgent(config, { logger: silentLogger });
    assert.equal(again.kid, agent.kid);
    await (await server.conn(1)).handshake();
    await again.welcomed();
    await again.close();
  });
});

Deno.test("startAgent() queues replies while disconnected and sends them after the next welcome", async () => {
  await withTempDir(async (dir) => {
    await using server = startTestServer();
    const executor = new FakeExecutor();
    const config = AgentConfig.parse({
      id: "a2",
      server: server.url,
      data: dir,
      allowRun: ["/bin/echo"],
      reconnect: { min: "5ms", max: "20ms", failover: "10ms" },
    });
    await using agent = await startAgent(config, {
      logger: silentLogger,
      executor,
      fs: new MemFs(),
    });
    const first = await server.conn(0);
    await first.handshake("s1");
    await agent.welcomed();
    await first.send({
      v: 1,
      id: "cmd-2",
      type: "command",
      job: { id: "job-2", key: "exec.run", args: { cmd: "/bin/echo" } },
    });
    const proc = await executor.nth(0);
    proc.out("before");
    assert.equal((await first.next()).text, "before");

    first.close(1001, "server restarting");
    const second = await server.conn(1);
    assert.equal(agent.connected, false);
    proc.out("during");
    proc.exit(0);

    await second.handshake("s2");
    const frames = await second.untilDone("cmd-2");
    assert.deepEqual(frames.map((f) => [f.seq, f.text ?? null, f.done ?? false]), [
      [1, "during", false],
      [2, null, true],
    ]);
    assert.equal(frames[1].exitCode, 0);
  });
});

Deno.test("startAgent() sends tags changed by tags.set in the next hello", async () => {
  await withTempDir(async (dir) => {
    await using server = startTestServer();
    const config = AgentConfig.parse({
      id: "a3",
      server: server.url,
      data: dir,
      tags: { role: "web", zone: "a" },
      reconnect: { min: "5ms", max: "20ms", failover: "10ms" },
    });
    await using agent = await startAgent(config, { logger: silentLogger, fs: new MemFs() });
    const first = await server.conn(0);
    await first.handshake();
    await agent.welcomed();
    await first.send({
      v: 1,
      id: "cmd-3",
      type: "command",
      job: { key: "tags.set", args: { tags: { role: "db", zone: null, new: "yes" } } },
    });
    const frames = await first.untilDone("cmd-3");
    assert.equal(frames[0].type, "setTag");
    assert.deepEqual(frames[0].tags, { role: "db", zone: null, new: "yes" });
    first.close();
    const second = await server.conn(1);
    await second.handshake();
    assert.deepEqual(second.hello?.tags, { role: "db", new: "yes" });
  });
});

Deno.test("startAgent() refuses a key file readable by others", async () => {
  const fs = new MemFs();
  await fs.mkdir("/data");
  await fs.writeTextFile("/data/agent.key", "{}", { mode: 0o644 });
  const config = AgentConfig.parse({ id: "a4", server: "http://127.0.0.1:1", data: "/data" });
  await assert.rejects(startAgent(config, { logger: silentLogger, fs }), (err) => {
    assert.ok(isJwError(err, "config"));
    assert.match(err.message, /chmod 600 \/data\/agent\.key/);
    return true;
  });
});

Deno.test("startAgent() keeps the server list of a servers frame and starts from it without seeds", async () => {
  await withTempDir(async (dir) => {
    await using server = startTestServer();
    const list = [
      { id: "s1", url: server.url, health: 0 },
      { id: "s9", url: "http://127.0.0.1:1", health: 0 }, // nothing listens there
    ];
    // An agent whose owner is the dead s9, so the restart shows both ranking and skipping.
    const id = ["a5", "a6", "a7", "a8", "a9"].find((a) => rank(a, list)[0].id === "s9")!;
    const reconnect = { min: "5ms", max: "20ms" };
    const first = await startAgent(
      AgentConfig.parse({ id, server: server.url, data: dir, reconnect }),
      { logger: silentLogger },
    );
    const conn = await server.conn(0);
    await conn.handshake("s1");
    await first.welcomed();
    await conn.send({ v: 1, id: "l-1", type: "servers", servers: list });
    // Frames are handled in order: once this command is answered, the list is stored.
    await conn.send({ v: 1, id: "cmd-5", type: "command", job: { key: "job.list", args: {} } });
    await conn.untilDone("cmd-5");
    await first.close();
    const db = new DatabaseSync(`${dir}/agent.db`, { readOnly: true });
    try {
      const rows = db.prepare("SELECT id, url, health FROM servers ORDER BY position").all();
      assert.deepEqual(rows.map((r) => ({ ...r })), list);
    } finally {
      db.close();
    }

    // No seed, no DNS: the remembered list, ranked (s9 first, refused), then s1.
    await using again = await startAgent(
      AgentConfig.parse({ id, data: dir, reconnect }),
      { logger: silentLogger },
    );
    const second = await server.conn(1);
    await second.handshake("s1");
    await again.welcomed();
    assert.deepEqual(second.hello?.avoid, ["s9"]);
  });
});

Deno.test("startAgent() refuses to start with no seed, no DNS name and no remembered servers", async () => {
  await withTempDir(async (dir) => {
    const config = AgentConfig.parse({ id: "a10", data: dir });
    await assert.rejects(startAgent(config, { logger: silentLogger }), (err) => {
      assert.ok(isJwError(err, "config"));
      assert.match(err.message, /no server to connect to: give --seed URL .*--dns NAME/);
      assert.ok(err.message.includes(`${dir}/agent.db`), err.message);
      return true;
    });
  });
});
