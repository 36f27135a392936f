import assert from "node:assert/strict";
import { FakeClock } from "../clock.ts";
import { AuditLog, auditMigration } from "./audit.ts";
import { openDatabase } from "./sqlite.ts";

Deno.test("AuditLog.append() stores digests, lists newest first, and refuses edits", () => {
  const db = openDatabase(":memory:", [auditMigration]);
  try {
    const clock = new FakeClock(5000);
    const audit = new AuditLog(db, clock);
    audit.append({
      actor: "operator:admin",
      action: "command.sent",
      target: "a1",
      key: "exec.run",
      args: { b: 1, a: 2 },
      outcome: "ok",
    });
    audit.append({
      actor: "agent:a2",
      action: "handshake.failed",
      outcome: "denied",
      reason: "bad_signature",
    });
    const all = audit.list();
    assert.equal(all.length, 2);
    assert.equal(all[0].action, "handshake.failed");
    assert.equal(all[0].reason, "bad_signature");
    assert.equal(all[1].ts, 5000);
    assert.match(all[1].argsDigest!, /^sha256:[0-9a-f]{64}$/);
    // Key order does not change the digest.
    audit.append({ actor: "x", action: "command.sent", args: { a: 2, b: 1 }, outcome: "ok" });
    assert.equal(audit.list({ action: "command.sent" })[0].argsDigest, all[1].argsDigest);
    assert.throws(() => db.exec("UPDATE audit SET outcome = 'ok'"), /append-only/);
    assert.throws(() => db.exec("DELETE FROM audit"), /append-only/);
  } finally {
    db.close();
  }
});
