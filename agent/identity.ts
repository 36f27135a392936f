/**
 * The agent's identity: an Ed25519 key pair made on first start and reused after.
 * `DATA/agent.key` holds the private JWK (mode 0600), `DATA/agent.pub` the public JWK
 * (mode 0644, informational: the private key is the source of truth).
 *
 * @module
 */
import { posix } from "node:path";
import { JwError } from "../shared/errors.ts";
import { generateKeyPair, importKeyPair } from "../shared/crypto/mod.ts";
import type { Ed25519KeyPair, PrivateJwk } from "../shared/crypto/mod.ts";
import type { Fs } from "../shared/fs/mod.ts";

/** Mode of the private key file. */
export const PRIVATE_KEY_MODE = 0o600;
/** Mode of the public key file. */
export const PUBLIC_KEY_MODE = 0o644;

/** A loaded identity. */
export interface AgentIdentity {
  /** The key pair (private key ready for signing, public JWK, `kid` thumbprint). */
  keyPair: Ed25519KeyPair;
  /** Path of the private key file. */
  keyPath: string;
  /** Path of the public key file. */
  pubPath: string;
  /** True when this call generated the key pair. */
  created: boolean;
}

/**
 * Loads the key pair from `dataDir`, creating the directory and a fresh pair when there is
 * no key file yet. An existing `agent.pub` that is missing or disagrees with the private
 * key is rewritten.
 *
 * Not safe against two processes creating the same directory's key at once (one agent
 * owns one data directory).
 *
 * @throws JwError `config` when the key file is readable or writable by group or others
 *   (the message gives the `chmod 600` fix), is not JSON, or is not an Ed25519 private JWK;
 *   Fs errors (`forbidden`, `internal`) pass through.
 */
export async function loadIdentity(fs: Fs, dataDir: string): Promise<AgentIdentity> {
  const keyPath = posix.join(dataDir, "agent.key");
  const pubPath = posix.join(dataDir, "agent.pub");
  if (!(await fs.exists(keyPath))) {
    await fs.mkdir(dataDir, { recursive: true });
    const keyPair = await generateKeyPair();
    await fs.writeTextFile(keyPath, JSON.stringify(keyPair.privateJwk) + "\n", {
      mode: PRIVATE_KEY_MODE,
    });
    await writePublic(fs, pubPath, keyPair);
    return { keyPair, keyPath, pubPath, created: true };
  }

  const { mode } = await fs.stat(keyPath);
  if (mode !== null && (mode & 0o077) !== 0) {
    throw new JwError(
      "config",
      `private key ${keyPath} is accessible by group or others (mode ${octal(mode)}); ` +
        `fix it with: chmod 600 ${keyPath}`,
      { detail: { path: keyPath, mode: octal(mode) } },
    );
  }
  const text = await fs.readTextFile(keyPath);
  let jwk: PrivateJwk;
  try {
    jwk = JSON.parse(text);
  } catch (err) {
    throw new JwError("config", `private key ${keyPath} is not JSON`, { cause: err });
  }
  let keyPair: Ed25519KeyPair;
  try {
    keyPair = await importKeyPair(jwk);
  } catch (err) {
    throw new JwError("config", `private key ${keyPath} is not an Ed25519 private JWK`, {
      cause: err,
    });
  }
  if (!(await publicMatches(fs, pubPath, keyPair))) await writePublic(fs, pubPath, keyPair);
  return { keyPair, keyPath, pubPath, created: false };
}

function writePublic(fs: Fs, pubPath: string, keyPair: Ed25519KeyPair): Promise<void> {
  return fs.writeTextFile(pubPath, JSON.stringify(keyPair.publicJwk) + "\n", {
    mode: PUBLIC_KEY_MODE,
  });
}

async function publicMatches(fs: Fs, pubPath: string, keyPair: Ed25519KeyPair): Promise<boolean> {
  try {
    const jwk = JSON.parse(await fs.readTextFile(pubPath));
    return jwk?.x === keyPair.publicJwk.x && jwk?.kty === "OKP" && jwk?.crv === "Ed25519";
  } catch {
    return false;
  }
}

function octal(mode: number): string {
  return "0" + mode.toString(8).padStart(3, "0");
}
