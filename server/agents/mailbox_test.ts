import assert from "node:assert/strict";
import { openDatabase } from "../../shared/db/mod.ts";
import { serverMigrations } from "../db.ts";
import { createMailbox, type Letter } from "./mailbox.ts";

function letter(agent: string, command: string, expires: number): Letter {
  return {
    agent,
    command,
    frame: JSON.stringify({ id: command }),
    actor: "operator:admin",
    key: "exec.run",
    created: 1000,
    expires,
  };
}

Deno.test("mailbox keeps letters per agent, hands them over once, oldest first", () => {
  const db = openDatabase(":memory:", serverMigrations);
  try {
    const box = createMailbox(db);
    assert.equal(box.put(letter("a1", "c2", 9000)), true);
    assert.equal(box.put(letter("a1", "c1", 9000)), true);
    assert.equal(box.put(letter("a1", "c1", 9000)), false, "same command twice is ignored");
    assert.equal(box.put(letter("a2", "c1", 9000)), true);
    assert.equal(box.size, 3);
    assert.deepEqual(box.take("a1", 2000).map((l) => l.command), ["c2", "c1"]);
    assert.deepEqual(box.take("a1", 2000), [], "taken once");
    assert.equal(box.size, 1);
  } finally {
    db.close();
  }
});

Deno.test("expired letters are not handed over; expire() removes and returns them", () => {
  const db = openDatabase(":memory:", serverMigrations);
  try {
    const box = createMailbox(db);
    box.put(letter("a1", "old", 5000));
    box.put(letter("a1", "new", 50_000));
    assert.deepEqual(box.take("a1", 6000).map((l) => l.command), ["new"]);
    assert.deepEqual(box.expire(6000).map((l) => [l.agent, l.command]), [["a1", "old"]]);
    assert.equal(box.size, 0);
  } finally {
    db.close();
  }
});
