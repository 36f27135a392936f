/**
 * Server-to-server HTTP requests (e.g. fetching a script from the server that holds it) are
 * authenticated with a short-lived JWT (HS256) signed with the cluster key: header
 * `{alg: "HS256", typ: "jw-peer", kid}`, claims `{aud: <cluster>, iss: <server id>, sub: <what
 * is asked for>, iat, exp}`. Its `typ` differs from gossip tokens', so neither is ever
 * accepted as the other, and `sub` binds it to one resource.
 *
 * @module
 */
import { Buffer } from "node:buffer";
import { createHmac, timingSafeEqual } from "node:crypto";
import { JwError } from "../../shared/errors.ts";
import type { Keyring } from "./keyring.ts";

/** The `typ` of peer tokens. */
export const PEER_TOKEN_TYPE = "jw-peer";

/** How long a peer token is valid, seconds. */
export const PEER_TOKEN_TTL_S = 30;

const b64 = (value: unknown) => Buffer.from(JSON.stringify(value)).toString("base64url");

/** A token for `subject`, from server `issuer`, signed with the primary key. */
export function peerToken(
  keyring: Keyring,
  issuer: string,
  subject: string,
  nowMs: number,
): string {
  const key = keyring.primary();
  const iat = Math.floor(nowMs / 1000);
  const head = `${b64({ alg: "HS256", typ: PEER_TOKEN_TYPE, kid: key.id })}.${
    b64({ aud: keyring.cluster, iss: issuer, sub: subject, iat, exp: iat + PEER_TOKEN_TTL_S })
  }`;
  return `${head}.${createHmac("sha256", key.hmacKey).update(head).digest("base64url")}`;
}

/**
 * Checks a peer token for `subject`.
 * @returns the issuing server's id.
 * @throws JwError `unauthorized` naming what is wrong (never the key).
 */
export function verifyPeerToken(
  keyring: Keyring,
  token: string,
  subject: string,
  nowMs: number,
): string {
  const fail = (why: string): never => {
    throw new JwError("unauthorized", `peer token refused: ${why}`);
  };
  const parts = token.split(".");
  if (parts.length !== 3) fail("not a JWT");
  let header: Record<string, unknown>;
  let claims: Record<string, unknown>;
  try {
    header = JSON.parse(Buffer.from(parts[0], "base64url").toString("utf8"));
    claims = JSON.parse(Buffer.from(parts[1], "base64url").toString("utf8"));
  } catch {
    return fail("malformed");
  }
  if (header.alg !== "HS256" || header.typ !== PEER_TOKEN_TYPE) fail("not a peer token");
  const key = typeof header.kid === "string" ? keyring.byId(header.kid) : undefined;
  if (!key) return fail("unknown key");
  const want = createHmac("sha256", key.hmacKey).update(`${parts[0]}.${parts[1]}`).digest();
  const got = Buffer.from(parts[2], "base64url");
  if (got.length !== want.length || !timingSafeEqual(got, want)) fail("bad signature");
  const now = Math.floor(nowMs / 1000);
  if (claims.aud !== keyring.cluster) fail("another cluster");
  if (claims.sub !== subject) fail("for another resource");
  if (typeof claims.exp !== "number" || claims.exp < now) fail("expired");
  if (typeof claims.iat !== "number" || claims.iat > now + PEER_TOKEN_TTL_S) {
    fail("from the future");
  }
  if (typeof claims.iss !== "string") fail("no issuer");
  return claims.iss as string;
}
