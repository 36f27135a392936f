import assert from "node:assert/strict";
import { isJwError } from "../errors.ts";
import { FILES_AUDIENCE, signAgentToken, verifyAgentToken } from "./agent_token.ts";
import { generateKeyPair } from "./keys.ts";

Deno.test("agent tokens verify under the agent's key, for their audience and lifetime", async () => {
  const mine = await generateKeyPair();
  const other = await generateKeyPair();
  const now = Date.UTC(2026, 10, 27, 12, 0, 0);
  const keys = new Map([["a1", mine.publicJwk], ["a2", other.publicJwk]]);
  const keyOf = (id: string) => keys.get(id);
  const token = await signAgentToken(mine, "a1", FILES_AUDIENCE, now);
  assert.equal(await verifyAgentToken(token, keyOf, FILES_AUDIENCE, now + 1000), "a1");

  const fails = async (t: string, at: number, why: RegExp, audience = FILES_AUDIENCE) => {
    await assert.rejects(
      verifyAgentToken(t, keyOf, audience, at),
      (err: unknown) => isJwError(err, "unauthorized") && why.test(err.message),
    );
  };
  await fails(token, now + 301_000 + 60_000, /expired/);
  await fails(token, now, /claim aud/, "jw-other");
  await fails("not.a.jwt", now, /not a JWT/);
  // Signed by another key but claiming to be a1.
  await fails(await signAgentToken(other, "a1", FILES_AUDIENCE, now), now, /does not verify/);
  await fails(await signAgentToken(mine, "nobody", FILES_AUDIENCE, now), now, /unknown agent/);
});
