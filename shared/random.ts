/**
 * The Random seam: ids, nonces and jitter come from a {@link Random} so tests can make
 * them predictable.
 *
 * @module
 */

/** A source of randomness. */
export interface Random {
  /** A float in [0, 1). */
  float(): number;
  /** `n` random bytes. */
  bytes(n: number): Uint8Array;
}

/** Cryptographically strong randomness from Web Crypto. */
export const cryptoRandom: Random = {
  float: () => crypto.getRandomValues(new Uint32Array(1))[0] / 2 ** 32,
  bytes: (n) => crypto.getRandomValues(new Uint8Array(n)),
};

/** A deterministic generator (mulberry32) for tests. Never use it for nonces in production. */
export function seededRandom(seed: number): Random {
  let state = seed >>> 0;
  const next = () => {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 2 ** 32;
  };
  return {
    float: next,
    bytes: (n) => Uint8Array.from({ length: n }, () => Math.floor(next() * 256)),
  };
}

const ALNUM = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";

/**
 * A URL-safe random id with `bytes` bytes of entropy (base64url, no padding). It always
 * starts with a letter or digit, so it is a valid protocol `Id` and never looks like a flag.
 */
export function randomId(random: Random = cryptoRandom, bytes = 12): string {
  const id = base64url(random.bytes(bytes));
  return /^[A-Za-z0-9]/.test(id)
    ? id
    : ALNUM[Math.floor(random.float() * ALNUM.length)] + id.slice(1);
}

/** base64url without padding. */
export function base64url(data: Uint8Array): string {
  let s = "";
  for (const b of data) s += String.fromCharCode(b);
  return btoa(s).replaceAll("+", "-").replaceAll("/", "_").replace(/=+$/, "");
}
