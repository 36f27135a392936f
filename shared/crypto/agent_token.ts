/**
 * Agent tokens: how an agent proves itself on plain HTTP requests to its server (file
 * downloads), besides its WebSocket. A token is a JWT signed with the agent's Ed25519 key
 * (EdDSA, `kid` = the key's thumbprint) with the claims `sub` (agent id), `aud` (what it is
 * for, e.g. "jw-files"), `iat` and `exp` (a few minutes later). The server checks it against
 * the key it pinned for that agent at its first handshake.
 *
 * @module
 */
import * as jose from "jose";
import { JwError } from "../errors.ts";
import type { PublicJwk } from "../protocol/agent.ts";
import type { Ed25519KeyPair } from "./keys.ts";

/** The audience of tokens for `/files/`. */
export const FILES_AUDIENCE = "jw-files";

/** Default lifetime of a token, seconds. */
export const TOKEN_TTL_S = 300;

/** Clock difference tolerated between agent and server, seconds. */
export const TOKEN_SKEW_S = 60;

/** Signs a token for `agentId` (agent side). `now` in ms. */
export function signAgentToken(
  keyPair: Ed25519KeyPair,
  agentId: string,
  audience: string,
  now: number,
  ttlS = TOKEN_TTL_S,
): Promise<string> {
  const iat = Math.floor(now / 1000);
  return new jose.SignJWT({})
    .setProtectedHeader({ alg: "EdDSA", typ: "JWT", kid: keyPair.kid })
    .setSubject(agentId)
    .setAudience(audience)
    .setIssuedAt(iat)
    .setExpirationTime(iat + ttlS)
    .sign(keyPair.privateKey);
}

/**
 * Checks a token (server side) and returns the agent id it is for. `keyOf` gives the key
 * pinned for an agent id (undefined when the agent is unknown). `now` in ms.
 * @throws JwError `unauthorized` saying why (malformed, unknown agent, bad signature, wrong
 *   audience, expired or not yet valid).
 */
export async function verifyAgentToken(
  token: string,
  keyOf: (agentId: string) => PublicJwk | undefined,
  audience: string,
  now: number,
): Promise<string> {
  let agentId: unknown;
  try {
    agentId = jose.decodeJwt(token).sub;
  } catch {
    throw new JwError("unauthorized", "agent token is not a JWT");
  }
  if (typeof agentId !== "string" || agentId === "") {
    throw new JwError("unauthorized", "agent token names no agent (sub)");
  }
  const jwk = keyOf(agentId);
  if (!jwk) throw new JwError("unauthorized", `agent token for unknown agent ${agentId}`);
  try {
    const key = await jose.importJWK({ ...jwk, alg: "EdDSA" }, "EdDSA");
    await jose.jwtVerify(token, key, {
      algorithms: ["EdDSA"],
      audience,
      currentDate: new Date(now),
      clockTolerance: TOKEN_SKEW_S,
      requiredClaims: ["iat", "exp"],
    });
  } catch (err) {
    const why = err instanceof jose.errors.JWTExpired
      ? "expired"
      : err instanceof jose.errors.JWTClaimValidationFailed
      ? `claim ${err.claim} is not valid (${err.reason})`
      : "signature does not verify under the agent's key";
    throw new JwError("unauthorized", `agent token for ${agentId}: ${why}`);
  }
  return agentId;
}
