import assert from "node:assert/strict";
import { FakeClock } from "../../shared/clock.ts";
import { generateKeyPair, signScript, verifySelfSigned } from "../../shared/crypto/mod.ts";
import { openDatabase } from "../../shared/db/mod.ts";
import { isJwError } from "../../shared/errors.ts";
import { serverMigrations } from "../db.ts";
import { createScriptExpander } from "./expand.ts";
import { createScriptStore } from "./store.ts";

const KEY = await generateKeyPair();

async function signed(name: string, version: number, body: string) {
  const text = `/*---\nname: ${name}\nversion: ${version}\n---*/\n${body}`;
  return await verifySelfSigned(await signScript(text, KEY));
}

function setup() {
  const db = openDatabase(":memory:", serverMigrations);
  const store = createScriptStore(db, new FakeClock());
  return { store, [Symbol.dispose]: () => db.close() };
}

Deno.test("createScriptExpander() fills in script.register from the store", async (t) => {
  using s = setup();
  const v1 = await signed("a", 1, "emit({ v: 1 });\n");
  const v2 = await signed("a", 2, "emit({ v: 2 });\n");
  s.store.put(v1, "alice");
  s.store.put(v2, "alice");
  const expand = createScriptExpander(s.store);

  await t.step("newest by default, name kept", () => {
    const job = { key: "script.register", args: { name: "a" } };
    assert.deepEqual(expand(job), { key: "script.register", args: { name: "a", script: v2.text } });
    assert.deepEqual(job.args, { name: "a" }, "the input is not changed");
  });
  await t.step("a given version", () => {
    const job = { id: "j1", key: "script.register", args: { name: "a", version: 1 } };
    assert.deepEqual(expand(job), { ...job, args: { name: "a", version: 1, script: v1.text } });
  });
  await t.step("other jobs and given scripts pass through unchanged", () => {
    for (
      const job of [
        { key: "exec.run", args: { name: "a" } },
        { key: "script.register", args: { script: "x", name: "a" } },
        { key: "script.register", args: {} },
        { key: "script.run", args: { name: "a" } },
      ]
    ) {
      assert.equal(expand(job), job);
    }
  });
  await t.step("unknown name or version → not_found", () => {
    assert.throws(
      () => expand({ key: "script.register", args: { name: "nope" } }),
      (e) => isJwError(e, "not_found") && /"nope"/.test(e.message),
    );
    assert.throws(
      () => expand({ key: "script.register", args: { name: "a", version: 9 } }),
      (e) => isJwError(e, "not_found") && /version 9/.test(e.message),
    );
  });
  await t.step("bad name or version → invalid_args", () => {
    for (
      const args of [{ name: "Bad Name" }, { name: 7 }, { name: "a", version: "1" }, {
        name: "a",
        version: 0,
      }, { name: "a", version: 1.5 }]
    ) {
      assert.throws(
        () => expand({ key: "script.register", args }),
        (e) => isJwError(e, "invalid_args"),
        JSON.stringify(args),
      );
    }
  });
});
