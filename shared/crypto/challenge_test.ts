import assert from "node:assert/strict";
import { isJwError } from "../errors.ts";
import { generateKeyPair, importKeyPair, thumbprint } from "./keys.ts";
import { signChallenge, verifyChallengeResponse } from "./challenge.ts";

async function setup() {
  const pair = await generateKeyPair();
  const header = { alg: "EdDSA" as const, typ: "JWT" as const, kid: pair.kid };
  const claims = { nonce: "n".repeat(32), iat: 100, exp: 130, aud: "s1", sub: "a1", kid: pair.kid };
  return { pair, header, claims };
}

Deno.test("verifyChallengeResponse() accepts the agent's signature over the issued claims", async () => {
  const { pair, header, claims } = await setup();
  const jws = await signChallenge(pair.privateKey, header, claims);
  assert.deepEqual(await verifyChallengeResponse(jws, pair.publicJwk, { header, claims }), claims);
  assert.equal(pair.kid, await thumbprint(pair.publicJwk));
});

Deno.test("verifyChallengeResponse() rejects other keys, other nonces and altered claims", async (t) => {
  const { pair, header, claims } = await setup();
  const other = await generateKeyPair();
  const expectCode = async (jws: string, code: string) => {
    await assert.rejects(
      verifyChallengeResponse(jws, pair.publicJwk, { header, claims }),
      (e) => isJwError(e) && e.code === code,
    );
  };
  await t.step(
    "signed by another key",
    async () =>
      await expectCode(await signChallenge(other.privateKey, header, claims), "bad_signature"),
  );
  await t.step("different nonce", async () => {
    await expectCode(
      await signChallenge(pair.privateKey, header, { ...claims, nonce: "m".repeat(32) }),
      "replayed",
    );
  });
  await t.step(
    "stretched expiry",
    async () =>
      await expectCode(
        await signChallenge(pair.privateKey, header, { ...claims, exp: 9999 }),
        "bad_signature",
      ),
  );
  await t.step("garbage", async () => await expectCode("a.b.c", "bad_signature"));
});

Deno.test("importKeyPair() restores the same key and refuses a public-only JWK", async () => {
  const pair = await generateKeyPair();
  const again = await importKeyPair(pair.privateJwk);
  assert.equal(again.kid, pair.kid);
  // deno-lint-ignore no-explicit-any
  await assert.rejects(importKeyPair(pair.publicJwk as any), (e) => isJwError(e, "config"));
});
