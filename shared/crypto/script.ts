/**
 * Script signatures. `signScript` adds `signer`, `signedAt` and `signature` to a script's
 * header and changes nothing else; `verifyScript` checks one against trusted keys.
 *
 * The signature is a compact JWS (EdDSA) with a detached payload: `protected..signature`.
 * Its payload is the canonical JSON of `{header, body}`, where `header` is the header as YAML
 * parsed it without `signature` (so `signer` and `signedAt` are covered) and `body` is the
 * SHA-256 of the body's exact UTF-8 bytes. Changing a permission, the version or one byte of
 * code breaks it. The protected header carries `typ: "jw-script"` (a script signature is
 * never valid as anything else), `kid` (the signer's RFC 7638 thumbprint) and the public
 * `jwk`, which only the server's self-consistency check uses: agents verify with their own
 * trusted keys, never one that came with the script.
 *
 * @module
 */
import { createHash } from "node:crypto";
import * as jose from "jose";
import { JwError } from "../errors.ts";
import type { PublicJwk } from "../protocol/agent.ts";
import { type ParsedScript, parseScript } from "../protocol/script.ts";
import { canonicalJson } from "./digest.ts";
import { type Ed25519KeyPair, thumbprint } from "./keys.ts";

/** The JWS `typ` of script signatures. */
export const SCRIPT_SIGNATURE_TYPE = "jw-script";

/** The header fields signing adds. */
const SIGNED_FIELDS = ["signer", "signedAt", "signature"] as const;

const encoder = new TextEncoder();

/** The bytes the signature covers. */
function signingInput(script: ParsedScript): Uint8Array {
  const header = { ...script.rawHeader };
  delete header.signature;
  const body = "sha256:" + createHash("sha256").update(script.body, "utf8").digest("hex");
  return encoder.encode(canonicalJson({ header, body }));
}

/**
 * Signs a script: returns its text with `signer`, `signedAt` and `signature` set at the end of
 * the header (replacing earlier values of those three top-level fields, with any indented
 * lines that continue them); every other byte stays as it was.
 * @throws JwError `invalid_script` when the script does not parse, or when its header is
 *   written so that replacing those fields line by line would change anything else (a flow
 *   mapping `{...}`, a quoted `"signer":` key).
 */
export async function signScript(
  text: string,
  key: Ed25519KeyPair,
  now: Date = new Date(),
): Promise<string> {
  const parsed = parseScript(text);
  const rest = withoutSignedFields(parsed.headerYaml);
  const kept = rest.endsWith("\n") ? rest : rest + "\n";
  const withSigner = `${kept}signer: ${JSON.stringify(key.kid)}\nsignedAt: ${
    JSON.stringify(now.toISOString())
  }\n`;
  let unsigned: ParsedScript;
  try {
    unsigned = parseScript(rebuild(withSigner, parsed.body));
  } catch (err) {
    throw cannotSign(err);
  }
  const jws = await new jose.CompactSign(signingInput(unsigned))
    .setProtectedHeader({
      alg: "EdDSA",
      typ: SCRIPT_SIGNATURE_TYPE,
      kid: key.kid,
      jwk: key.publicJwk,
    })
    .sign(key.privateKey);
  const [protectedPart, , signaturePart] = jws.split(".");
  const signed = rebuild(
    `${withSigner}signature: ${JSON.stringify(`${protectedPart}..${signaturePart}`)}\n`,
    parsed.body,
  );
  // The result must parse, and say the same as the input apart from the three fields.
  const check = parseScript(signed);
  const expected = {
    ...withoutKeys(parsed.rawHeader),
    signer: key.kid,
    signedAt: now.toISOString(),
    signature: `${protectedPart}..${signaturePart}`,
  };
  if (check.body !== parsed.body || canonicalJson(check.rawHeader) !== canonicalJson(expected)) {
    throw cannotSign();
  }
  return signed;
}

function cannotSign(cause?: unknown): JwError {
  return new JwError(
    "invalid_script",
    "cannot sign this header: write it as block YAML with one top-level field per line " +
      "(signer, signedAt and signature are replaced line by line)" +
      (cause instanceof Error ? ` (${cause.message})` : ""),
    { cause },
  );
}

/**
 * The header's lines without the top-level `signer`, `signedAt` and `signature` fields,
 * including the indented lines that continue one of them (a block scalar or a wrapped value).
 */
function withoutSignedFields(headerYaml: string): string {
  const out: string[] = [];
  let dropping = false;
  for (const line of headerYaml.split("\n")) {
    if (dropping && /^[ \t]/.test(line)) continue;
    dropping = SIGNED_FIELDS.some((f) => line.startsWith(`${f}:`));
    if (!dropping) out.push(line);
  }
  return out.join("\n");
}

function withoutKeys(header: Record<string, unknown>): Record<string, unknown> {
  const rest = { ...header };
  for (const f of SIGNED_FIELDS) delete rest[f];
  return rest;
}

function rebuild(headerYaml: string, body: string): string {
  return `/*---\n${headerYaml}---*/\n${body}`;
}

/** A script whose signature verified. */
export interface VerifiedScript extends ParsedScript {
  /** The signer's key id. */
  signer: string;
}

/** Finds a trusted public key by key id; undefined when the id is not trusted. */
export type TrustedKeys = (kid: string) => PublicJwk | undefined;

/**
 * Verifies a script against trusted keys.
 * @throws JwError `invalid_script` (does not parse), `untrusted` (unsigned, or signed by a
 *   key `trusted` does not know), `bad_signature` (the signature does not match the header
 *   and body: something changed after signing, or it is malformed).
 */
export async function verifyScript(
  script: string | ParsedScript,
  trusted: TrustedKeys,
): Promise<VerifiedScript> {
  const parsed = typeof script === "string" ? parseScript(script) : script;
  const { signer, signature } = parsed.header;
  if (signer === undefined || signature === undefined) {
    throw new JwError(
      "untrusted",
      `script "${parsed.header.name}" is not signed (sign it with jw sign)`,
    );
  }
  const key = trusted(signer);
  if (!key) {
    throw new JwError(
      "untrusted",
      `script "${parsed.header.name}" is signed by ${signer}, which is not a trusted signer`,
      { detail: { signer } },
    );
  }
  await checkSignature(parsed, signer, signature, key);
  return { ...parsed, signer };
}

/**
 * Checks that a script's signature verifies against the public key in its own signature
 * header and that the key's thumbprint is the header's `signer`: what a server can check
 * without trusting anyone. Agents use {@link verifyScript}.
 * @throws JwError as {@link verifyScript}.
 */
export async function verifySelfSigned(script: string | ParsedScript): Promise<VerifiedScript> {
  const parsed = typeof script === "string" ? parseScript(script) : script;
  const { signature } = parsed.header;
  if (parsed.header.signer === undefined || signature === undefined) {
    throw new JwError(
      "untrusted",
      `script "${parsed.header.name}" is not signed (sign it with jw sign)`,
    );
  }
  let jwk: unknown;
  try {
    jwk = jose.decodeProtectedHeader(signature).jwk;
  } catch {
    throw new JwError("bad_signature", "script signature is not a compact JWS");
  }
  const candidate = jwk as PublicJwk | undefined;
  if (
    !candidate || candidate.kty !== "OKP" || candidate.crv !== "Ed25519" ||
    typeof candidate.x !== "string"
  ) {
    throw new JwError("bad_signature", "script signature carries no Ed25519 public key");
  }
  const publicJwk: PublicJwk = { kty: "OKP", crv: "Ed25519", x: candidate.x };
  if (await thumbprint(publicJwk) !== parsed.header.signer) {
    throw new JwError("bad_signature", "script signature key does not match its signer field");
  }
  return await verifyScript(parsed, () => publicJwk);
}

async function checkSignature(
  parsed: ParsedScript,
  signer: string,
  signature: string,
  key: PublicJwk,
): Promise<void> {
  const parts = signature.split(".");
  if (parts.length !== 3 || parts[1] !== "") {
    throw new JwError("bad_signature", "script signature is not a detached compact JWS");
  }
  const payload = jose.base64url.encode(signingInput(parsed));
  try {
    const cryptoKey = await jose.importJWK({ ...key, alg: "EdDSA" }, "EdDSA");
    const { protectedHeader } = await jose.compactVerify(
      `${parts[0]}.${payload}.${parts[2]}`,
      cryptoKey,
      { algorithms: ["EdDSA"] },
    );
    if (protectedHeader.typ !== SCRIPT_SIGNATURE_TYPE) {
      throw new JwError("bad_signature", "signature is not a script signature");
    }
    if (protectedHeader.kid !== signer) {
      throw new JwError("bad_signature", "signature key id does not match the signer field");
    }
  } catch (err) {
    if (err instanceof JwError) throw err;
    throw new JwError(
      "bad_signature",
      `signature of script "${parsed.header.name}" does not verify: the script changed after ` +
        "it was signed, or the signature is damaged",
      { cause: err },
    );
  }
}
