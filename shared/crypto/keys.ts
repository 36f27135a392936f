/**
 * Ed25519 key pairs as JWKs: generation, import, and RFC 7638 thumbprints (the `kid`).
 *
 * @module
 */
import * as jose from "jose";
import { JwError } from "../errors.ts";
import type { PublicJwk } from "../protocol/agent.ts";

/** A private Ed25519 JWK (includes `d`). */
export interface PrivateJwk {
  kty: "OKP";
  crv: "Ed25519";
  x: string;
  d: string;
}

/** A key pair ready for signing, plus its JWK forms. */
export interface Ed25519KeyPair {
  publicJwk: PublicJwk;
  privateJwk: PrivateJwk;
  privateKey: CryptoKey;
  /** RFC 7638 thumbprint of the public key. */
  kid: string;
}

/** Generates a fresh Ed25519 key pair. */
export async function generateKeyPair(): Promise<Ed25519KeyPair> {
  const { privateKey } = await jose.generateKeyPair("EdDSA", { crv: "Ed25519", extractable: true });
  const jwk = await jose.exportJWK(privateKey);
  return await importKeyPair(jwk as PrivateJwk);
}

/**
 * Loads a key pair from a private JWK.
 * @throws JwError `config` when the JWK is not an Ed25519 private key.
 */
export async function importKeyPair(jwk: PrivateJwk): Promise<Ed25519KeyPair> {
  if (
    jwk?.kty !== "OKP" || jwk.crv !== "Ed25519" || typeof jwk.d !== "string" ||
    typeof jwk.x !== "string"
  ) {
    throw new JwError("config", "key file does not hold an Ed25519 private JWK");
  }
  const privateJwk: PrivateJwk = { kty: "OKP", crv: "Ed25519", x: jwk.x, d: jwk.d };
  const publicJwk: PublicJwk = { kty: "OKP", crv: "Ed25519", x: jwk.x };
  const privateKey = await jose.importJWK({ ...privateJwk, alg: "EdDSA" }, "EdDSA") as CryptoKey;
  return { publicJwk, privateJwk, privateKey, kid: await thumbprint(publicJwk) };
}

/** RFC 7638 SHA-256 thumbprint of a public JWK. */
export function thumbprint(jwk: PublicJwk): Promise<string> {
  return jose.calculateJwkThumbprint({ kty: jwk.kty, crv: jwk.crv, x: jwk.x }, "sha256");
}

/** True when two public JWKs are the same key. */
export function sameKey(a: PublicJwk, b: PublicJwk): boolean {
  return a.kty === b.kty && a.crv === b.crv && a.x === b.x;
}
