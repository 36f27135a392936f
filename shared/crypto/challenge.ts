/**
 * The agent handshake's signature: the server issues a JWT header and claims, the agent
 * signs exactly those as a compact JWS with its Ed25519 key, and the server checks that
 * the JWS verifies under the agent's key and carries exactly what was issued.
 *
 * @module
 */
import * as jose from "jose";
import { JwError } from "../errors.ts";
import type { ChallengeClaims, ChallengeHeader, PublicJwk } from "../protocol/agent.ts";

const encoder = new TextEncoder();
const decoder = new TextDecoder();

/** Signs a challenge as a compact JWS (agent side). */
export function signChallenge(
  privateKey: CryptoKey,
  header: ChallengeHeader,
  claims: ChallengeClaims,
): Promise<string> {
  return new jose.CompactSign(encoder.encode(JSON.stringify(claims)))
    .setProtectedHeader(header)
    .sign(privateKey);
}

/**
 * Verifies a challenge response (server side) and returns the signed claims. Checks the
 * signature, the `alg`, and that header and claims equal what was issued. Freshness and
 * single use are the caller's job (it owns the clock and the nonce set).
 * @throws JwError `bad_signature` or `replayed`.
 */
export async function verifyChallengeResponse(
  jws: string,
  publicKey: PublicJwk,
  issued: { header: ChallengeHeader; claims: ChallengeClaims },
): Promise<ChallengeClaims> {
  let payload: Uint8Array;
  let header: jose.CompactJWSHeaderParameters;
  try {
    const key = await jose.importJWK({ ...publicKey, alg: "EdDSA" }, "EdDSA");
    ({ payload, protectedHeader: header } = await jose.compactVerify(jws, key, {
      algorithms: ["EdDSA"],
    }));
  } catch (err) {
    throw new JwError("bad_signature", "challenge response signature does not verify", {
      cause: err,
    });
  }
  let claims: ChallengeClaims;
  try {
    claims = JSON.parse(decoder.decode(payload));
  } catch (err) {
    throw new JwError("bad_signature", "challenge response payload is not JSON", { cause: err });
  }
  if (header.kid !== issued.header.kid || header.typ !== issued.header.typ) {
    throw new JwError("bad_signature", "challenge response header differs from the challenge");
  }
  if (claims.nonce !== issued.claims.nonce) {
    throw new JwError("replayed", "challenge response is for a different nonce");
  }
  for (const k of ["iat", "exp", "aud", "sub", "kid"] as const) {
    if (claims[k] !== issued.claims[k]) {
      throw new JwError(
        "bad_signature",
        `challenge response claim "${k}" differs from the challenge`,
      );
    }
  }
  return claims;
}
