import assert from "node:assert/strict";
import { isJwError } from "../../shared/errors.ts";
import { openAgentDatabase } from "../db.ts";
import { createScriptStore, type StoredScript } from "./store.ts";

const script = (version: number, sha256 = `sha256:${version}`): StoredScript => ({
  name: "report",
  version,
  sha256,
  signer: "kid",
  text: `text ${version}`,
  registeredAt: 1000 + version,
});

Deno.test("ScriptStore keeps versions, serves the newest, and refuses other content", () => {
  const db = openAgentDatabase(":memory:");
  try {
    const store = createScriptStore(db);
    assert.equal(store.put(script(1)), true);
    assert.equal(store.put(script(3)), true);
    assert.equal(store.put(script(1)), false);
    assert.throws(() => store.put(script(1, "sha256:other")), (e) => isJwError(e, "conflict"));
    assert.equal(store.get("report").version, 3);
    assert.equal(store.get("report", 1).text, "text 1");
    assert.throws(() => store.get("report", 2), (e) => isJwError(e, "not_found"));
    assert.throws(() => store.get("other"), (e) => isJwError(e, "not_found"));
    assert.deepEqual(store.list().map((s) => s.version), [1, 3]);
    assert.equal("text" in store.list()[0], false);
    assert.deepEqual(store.delete("report", 3), [3]);
    assert.deepEqual(store.delete("report"), [1]);
    assert.deepEqual(store.delete("report"), []);
  } finally {
    db.close();
  }
});
