import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import * as jose from "jose";
import { type ErrorCode, isJwError } from "../errors.ts";
import type { PublicJwk } from "../protocol/agent.ts";
import { parseScript } from "../protocol/script.ts";
import { canonicalJson } from "./digest.ts";
import { type Ed25519KeyPair, generateKeyPair } from "./keys.ts";
import {
  SCRIPT_SIGNATURE_TYPE,
  signScript,
  type TrustedKeys,
  verifyScript,
  verifySelfSigned,
} from "./script.ts";

const HEADER = [
  "# disk usage, every mount",
  "name: disk-report",
  "version: 3",
  "description: >-",
  "  reports the use of",
  "  every mount",
  "permissions:",
  "  read: [/proc/mounts]",
  "  net: []",
  "timeout: 30s",
];
const BODY = "const m = await file.read('/proc/mounts');\n\nemit({ m }); // ✓ done\n";
const TEXT = `/*---\n${HEADER.join("\n")}\n---*/\n${BODY}`;
const NOW = new Date("2030-01-02T03:04:05.678Z");

function trust(...pairs: Ed25519KeyPair[]): TrustedKeys {
  const keys = new Map<string, PublicJwk>(pairs.map((p) => [p.kid, p.publicJwk]));
  return (kid) => keys.get(kid);
}

/** The header lines of a script file, markers excluded. */
function headerLines(text: string): string[] {
  return parseScript(text).headerYaml.replace(/\n$/, "").split("\n");
}

async function expectCode(promise: Promise<unknown>, code: ErrorCode, pattern?: RegExp) {
  await assert.rejects(
    promise,
    (e) => isJwError(e, code) && (pattern === undefined || pattern.test(e.message)),
  );
}

/** `text` with the one occurrence of `from` replaced by `to`. */
function edit(text: string, from: string, to: string): string {
  assert.equal(text.split(from).length, 2, `exactly one ${JSON.stringify(from)}`);
  return text.replace(from, to);
}

Deno.test("signScript() then verifyScript() accepts the script and names the signer", async () => {
  const key = await generateKeyPair();
  const signed = await signScript(TEXT, key, NOW);
  const verified = await verifyScript(signed, trust(key));
  assert.equal(verified.signer, key.kid);
  assert.equal(verified.header.name, "disk-report");
  assert.equal(verified.header.version, 3);
  assert.equal(verified.header.signer, key.kid);
  assert.equal(verified.header.signedAt, NOW.toISOString());
  assert.equal(verified.body, BODY);
  assert.equal(verified.text, signed);
  // A parsed script verifies the same way as its text.
  assert.equal((await verifyScript(parseScript(signed), trust(key))).signer, key.kid);
  // The signature is a detached compact JWS of our type, naming the key.
  const signature = verified.header.signature!;
  assert.match(signature, /^[\w-]+\.\.[\w-]+$/);
  const protectedHeader = jose.decodeProtectedHeader(signature);
  assert.equal(protectedHeader.alg, "EdDSA");
  assert.equal(protectedHeader.typ, SCRIPT_SIGNATURE_TYPE);
  assert.equal(protectedHeader.kid, key.kid);
  assert.deepEqual(protectedHeader.jwk, key.publicJwk);
});

Deno.test("signScript() appends the three fields and keeps every other byte", async () => {
  const key = await generateKeyPair();
  const signed = await signScript(TEXT, key, NOW);
  const lines = headerLines(signed);
  assert.deepEqual(lines.slice(0, HEADER.length), HEADER);
  assert.deepEqual(lines.slice(HEADER.length, -1), [
    `signer: "${key.kid}"`,
    `signedAt: "${NOW.toISOString()}"`,
  ]);
  assert.match(lines.at(-1)!, /^signature: "[\w-]+\.\.[\w-]+"$/);
  assert.equal(lines.length, HEADER.length + 3);
  assert.equal(parseScript(signed).body, BODY);
  assert.ok(signed.startsWith(`/*---\n${HEADER.join("\n")}\n`));
  assert.ok(signed.endsWith(`\n---*/\n${BODY}`));
});

Deno.test("signScript() again replaces signer, signedAt and signature instead of adding more", async () => {
  const first = await generateKeyPair();
  const second = await generateKeyPair();
  const later = new Date(NOW.getTime() + 60_000);
  const once = await signScript(TEXT, first, NOW);
  const twice = await signScript(once, second, later);
  for (const field of ["signer", "signedAt", "signature"]) {
    assert.equal(headerLines(twice).filter((l) => l.startsWith(`${field}:`)).length, 1, field);
  }
  assert.deepEqual(headerLines(twice).slice(0, HEADER.length), HEADER);
  assert.equal(parseScript(twice).body, BODY);
  assert.equal((await verifyScript(twice, trust(second))).header.signedAt, later.toISOString());
  await expectCode(verifyScript(twice, trust(first)), "untrusted");
  // Signing the same script with the same key at the same time gives the same file.
  assert.equal(await signScript(twice, second, later), twice);
});

Deno.test("signScript() moves signed fields from the middle of the header, continuation lines and all", async () => {
  const key = await generateKeyPair();
  const text = "/*---\nname: a\nsigner: someone\nsignature: >-\n  eyJ.\n  .x\n" +
    "version: 1\nsignedAt: yesterday\n# kept\n---*/\nbody\n";
  const signed = await signScript(text, key, NOW);
  assert.deepEqual(headerLines(signed).slice(0, 3), ["name: a", "version: 1", "# kept"]);
  assert.equal(headerLines(signed).length, 6);
  assert.equal((await verifyScript(signed, trust(key))).signer, key.kid);
});

Deno.test("signScript() refuses headers it cannot rewrite line by line", async (t) => {
  const key = await generateKeyPair();
  await t.step("a flow mapping", async () => {
    await expectCode(
      signScript("/*---\n{name: a, version: 1}\n---*/\nx\n", key, NOW),
      "invalid_script",
      /cannot sign this header/,
    );
  });
  await t.step("a quoted signer key", async () => {
    await expectCode(
      signScript('/*---\nname: a\nversion: 1\n"signer": me\n---*/\nx\n', key, NOW),
      "invalid_script",
      /cannot sign this header/,
    );
  });
  await t.step("not a script", async () => {
    await expectCode(signScript("emit({});\n", key, NOW), "invalid_script", /must start/);
  });
});

Deno.test("verifyScript() refuses every change made after signing", async (t) => {
  const key = await generateKeyPair();
  const other = await generateKeyPair();
  const signed = await signScript(TEXT, key, NOW);
  const signature = parseScript(signed).header.signature!;
  const otherSigned = await signScript(TEXT, other, NOW);
  const otherSignature = parseScript(otherSigned).header.signature!;

  const tampered: [string, string][] = [
    ["one byte of the body", edit(signed, "emit({ m })", "emit({ n })")],
    ["a byte appended to the body", signed + " "],
    ["a widened permission", edit(signed, "read: [/proc/mounts]", "read: [/proc/mounts, /etc]")],
    ["a new permission list", edit(signed, "net: []", "net: [evil.example:443]")],
    ["a bumped version", edit(signed, "version: 3", "version: 4")],
    ["a longer timeout", edit(signed, "timeout: 30s", "timeout: 24h")],
    ["a changed description", edit(signed, "  every mount\n", "  every disk\n")],
    ["a changed signedAt", edit(signed, NOW.toISOString(), "2031-01-01T00:00:00.000Z")],
    ["another key's signature pasted in", edit(signed, signature, otherSignature)],
    ["a signature whose halves are swapped", edit(signed, signature, swapHalves(signature))],
    ["a signature with a payload", edit(signed, signature, signature.replace("..", ".e30."))],
    ["a signature cut short", edit(signed, signature, signature.slice(0, -4))],
  ];
  for (const [name, text] of tampered) {
    await t.step(name, () => expectCode(verifyScript(text, trust(key)), "bad_signature"));
  }

  await t.step("the signer changed to an untrusted key id: untrusted", async () => {
    const text = edit(signed, `signer: "${key.kid}"`, `signer: "${other.kid}"`);
    await expectCode(verifyScript(text, trust(key)), "untrusted", /not a trusted signer/);
  });
  await t.step("the signer changed to another trusted key id: bad_signature", async () => {
    const text = edit(signed, `signer: "${key.kid}"`, `signer: "${other.kid}"`);
    await expectCode(verifyScript(text, trust(key, other)), "bad_signature");
  });
  await t.step("header comments closing the code comment: invalid_script", async () => {
    // YAML ignores comments, so only the parser stands between this and running code.
    const text = edit(signed, "# disk usage", "# */ Deno.exit(); /* disk usage");
    await expectCode(verifyScript(text, trust(key)), "invalid_script", /"\*\/"/);
  });
  // The untouched file still verifies, so each failure above is the tampering's doing.
  assert.equal((await verifyScript(signed, trust(key))).signer, key.kid);
  assert.equal((await verifyScript(otherSigned, trust(other))).signer, other.kid);
});

function swapHalves(signature: string): string {
  const [head, sig] = signature.split("..");
  return `${sig}..${head}`;
}

Deno.test("verifyScript() refuses unsigned scripts and keys it does not trust as untrusted", async () => {
  const key = await generateKeyPair();
  const stranger = await generateKeyPair();
  await expectCode(verifyScript(TEXT, trust(key)), "untrusted", /is not signed/);
  const signed = await signScript(TEXT, stranger, NOW);
  await expectCode(verifyScript(signed, trust(key)), "untrusted", /not a trusted signer/);
  await expectCode(verifyScript(signed, () => undefined), "untrusted");
  // A signer field without a signature is still unsigned.
  const noSignature = signed.split("\n").filter((l) => !l.startsWith("signature:")).join("\n");
  await expectCode(verifyScript(noSignature, trust(stranger)), "untrusted", /is not signed/);
});

Deno.test("verifyScript() checks against the trusted key, not the one in the signature", async () => {
  const key = await generateKeyPair();
  const impostor = await generateKeyPair();
  const signed = await signScript(TEXT, key, NOW);
  // The trust root maps the script's kid to another key: the embedded jwk must not win.
  await expectCode(verifyScript(signed, () => impostor.publicJwk), "bad_signature");
});

Deno.test("verifySelfSigned() accepts a script whose embedded key is its signer", async () => {
  const key = await generateKeyPair();
  const signed = await signScript(TEXT, key, NOW);
  const verified = await verifySelfSigned(signed);
  assert.equal(verified.signer, key.kid);
  assert.equal(verified.header.version, 3);
  await expectCode(verifySelfSigned(TEXT), "untrusted", /is not signed/);
  await expectCode(verifySelfSigned(edit(signed, "version: 3", "version: 4")), "bad_signature");
});

Deno.test("verifySelfSigned() refuses an embedded key that does not match the signer", async (t) => {
  const key = await generateKeyPair();
  const other = await generateKeyPair();
  const signed = await signScript(TEXT, key, NOW);

  await t.step("signer field names another key", async () => {
    const text = edit(signed, `signer: "${key.kid}"`, `signer: "${other.kid}"`);
    await expectCode(verifySelfSigned(text), "bad_signature", /does not match its signer/);
  });
  await t.step("control: a signature made the same way by the right key passes", async () => {
    const remade = await forgeSignature(signed, key, key);
    assert.equal((await verifySelfSigned(remade)).signer, key.kid);
  });
  await t.step("embedded jwk is the signer's, signature made by another key", async () => {
    // The protected header claims `key`, but `other` signed: the thumbprint matches, the
    // signature does not.
    const forged = await forgeSignature(signed, key, other);
    await expectCode(verifySelfSigned(forged), "bad_signature", /does not verify/);
  });
  await t.step("no jwk in the signature header", async () => {
    const bare = await forgeSignature(signed, key, key, false);
    await expectCode(verifySelfSigned(bare), "bad_signature", /no Ed25519 public key/);
  });
  await t.step("not a JWS at all", async () => {
    const sig = parseScript(signed).header.signature!;
    await expectCode(verifySelfSigned(edit(signed, sig, "garbage")), "bad_signature");
  });
});

/**
 * Replaces the script's signature with one over the same payload whose protected header
 * claims `claimed` (kid and, unless `withJwk` is false, jwk) but which `signer` made.
 */
async function forgeSignature(
  signed: string,
  claimed: Ed25519KeyPair,
  signer: Ed25519KeyPair,
  withJwk = true,
): Promise<string> {
  const parsed = parseScript(signed);
  const { signature, ...header } = parsed.rawHeader;
  const body = "sha256:" + createHash("sha256").update(parsed.body, "utf8").digest("hex");
  const payload = new TextEncoder().encode(canonicalJson({ header, body }));
  const jws = await new jose.CompactSign(payload)
    .setProtectedHeader({
      alg: "EdDSA",
      typ: SCRIPT_SIGNATURE_TYPE,
      kid: claimed.kid,
      ...(withJwk ? { jwk: claimed.publicJwk } : {}),
    })
    .sign(signer.privateKey);
  const [head, , sig] = jws.split(".");
  return edit(signed, String(signature), `${head}..${sig}`);
}
