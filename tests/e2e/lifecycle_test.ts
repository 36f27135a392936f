/**
 * End to end: keys survive restarts, a changed key is refused, and agents find a
 * restarted server on their own.
 */
import assert from "node:assert/strict";
import {
  agentAudit,
  JwProcess,
  scratchDir,
  startAgent,
  startServer,
  waitForAgentAudit,
} from "../helpers/mod.ts";

Deno.test("an agent keeps its key across restarts, and a different key for its id is refused", async () => {
  await using server = await startServer();
  const dataDir = await scratchDir("keep-");
  let kid: string;
  {
    await using _agent = await startAgent(server, "k1", { dataDir });
    kid = (await server.waitForAgent("k1")).kid;
    const key = await Deno.stat(`${dataDir}/agent.key`);
    assert.equal(key.mode! & 0o777, 0o600, "private key is mode 0600");
  }
  await server.waitForAgent("k1", (a) => !a.connected);
  {
    await using _again = await startAgent(server, "k1", { dataDir });
    assert.equal((await server.waitForAgent("k1")).kid, kid, "same key after restart");
  }
  await server.waitForAgent("k1", (a) => !a.connected);

  // Same id, new data dir → new key → refused and audited; the pinned key stays.
  const impostorDir = await scratchDir("impostor-");
  await using impostor = new JwProcess([
    "agent",
    "--id",
    "k1",
    "--server",
    server.url,
    "--data",
    impostorDir,
  ]);
  const denied = await server.waitForAudit((e) =>
    e.action === "handshake.failed" && e.target === "k1"
  );
  assert.equal(denied.outcome, "denied");
  assert.match(denied.reason ?? "", /key_mismatch/);
  const row = (await server.api.agents()).find((a) => a.id === "k1")!;
  assert.equal(row.connected, false);
  assert.equal(row.kid, kid);
  const refused = await waitForAgentAudit(impostorDir, (e) => e.action === "handshake.failed");
  assert.match(refused.reason ?? "", /key_mismatch/);
  await impostor.stop();
  assert.ok(
    agentAudit(dataDir).some((e) => e.action === "handshake.ok"),
    "the real agent audited its handshakes",
  );
});

Deno.test("agents reconnect by themselves after a server restart", async () => {
  // Fixed port so the agents' configured URL stays valid across the restart.
  const probe = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (probe.addr as Deno.NetAddr).port;
  probe.close();
  const http = `127.0.0.1:${port}`;
  const dataDir = await scratchDir("restart-");

  const first = await startServer({ http, dataDir });
  await using a1 = await startAgent(first, "r1");
  await using a2 = await startAgent(first, "r2");
  const status = await first.process.stop("SIGTERM");
  assert.equal(status.code, 0, "clean shutdown on SIGTERM");

  await using second = await startServer({ http, dataDir });
  await second.waitForAgent("r1", (a) => a.connected, 30_000);
  await second.waitForAgent("r2", (a) => a.connected, 30_000);
  const r = await second.client(
    "--json",
    "run",
    "all",
    "exec.run",
    '{"cmd":"/bin/echo","args":["back"]}',
  );
  assert.equal(r.code, 0, r.stderr);
  assert.deepEqual(r.json.filter((l) => l.text === "back").map((l) => l.agent).sort(), [
    "r1",
    "r2",
  ]);
  assert.ok(a1.process && a2.process);
});
