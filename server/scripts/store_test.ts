import assert from "node:assert/strict";
import { FakeClock } from "../../shared/clock.ts";
import { generateKeyPair, signScript, verifySelfSigned } from "../../shared/crypto/mod.ts";
import type { Ed25519KeyPair } from "../../shared/crypto/mod.ts";
import { openDatabase } from "../../shared/db/mod.ts";
import { isJwError } from "../../shared/errors.ts";
import { serverMigrations } from "../db.ts";
import { createScriptStore } from "./store.ts";

const KEY: Ed25519KeyPair = await generateKeyPair();
const SIGNED_AT = new Date(Date.UTC(2026, 0, 2));

/** A signed script named `name` at `version`; `body` varies the content. */
async function signed(name: string, version: number, body = "emit({ ok: true });\n") {
  const text = `/*---\nname: ${name}\nversion: ${version}\ndescription: checks disks\n` +
    `permissions:\n  read: [/proc/mounts]\n  net: ["example.com:443"]\n---*/\n${body}`;
  return await verifySelfSigned(await signScript(text, KEY, SIGNED_AT));
}

function setup() {
  const clock = new FakeClock();
  const db = openDatabase(":memory:", serverMigrations);
  const store = createScriptStore(db, clock);
  return { clock, db, store, [Symbol.dispose]: () => db.close() };
}

Deno.test("ScriptStore.put() stores a verified script and describes it", async () => {
  using s = setup();
  const script = await signed("disk-report", 3);
  const uploaded = s.store.put(script, "alice");
  assert.equal(uploaded.created, true);
  assert.deepEqual(uploaded.script, {
    name: "disk-report",
    version: 3,
    description: "checks disks",
    sha256: script.sha256,
    signer: KEY.kid,
    signedAt: SIGNED_AT.toISOString(),
    permissions: { run: [], read: ["/proc/mounts"], write: [], net: ["example.com:443"] },
    size: new TextEncoder().encode(script.text).length,
    uploadedBy: "alice",
    uploadedAt: s.clock.now(),
  });
  assert.deepEqual(s.store.get("disk-report", 3), { script: uploaded.script, text: script.text });
});

Deno.test("ScriptStore.put() of the same content again is not created and keeps the first upload", async () => {
  using s = setup();
  const script = await signed("a", 1);
  const first = s.store.put(script, "alice");
  await s.clock.advance(60_000);
  const again = s.store.put(script, "bob");
  assert.equal(again.created, false);
  assert.deepEqual(again.script, first.script);
  assert.equal(s.store.list().length, 1);
});

Deno.test("ScriptStore.put() refuses other content under a stored name and version", async () => {
  using s = setup();
  const stored = s.store.put(await signed("a", 1), "alice");
  const changed = await signed("a", 1, "emit({ ok: false });\n");
  assert.throws(
    () => s.store.put(changed, "alice"),
    (e) =>
      isJwError(e, "conflict") && /bump the version/.test(e.message) &&
      e.detail?.sha256 === stored.script.sha256,
  );
  assert.equal(s.store.get("a").script.sha256, stored.script.sha256, "the stored one stays");
  assert.equal(s.store.put(await signed("a", 2, "emit({ ok: false });\n"), "alice").created, true);
});

Deno.test("ScriptStore.list() is ordered by name then version", async () => {
  using s = setup();
  for (const [name, version] of [["b", 1], ["a", 10], ["a", 2]] as const) {
    s.store.put(await signed(name, version), "alice");
  }
  assert.deepEqual(s.store.list().map((i) => [i.name, i.version]), [["a", 2], ["a", 10], [
    "b",
    1,
  ]]);
  assert.ok(s.store.list().every((i) => !("text" in i)), "the list carries no text");
});

Deno.test("ScriptStore.get() gives the highest version by default and not_found otherwise", async () => {
  using s = setup();
  s.store.put(await signed("a", 2), "alice");
  s.store.put(await signed("a", 10, "emit({ v: 10 });\n"), "alice");
  assert.equal(s.store.get("a").script.version, 10);
  assert.match(s.store.get("a").text, /v: 10/);
  assert.equal(s.store.get("a", 2).script.version, 2);
  assert.throws(
    () => s.store.get("a", 3),
    (e) => isJwError(e, "not_found") && e.message === 'no script "a" version 3 on this server',
  );
  assert.throws(
    () => s.store.get("zzz"),
    (e) => isJwError(e, "not_found") && e.message === 'no script "zzz" on this server',
  );
});

Deno.test("ScriptStore.delete() removes one version or all, and not_found when none", async () => {
  using s = setup();
  for (const v of [1, 2, 3]) s.store.put(await signed("a", v), "alice");
  s.store.put(await signed("b", 1), "alice");
  assert.deepEqual(s.store.delete("a", 2), [2]);
  assert.throws(() => s.store.delete("a", 2), (e) => isJwError(e, "not_found"));
  assert.deepEqual(s.store.delete("a"), [1, 3]);
  assert.throws(() => s.store.delete("a"), (e) => isJwError(e, "not_found"));
  assert.deepEqual(s.store.list().map((i) => i.name), ["b"]);
});
