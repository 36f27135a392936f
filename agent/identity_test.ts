import assert from "node:assert/strict";
import { isJwError } from "../shared/errors.ts";
import { MemFs } from "../shared/fs/mod.ts";
import { loadIdentity } from "./identity.ts";

Deno.test("loadIdentity() creates the key pair once with modes 0600/0644", async () => {
  const fs = new MemFs();
  const first = await loadIdentity(fs, "/var/lib/jw");
  assert.equal(first.created, true);
  assert.equal(first.keyPath, "/var/lib/jw/agent.key");
  assert.equal((await fs.stat("/var/lib/jw/agent.key")).mode, 0o600);
  assert.equal((await fs.stat("/var/lib/jw/agent.pub")).mode, 0o644);
  const pub = JSON.parse(await fs.readTextFile("/var/lib/jw/agent.pub"));
  assert.deepEqual(pub, first.keyPair.publicJwk);
  const priv = JSON.parse(await fs.readTextFile("/var/lib/jw/agent.key"));
  assert.equal(typeof priv.d, "string");
  assert.equal("d" in pub, false);
});

Deno.test("loadIdentity() reuses the existing key pair", async () => {
  const fs = new MemFs();
  const first = await loadIdentity(fs, "/data");
  const second = await loadIdentity(fs, "/data");
  assert.equal(second.created, false);
  assert.equal(second.keyPair.kid, first.keyPair.kid);
  assert.deepEqual(second.keyPair.publicJwk, first.keyPair.publicJwk);
});

Deno.test("loadIdentity() refuses a group/world readable key file and names the fix", async () => {
  const fs = new MemFs();
  await loadIdentity(fs, "/data");
  for (const mode of [0o644, 0o640, 0o604, 0o620]) {
    await fs.chmod("/data/agent.key", mode);
    await assert.rejects(loadIdentity(fs, "/data"), (err) => {
      assert.ok(isJwError(err, "config"));
      assert.match(err.message, /chmod 600 \/data\/agent\.key/);
      return true;
    });
  }
  await fs.chmod("/data/agent.key", 0o400);
  assert.equal((await loadIdentity(fs, "/data")).created, false);
});

Deno.test("loadIdentity() rejects a key file that is not an Ed25519 private JWK", async () => {
  const fs = new MemFs();
  await fs.mkdir("/data");
  await fs.writeTextFile("/data/agent.key", "not json", { mode: 0o600 });
  await assert.rejects(loadIdentity(fs, "/data"), (e) => isJwError(e, "config"));
  await fs.writeTextFile("/data/agent.key", '{"kty":"RSA"}', { mode: 0o600 });
  await assert.rejects(loadIdentity(fs, "/data"), (e) => isJwError(e, "config"));
});

Deno.test("loadIdentity() rewrites a missing or stale public key file", async () => {
  const fs = new MemFs();
  const first = await loadIdentity(fs, "/data");
  await fs.writeTextFile("/data/agent.pub", "{}");
  await loadIdentity(fs, "/data");
  assert.deepEqual(JSON.parse(await fs.readTextFile("/data/agent.pub")), first.keyPair.publicJwk);
});
