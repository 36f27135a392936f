/**
 * End to end: every kind of bad input gets a clear error and an audit entry, and a
 * second, well-behaved agent still gets its command.
 */
import assert from "node:assert/strict";
import { generateKeyPair } from "../../shared/crypto/mod.ts";
import {
  agentAudit,
  RawAgent,
  startAgent,
  startServer,
  type TestServer,
  waitForAgentAudit,
} from "../helpers/mod.ts";

/** The newest server audit seq, so a step only accepts entries it caused. */
async function lastAuditSeq(server: TestServer): Promise<number> {
  return (await server.api.audit({ limit: 1 }))[0]?.seq ?? 0;
}

async function wellBehavedStillWorks(server: TestServer): Promise<void> {
  const r = await server.client(
    "--json",
    "run",
    "agent:good",
    "exec.run",
    '{"cmd":"/bin/echo","args":["still here"]}',
  );
  assert.equal(r.code, 0, r.stderr);
  assert.ok(r.json.some((l) => l.agent === "good" && l.text === "still here"), r.stdout);
}

Deno.test("bad frames from an agent are rejected, audited, and harm nobody else", async (t) => {
  await using server = await startServer({
    config: { agents: { maxFrame: "8KiB", challengeTtl: "1s" } },
  });
  await using _good = await startAgent(server, "good");

  await using raw = await RawAgent.connect(server.url, "rogue");
  await raw.handshake();

  const cases: [string, () => void, string][] = [
    ["malformed JSON", () => raw.sendRaw("{this is not json"), "bad_json"],
    ["unknown message type", () => raw.send({ type: "launchMissiles" }), "unknown_type"],
    [
      "oversized frame",
      () => raw.send({ type: "log", text: "x".repeat(20_000) }),
      "frame_too_large",
    ],
    [
      "schema violation",
      () => raw.send({ type: "output", job: { id: "j" }, seq: -1, ts: 0 }),
      "invalid_message",
    ],
    [
      "handshake frame after welcome",
      () =>
        raw.send({
          type: "hello",
          agentId: "rogue",
          publicKey: raw.keys.publicJwk,
          version: "test",
          tags: {},
        }),
      "unexpected_message",
    ],
  ];
  for (const [name, send, code] of cases) {
    await t.step(name, async () => {
      const before = raw.frames.length;
      const auditedBefore = await lastAuditSeq(server);
      send();
      const err = await raw.next((f, i = raw.frames.indexOf(f)) =>
        f.type === "error" && i >= before
      );
      assert.match(err.error.code, new RegExp(`^(${code})$`));
      assert.ok(err.error.message.length > 5);
      await server.waitForAudit((e) =>
        e.seq > auditedBefore && e.action === "frame.rejected" &&
        (e.reason ?? "").startsWith(`${err.error.code}:`)
      );
      await wellBehavedStillWorks(server);
    });
  }
  await t.step("the rogue connection itself is still served", async () => {
    const run = server.client(
      "--json",
      "run",
      "agent:rogue",
      "exec.run",
      '{"cmd":"/bin/echo"}',
      "--timeout",
      "10s",
    );
    const cmd = await raw.nextOfType("command");
    raw.send({
      type: "output",
      id: cmd.id,
      job: { id: "j1", key: "exec.run" },
      seq: 0,
      ts: Date.now(),
      done: true,
      error: null,
    });
    const r = await run;
    assert.equal(r.code, 0, r.stderr);
  });
  await t.step(
    "an agent that refuses a command frame ends its part of the run at once",
    async () => {
      const t0 = Date.now();
      const run = server.client(
        "run",
        "agent:rogue",
        "exec.run",
        '{"cmd":"/bin/echo"}',
        "--timeout",
        "20s",
      );
      const before = raw.frames.length;
      const cmd = await raw.next((f) => f.type === "command" && raw.frames.indexOf(f) >= before);
      raw.send({
        type: "error",
        ref: cmd.id,
        error: { code: "invalid_message", message: "cannot read this command" },
      });
      const r = await run;
      assert.equal(r.code, 1);
      assert.match(r.stdout, /invalid_message|1 failed/);
      assert.ok(Date.now() - t0 < 15_000, "did not wait for the 20 s timeout");
    },
  );
});

Deno.test("handshake failures close the connection with a reason and are audited", async (t) => {
  await using server = await startServer({ config: { agents: { challengeTtl: "1s" } } });
  await using _good = await startAgent(server, "good");

  await t.step("wrong signature", async () => {
    await using raw = await RawAgent.connect(server.url, "forger");
    const challenge = await raw.hello();
    raw.send({ type: "response", jws: await raw.sign(challenge, await generateKeyPair()) });
    const closed = await raw.closed;
    assert.match(closed.reason, /bad_signature/);
    await server.waitForAudit((e) =>
      e.action === "handshake.failed" && e.target === "forger" &&
      /bad_signature/.test(e.reason ?? "")
    );
    await wellBehavedStillWorks(server);
  });

  await t.step("replayed challenge response", async () => {
    const keys = await generateKeyPair();
    let jws: string;
    {
      await using first = await RawAgent.connect(server.url, "replayer", keys);
      const challenge = await first.hello();
      jws = await first.sign(challenge);
      first.send({ type: "response", jws });
      await first.nextOfType("welcome");
    }
    await using second = await RawAgent.connect(server.url, "replayer", keys);
    await second.hello();
    second.send({ type: "response", jws });
    const closed = await second.closed;
    assert.match(closed.reason, /replayed/);
    await server.waitForAudit((e) =>
      e.action === "handshake.failed" && e.target === "replayer" && /replayed/.test(e.reason ?? "")
    );
    await wellBehavedStillWorks(server);
  });

  await t.step("expired challenge response", async () => {
    await using raw = await RawAgent.connect(server.url, "slowpoke");
    const challenge = await raw.hello();
    const jws = await raw.sign(challenge);
    // The server's challenge lives 1 s (config above); answer after it has expired.
    await new Promise((r) => setTimeout(r, 1500));
    raw.send({ type: "response", jws });
    const closed = await raw.closed;
    assert.match(closed.reason, /expired/);
    await server.waitForAudit((e) =>
      e.action === "handshake.failed" && e.target === "slowpoke" && /expired/.test(e.reason ?? "")
    );
    await wellBehavedStillWorks(server);
  });

  await t.step("garbage before hello", async () => {
    await using raw = await RawAgent.connect(server.url, "noise");
    raw.sendRaw("]]]");
    const closed = await raw.closed;
    assert.match(closed.reason, /bad_json/);
    await wellBehavedStillWorks(server);
  });
});

Deno.test("bad commands get an error reply and are audited", async (t) => {
  await using server = await startServer();
  await using _good = await startAgent(server, "good");
  await using target = await startAgent(server, "target", { allowRun: ["/bin/echo"] });

  const cases: [string, string, string, string][] = [
    ["unknown command key", "nothing.here", "{}", "unknown_command"],
    ["missing args", "exec.run", "{}", "invalid_args"],
    ["wrong arg type", "exec.run", '{"cmd":"/bin/echo","args":"x"}', "invalid_args"],
    ["unknown arg", "exec.run", '{"cmd":"/bin/echo","shell":true}', "invalid_args"],
    [
      "non-whitelisted program",
      "exec.run",
      '{"cmd":"/bin/sh","args":["-c","id"]}',
      "not_whitelisted",
    ],
    ["relative program", "exec.run", '{"cmd":"echo"}', "not_whitelisted"],
  ];
  for (const [name, key, args, code] of cases) {
    await t.step(name, async () => {
      const auditedBefore = agentAudit(target.dataDir)[0]?.seq ?? 0;
      const r = await server.client("--json", "run", "agent:target", key, args);
      assert.equal(r.code, 1, r.stdout + r.stderr);
      const done = r.json.find((l) => l.done === true);
      assert.ok(done, r.stdout);
      assert.equal((done.error as { code: string }).code, code);
      const denied = await waitForAgentAudit(
        target.dataDir,
        (e) =>
          e.seq > auditedBefore && e.action === "command.denied" &&
          (e.reason ?? "").startsWith(`${code}:`) && e.key === key,
      );
      assert.equal(denied.outcome, "denied");
      await wellBehavedStillWorks(server);
    });
  }
});
