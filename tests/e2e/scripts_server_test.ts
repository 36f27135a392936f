/**
 * End to end: signed scripts stored on a real server — upload, list, show, conflicts,
 * refusals with audit entries, `scripts push` filling in the stored file, and delete fanned
 * out to connected agents (raw agents answer the script.* commands).
 */
import assert from "node:assert/strict";
import { generateKeyPair, signScript } from "../../shared/crypto/mod.ts";
import { isJwError } from "../../shared/errors.ts";
import { type Frame, RawAgent, startServer, type TestServer } from "../helpers/mod.ts";

// deno-lint-ignore no-explicit-any
type Msg = Record<string, any>;

function source(version: number, body = "emit({ mounts: 1 });\n"): string {
  return `/*---\nname: disk-report\nversion: ${version}\ndescription: disk usage\n` +
    `permissions:\n  read: [/proc/mounts]\ntimeout: 10s\n---*/\n${body}`;
}

/** Answers `command` as an agent would: one done output with `data`. */
function answer(raw: RawAgent, command: Frame, data: Record<string, unknown>): void {
  raw.send({
    id: command.id,
    type: "output",
    job: { id: "job-1", key: command.job.key },
    seq: 0,
    ts: Date.now(),
    done: true,
    error: null,
    data,
  });
}

/** The newest server audit seq, so a step only accepts entries it caused. */
async function lastAuditSeq(server: TestServer): Promise<number> {
  return (await server.api.audit({ limit: 1 }))[0]?.seq ?? 0;
}

Deno.test("stored scripts on a real server", async (t) => {
  await using server = await startServer();
  const key = await generateKeyPair();
  const v1 = await signScript(source(1), key);
  const v2 = await signScript(source(2, "emit({ mounts: 2 });\n"), key);

  await t.step("upload stores a signed script once", async () => {
    const first = await server.api.uploadScript(v1);
    assert.equal(first.created, true);
    assert.equal(first.script.signer, key.kid);
    assert.equal(first.script.uploadedBy, "admin");
    const again = await server.api.uploadScript(v1);
    assert.equal(again.created, false);
    assert.deepEqual(again.script, first.script);
    assert.equal((await server.api.uploadScript(v2)).created, true);
    const audit = await server.api.audit({ action: "script.upload" });
    assert.deepEqual(audit.map((e) => [e.target, e.outcome]), [
      ["disk-report@2", "ok"],
      ["disk-report@1", "ok"],
      ["disk-report@1", "ok"],
    ]);
  });

  await t.step("scripts list, as JSON and as a table", async () => {
    const json = await server.client("--json", "scripts", "list");
    assert.equal(json.code, 0, json.stderr);
    const listed = JSON.parse(json.stdout) as Msg[];
    assert.deepEqual(listed.map((s) => [s.name, s.version, s.signer]), [
      ["disk-report", 1, key.kid],
      ["disk-report", 2, key.kid],
    ]);
    assert.deepEqual(listed[0].permissions, {
      run: [],
      read: ["/proc/mounts"],
      write: [],
      net: [],
    });
    const human = await server.client("scripts", "list");
    assert.equal(human.code, 0, human.stderr);
    assert.match(human.stdout, /^NAME +VERSION +SIGNER/);
    assert.match(human.stdout, /\ndisk-report +2 +\S+ +\S+ +\d+ B +read=1 +admin at /);
  });

  await t.step("scripts show prints the exact file, newest by default", async () => {
    const newest = await server.client("scripts", "show", "disk-report");
    assert.equal(newest.code, 0, newest.stderr);
    assert.equal(newest.stdout, v2);
    assert.match(newest.stderr, /disk-report version 2/);
    const first = await server.client("scripts", "show", "disk-report", "--version", "1");
    assert.equal(first.stdout, v1);
    const missing = await server.client("scripts", "show", "disk-report", "--version", "9");
    assert.equal(missing.code, 1);
    assert.match(missing.stderr, /not_found: no script "disk-report" version 9/);
  });

  await t.step("changed content under a stored version is a conflict", async () => {
    const changed = await signScript(source(2, "emit({ mounts: 'changed' });\n"), key);
    await assert.rejects(
      server.api.uploadScript(changed),
      (e) => isJwError(e, "conflict") && /bump the version/.test(e.message),
    );
    const shown = await server.api.script("disk-report", 2);
    assert.equal(shown.text, v2, "the stored version is unchanged");
  });

  await t.step("unsigned and tampered uploads are refused and audited", async () => {
    const since = await lastAuditSeq(server);
    await assert.rejects(
      server.api.uploadScript(source(3)),
      (e) => isJwError(e, "untrusted") && /not signed/.test(e.message),
    );
    const tampered = (await signScript(source(3), key)).replace("/proc/mounts", "/etc/shadow");
    await assert.rejects(server.api.uploadScript(tampered), (e) => isJwError(e, "bad_signature"));
    const entries = (await server.api.audit({ action: "script.upload" }))
      .filter((e) => e.seq > since);
    assert.deepEqual(entries.map((e) => [e.target, e.outcome, e.reason?.split(":")[0]]), [
      ["disk-report@3", "denied", "bad_signature"],
      ["disk-report@3", "denied", "untrusted"],
    ]);
    assert.equal((await server.api.scripts()).length, 2, "nothing stored");
  });

  await using raw = await RawAgent.connect(server.url, "raw-1");
  await raw.handshake();

  await t.step("scripts push sends the stored file to the agent", async () => {
    const pending = server.client(
      "scripts",
      "push",
      "disk-report",
      "--version",
      "1",
      "agent:raw-1",
    );
    const command = await raw.next((f) => f.type === "command");
    assert.equal(command.job.key, "script.register");
    assert.deepEqual(command.job.args, { name: "disk-report", version: 1, script: v1 });
    answer(raw, command, { registered: { name: "disk-report", version: 1 } });
    const r = await pending;
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /\[raw-1\] done/);
    assert.match(r.stdout, /1 agent: 1 ok, 0 failed/);
  });

  await t.step("scripts push of a script the server does not hold is refused", async () => {
    const since = await lastAuditSeq(server);
    const r = await server.client("scripts", "push", "no-such-script", "all");
    assert.equal(r.code, 1);
    assert.match(r.stderr, /not_found: no script "no-such-script" on this server/);
    const [denied] = (await server.api.audit({ action: "command.denied" }))
      .filter((e) => e.seq > since);
    assert.equal(denied?.key, "script.register");
  });

  await t.step("scripts delete removes a version and tells the connected agents", async () => {
    const pending = server.client("scripts", "delete", "disk-report", "--version", "1");
    const command = await raw.next((f) => f.type === "command" && f.job.key === "script.delete");
    assert.deepEqual(command.job.args, { name: "disk-report", version: 1 });
    answer(raw, command, { deleted: 1 });
    const r = await pending;
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.stdout, "deleted disk-report version 1 from the server\n[raw-1] ok\n");
    assert.deepEqual((await server.api.scripts()).map((s) => s.version), [2]);
    const [entry] = await server.api.audit({ action: "script.delete" });
    assert.deepEqual([entry.target, entry.outcome, entry.actor], [
      "disk-report@1",
      "ok",
      "operator:admin",
    ]);
    const sent = await server.api.audit({ action: "command.sent" });
    assert.ok(sent.some((e) => e.key === "script.delete" && e.target === "raw-1"));
  });

  await t.step(
    "scripts delete with the agent offline (queued for it), then not_found",
    async () => {
      await raw.close();
      await server.waitForAgent("raw-1", (a) => !a.connected);
      const r = await server.client("--json", "scripts", "delete", "disk-report");
      assert.equal(r.code, 0, r.stderr);
      const body = JSON.parse(r.stdout);
      assert.deepEqual([body.name, body.versions], ["disk-report", [2]]);
      assert.deepEqual(Object.keys(body.run.agents), ["raw-1"]);
      assert.equal(body.run.agents["raw-1"].state, "offline");
      assert.ok(body.run.agents["raw-1"].until > Date.now());
      assert.deepEqual(await server.api.scripts(), []);
      const again = await server.client("scripts", "delete", "disk-report");
      assert.equal(again.code, 1);
      assert.match(again.stderr, /not_found/);
    },
  );
});
