import assert from "node:assert/strict";
import { FakeClock } from "../../shared/clock.ts";
import { seededRandom } from "../../shared/random.ts";
import { isJwError } from "../../shared/errors.ts";
import { type Ed25519KeyPair, generateKeyPair, signChallenge } from "../../shared/crypto/mod.ts";
import type { Hello } from "../../shared/protocol/mod.ts";
import { createHandshake, createMemoryKeyStore, type KeyStore } from "./handshake.ts";

function hello(agentId: string, keys: Ed25519KeyPair): Hello {
  return {
    v: 1,
    id: "h1",
    type: "hello",
    agentId,
    publicKey: keys.publicJwk,
    version: "0.1.0",
    tags: {},
  };
}

function setup(keys: KeyStore = createMemoryKeyStore()) {
  const clock = new FakeClock();
  const handshake = createHandshake({
    serverId: "s1",
    challengeTtlMs: 30_000,
    keys,
    clock,
    random: seededRandom(7),
  });
  return { clock, handshake, keys };
}

Deno.test("Handshake.issue() builds the challenge header and claims", async () => {
  const { clock, handshake } = setup();
  const kp = await generateKeyPair();
  const c = await handshake.issue(hello("a1", kp));
  assert.deepEqual(c.header, { alg: "EdDSA", typ: "JWT", kid: kp.kid });
  const iat = Math.floor(clock.now() / 1000);
  assert.equal(c.claims.iat, iat);
  assert.equal(c.claims.exp, iat + 30);
  assert.equal(c.claims.aud, "s1");
  assert.equal(c.claims.sub, "a1");
  assert.equal(c.claims.kid, kp.kid);
  assert.match(c.claims.nonce, /^[A-Za-z0-9_-]{43}$/);
  const other = await handshake.issue(hello("a1", kp));
  assert.notEqual(other.claims.nonce, c.claims.nonce);
  assert.equal(handshake.outstanding, 2);
});

Deno.test("Handshake.verify() accepts a correct response and pins the key", async () => {
  const { handshake, keys } = setup();
  const kp = await generateKeyPair();
  const c = await handshake.issue(hello("a1", kp));
  const jws = await signChallenge(kp.privateKey, c.header, c.claims);
  const agent = await handshake.verify(c, jws);
  assert.equal(agent.agentId, "a1");
  assert.equal(agent.kid, kp.kid);
  assert.equal(agent.pinned, true);
  assert.deepEqual(keys.pinnedKey("a1"), kp.publicJwk);
  assert.equal(handshake.outstanding, 0);

  const again = await handshake.issue(hello("a1", kp));
  const second = await handshake.verify(
    again,
    await signChallenge(kp.privateKey, again.header, again.claims),
  );
  assert.equal(second.pinned, false);
});

Deno.test("Handshake.verify() rejects a response signed by another key", async () => {
  const { handshake, keys } = setup();
  const kp = await generateKeyPair();
  const thief = await generateKeyPair();
  const c = await handshake.issue(hello("a1", kp));
  const jws = await signChallenge(thief.privateKey, c.header, c.claims);
  await assert.rejects(handshake.verify(c, jws), (e) => isJwError(e, "bad_signature"));
  assert.equal(keys.pinnedKey("a1"), undefined);
});

Deno.test("Handshake.verify() rejects a replayed nonce", async () => {
  const { handshake } = setup();
  const kp = await generateKeyPair();
  const c = await handshake.issue(hello("a1", kp));
  const jws = await signChallenge(kp.privateKey, c.header, c.claims);
  await handshake.verify(c, jws);
  await assert.rejects(handshake.verify(c, jws), (e) => isJwError(e, "replayed"));
});

Deno.test("Handshake.verify() rejects a response to another connection's challenge", async () => {
  const { handshake } = setup();
  const kp = await generateKeyPair();
  const mine = await handshake.issue(hello("a1", kp));
  const theirs = await handshake.issue(hello("a1", kp));
  const jws = await signChallenge(kp.privateKey, theirs.header, theirs.claims);
  await assert.rejects(handshake.verify(mine, jws), (e) => isJwError(e, "replayed"));
});

Deno.test("Handshake.verify() rejects a response after the challenge expired", async () => {
  const { clock, handshake } = setup();
  const kp = await generateKeyPair();
  const c = await handshake.issue(hello("a1", kp));
  const jws = await signChallenge(kp.privateKey, c.header, c.claims);
  await clock.advance(30_001);
  await assert.rejects(handshake.verify(c, jws), (e) => isJwError(e, "expired"));
  await assert.rejects(handshake.verify(c, jws), (e) => isJwError(e, "replayed"));
});

Deno.test("Handshake.verify() still reports expiry after the challenge was pruned", async () => {
  const { clock, handshake } = setup();
  const kp = await generateKeyPair();
  const c = await handshake.issue(hello("a1", kp));
  const jws = await signChallenge(kp.privateKey, c.header, c.claims);
  await clock.advance(60_000);
  assert.equal(handshake.outstanding, 0);
  await assert.rejects(handshake.verify(c, jws), (e) => isJwError(e, "expired"));
});

Deno.test("Handshake.verify() accepts a response exactly at the deadline", async () => {
  const { clock, handshake } = setup();
  const kp = await generateKeyPair();
  const c = await handshake.issue(hello("a1", kp));
  await clock.advance(30_000);
  await handshake.verify(c, await signChallenge(kp.privateKey, c.header, c.claims));
});

Deno.test("Handshake.issue() rejects a key other than the pinned one", async () => {
  const keys = createMemoryKeyStore();
  const { handshake } = setup(keys);
  const kp = await generateKeyPair();
  const other = await generateKeyPair();
  keys.pin("a1", kp.publicJwk, kp.kid);
  await assert.rejects(handshake.issue(hello("a1", other)), (e) => isJwError(e, "key_mismatch"));
  assert.equal(handshake.outstanding, 0);
});

Deno.test("Handshake.verify() rejects a key pinned by a racing handshake", async () => {
  const { handshake } = setup();
  const first = await generateKeyPair();
  const second = await generateKeyPair();
  const c1 = await handshake.issue(hello("a1", first));
  const c2 = await handshake.issue(hello("a1", second));
  await handshake.verify(c1, await signChallenge(first.privateKey, c1.header, c1.claims));
  await assert.rejects(
    handshake.verify(c2, await signChallenge(second.privateKey, c2.header, c2.claims)),
    (e) => isJwError(e, "key_mismatch"),
  );
});

Deno.test("Handshake.verify() rejects altered claims and header", async (t) => {
  const kp = await generateKeyPair();
  const cases = [
    { name: "exp", alter: { exp: 9_999_999_999 } },
    { name: "aud", alter: { aud: "other-server" } },
    { name: "sub", alter: { sub: "a2" } },
    { name: "iat", alter: { iat: 1 } },
  ];
  for (const { name, alter } of cases) {
    await t.step(`claim ${name}`, async () => {
      const { handshake } = setup();
      const c = await handshake.issue(hello("a1", kp));
      const jws = await signChallenge(kp.privateKey, c.header, { ...c.claims, ...alter });
      await assert.rejects(handshake.verify(c, jws), (e) => isJwError(e, "bad_signature"));
    });
  }
  await t.step("nonce", async () => {
    const { handshake } = setup();
    const c = await handshake.issue(hello("a1", kp));
    const jws = await signChallenge(kp.privateKey, c.header, {
      ...c.claims,
      nonce: "A".repeat(43),
    });
    await assert.rejects(handshake.verify(c, jws), (e) => isJwError(e, "replayed"));
  });
  await t.step("header kid", async () => {
    const { handshake } = setup();
    const c = await handshake.issue(hello("a1", kp));
    const jws = await signChallenge(kp.privateKey, { ...c.header, kid: "x" }, c.claims);
    await assert.rejects(handshake.verify(c, jws), (e) => isJwError(e, "bad_signature"));
  });
  await t.step("payload swapped after signing", async () => {
    const { handshake } = setup();
    const c = await handshake.issue(hello("a1", kp));
    const jws = await signChallenge(kp.privateKey, c.header, c.claims);
    const [h, , s] = jws.split(".");
    const forged = btoa(JSON.stringify({ ...c.claims, exp: c.claims.exp + 3600 }))
      .replaceAll("+", "-").replaceAll("/", "_").replace(/=+$/, "");
    await assert.rejects(
      handshake.verify(c, `${h}.${forged}.${s}`),
      (e) => isJwError(e, "bad_signature"),
    );
  });
});

Deno.test("Handshake.release() drops an unanswered challenge", async () => {
  const { handshake } = setup();
  const kp = await generateKeyPair();
  const c = await handshake.issue(hello("a1", kp));
  handshake.release(c);
  handshake.release(c);
  assert.equal(handshake.outstanding, 0);
  await assert.rejects(
    handshake.verify(c, await signChallenge(kp.privateKey, c.header, c.claims)),
    (e) => isJwError(e, "replayed"),
  );
});
