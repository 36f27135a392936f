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

Deno.test("AuditLog.appendMany() records every event in one go with shared digests", () => {
  const db = openDatabase(":memory:", [auditMigration]);
  try {
    const audit = new AuditLog(db, new FakeClock(7));
    const args = { cmd: "/bin/echo" };
    audit.appendMany(
      ["a1", "a2", "a3"].map((target) => ({
        actor: "operator:admin",
        action: "command.sent",
        target,
        key: "exec.run",
        args,
        outcome: "ok" as const,
      })),
    );
    audit.appendMany([]);
    const rows = audit.list();
    assert.deepEqual(rows.map((r) => r.target), ["a3", "a2", "a1"]);
    assert.equal(new Set(rows.map((r) => r.argsDigest)).size, 1);
    assert.equal(
      rows[0].argsDigest,
      (() => {
        audit.append({ actor: "x", action: "y", args, outcome: "ok" });
        return audit.list({ action: "y" })[0].argsDigest;
      })(),
    );
  } finally {
    db.close();
  }
});

Deno.test("AuditLog.appendMany() keeps order and fields across runs of similar events", () => {
  const db = openDatabase(":memory:", [auditMigration]);
  try {
    const audit = new AuditLog(db, new FakeClock(9));
    const args = { n: 1 };
    const sent = { actor: "operator:op", action: "command.sent", key: "sys.ping", args };
    audit.appendMany([
      { ...sent, target: "a1", outcome: "ok" },
      { ...sent, target: "a2", outcome: "ok" },
      { ...sent, target: "a3", outcome: "error", reason: "gone" },
      { ...sent, target: "a4", outcome: "error", reason: "gone" },
      { ...sent, target: "a5", outcome: "ok" },
      { ...sent, target: "a6", outcome: "ok", args: { n: 1 } },
      { actor: "operator:op", action: "command.sent", outcome: "ok" },
      { ...sent, target: "a7", outcome: "ok" },
    ]);
    const rows = audit.list().reverse();
    assert.deepEqual(
      rows.map((r) => [r.target, r.outcome, r.reason, r.key, r.actor, r.ts]),
      [
        ["a1", "ok", null, "sys.ping", "operator:op", 9],
        ["a2", "ok", null, "sys.ping", "operator:op", 9],
        ["a3", "error", "gone", "sys.ping", "operator:op", 9],
        ["a4", "error", "gone", "sys.ping", "operator:op", 9],
        ["a5", "ok", null, "sys.ping", "operator:op", 9],
        ["a6", "ok", null, "sys.ping", "operator:op", 9],
        [null, "ok", null, null, "operator:op", 9],
        ["a7", "ok", null, "sys.ping", "operator:op", 9],
      ],
    );
    assert.equal(new Set(rows.filter((r) => r.key).map((r) => r.argsDigest)).size, 1);
    assert.deepEqual(rows.map((r) => r.seq), [...rows.map((r) => r.seq)].sort((a, b) => a - b));
  } finally {
    db.close();
  }
});
