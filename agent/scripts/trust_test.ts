import assert from "node:assert/strict";
import { generateKeyPair } from "../../shared/crypto/keys.ts";
import { isJwError } from "../../shared/errors.ts";
import { MemFs } from "../../shared/fs/mod.ts";
import { loadTrustedSigners } from "./trust.ts";

Deno.test("loadTrustedSigners() reads public JWKs and refuses private or foreign keys", async () => {
  const fs = new MemFs();
  const a = await generateKeyPair();
  const b = await generateKeyPair();
  await fs.writeTextFile("/a.pub", JSON.stringify({ ...a.publicJwk, kid: "ignored" }));
  await fs.writeTextFile("/b.pub", JSON.stringify(b.publicJwk));
  const trusted = await loadTrustedSigners(fs, ["/a.pub", "/b.pub"]);
  assert.deepEqual(trusted.kids, [a.kid, b.kid]);
  assert.deepEqual(trusted.lookup(a.kid), a.publicJwk);
  assert.equal(trusted.lookup("ignored"), undefined);

  await fs.writeTextFile("/private.jwk", JSON.stringify(a.privateJwk));
  await fs.writeTextFile("/rsa.pub", JSON.stringify({ kty: "RSA", n: "x", e: "AQAB" }));
  await fs.writeTextFile("/junk.pub", "not json");
  for (
    const [file, message] of [
      ["/private.jwk", /holds a private key/],
      ["/rsa.pub", /not an Ed25519 public JWK/],
      ["/junk.pub", /cannot read trusted signer \/junk.pub/],
      ["/missing.pub", /cannot read trusted signer \/missing.pub/],
    ] as const
  ) {
    await assert.rejects(
      loadTrustedSigners(fs, [file]),
      (e) => isJwError(e, "config") && message.test(e.message),
    );
  }
});
