/**
 * The agent's trusted script signers: public keys read from files named in its own config
 * (`trust.signers`, `--trust-signer FILE`). Never a key that came from a server.
 *
 * @module
 */
import { JwError } from "../../shared/errors.ts";
import type { Fs } from "../../shared/fs/mod.ts";
import { thumbprint } from "../../shared/crypto/mod.ts";
import type { TrustedKeys } from "../../shared/crypto/script.ts";
import type { PublicJwk } from "../../shared/protocol/mod.ts";

/** Trusted signers by key id. */
export interface TrustedSigners {
  /** Key ids, in the order the files were given. */
  readonly kids: readonly string[];
  /** The key for a key id, or undefined when it is not trusted. */
  readonly lookup: TrustedKeys;
}

/**
 * Reads each file as an Ed25519 public JWK (`jw sign keygen` writes one as `FILE.pub`; a
 * `kid` in the file is ignored: the key id is computed from the key).
 * @throws JwError `config` naming the file when one cannot be read or holds no Ed25519 key,
 *   or holds a private key (`d`): only public keys belong in an agent's trust list.
 */
export async function loadTrustedSigners(
  fs: Fs,
  files: readonly string[],
): Promise<TrustedSigners> {
  const keys = new Map<string, PublicJwk>();
  for (const file of files) {
    let jwk: Record<string, unknown>;
    try {
      jwk = JSON.parse(await fs.readTextFile(file));
    } catch (err) {
      throw new JwError(
        "config",
        `cannot read trusted signer ${file}: ${(err as Error).message}`,
        { cause: err },
      );
    }
    if (jwk?.kty !== "OKP" || jwk.crv !== "Ed25519" || typeof jwk.x !== "string") {
      throw new JwError("config", `trusted signer ${file} is not an Ed25519 public JWK`);
    }
    if ("d" in jwk) {
      throw new JwError(
        "config",
        `trusted signer ${file} holds a private key: give the agent the .pub file only`,
      );
    }
    const key: PublicJwk = { kty: "OKP", crv: "Ed25519", x: jwk.x };
    keys.set(await thumbprint(key), key);
  }
  return { kids: [...keys.keys()], lookup: (kid) => keys.get(kid) };
}
