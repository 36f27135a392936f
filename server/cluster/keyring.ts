/**
 * The cluster keyring: the pre-shared keys that sign (and optionally encrypt) gossip.
 * Packets are signed with the primary key and accepted under any installed key, so a key
 * is rotated without flapping in three cluster-wide steps: {@link Keyring.install} the new
 * key on every server, then {@link Keyring.use} it on every server, then
 * {@link Keyring.remove} the old one on every server. Each step may reach servers at
 * different times; between steps every server still accepts what every other one sends.
 *
 * A key is 32 random bytes written as base64 (`jw server gen-key` makes one). It is known
 * by its key id: the first 8 bytes of its SHA-256, base64url (11 characters), which is
 * safe to log and to show operators.
 *
 * @module
 */
import { createHash, createSecretKey, hkdfSync, type KeyObject } from "node:crypto";
import { Buffer } from "node:buffer";
import { JwError } from "../../shared/errors.ts";
import { base64url, cryptoRandom, type Random } from "../../shared/random.ts";

/** Size of a cluster key in bytes. */
export const CLUSTER_KEY_BYTES = 32;

/** HKDF-SHA256 `info` that derives the AES-256-GCM key from a cluster key. */
export const AES_KEY_INFO = "jw-gossip-aes";

/** The JWS `typ` of every gossip token: no other token type is ever accepted as gossip. */
export const GOSSIP_TOKEN_TYPE = "jw-gossip";

/** Options of {@link createKeyring}. */
export interface KeyringOptions {
  /**
   * The cluster name, carried as `aud` in every token header: servers of another cluster
   * drop this cluster's packets even if they share a key. Non-empty, at most 128 bytes.
   */
  cluster: string;
  /** Installed keys, base64 of 32 bytes each. */
  keys: string[];
  /** The key to sign with; default `keys[0]`. Installed too when not in `keys`. */
  primary?: string;
}

/** One installed key as {@link Keyring.list} shows it. */
export interface KeyInfo {
  /** The key id (first 8 bytes of the key's SHA-256, base64url). */
  id: string;
  /** True for the key outgoing packets are signed with. */
  primary: boolean;
}

/**
 * An installed key with its precomputed material, as the sealing layer uses it. Never log
 * or serialise one: it holds the secret.
 */
export interface RingKey {
  /** The key id. */
  readonly id: string;
  /** The HMAC-SHA256 key (the cluster key itself). */
  readonly hmacKey: KeyObject;
  /** The AES-256-GCM key: HKDF-SHA256(cluster key, empty salt, {@link AES_KEY_INFO}). */
  readonly aesKey: KeyObject;
  /** The token header (base64url of its JSON) for plain and for encrypted gossip. */
  readonly headers: { readonly plain: string; readonly encrypted: string };
}

/**
 * The cluster's keys. Not shared across clusters. All methods are synchronous and take
 * effect for the next packet sent or received.
 */
export interface Keyring {
  /** The cluster name (the tokens' `aud`). */
  readonly cluster: string;
  /**
   * Installs a key for receiving; a key already installed is left as it is.
   * @throws JwError `config` when the key is not base64 of 32 bytes.
   */
  install(key: string): void;
  /**
   * Makes an installed key the primary (signing) key.
   * @throws JwError `config` for a malformed key, `not_found` when it is not installed.
   */
  use(key: string): void;
  /**
   * Removes a key; removing a key that is not installed does nothing.
   * @throws JwError `config` for a malformed key or when it is the primary key (use
   *   another key first).
   */
  remove(key: string): void;
  /** The installed keys in installation order, each with whether it is primary. */
  list(): KeyInfo[];
  /** The key outgoing packets are signed with. */
  primary(): RingKey;
  /**
   * The installed key whose plain or encrypted token header is exactly `header`, with
   * which of the two it is; undefined for any other string.
   */
  lookup(header: string): { key: RingKey; encrypted: boolean } | undefined;
  /** The installed key with this key id, if any. */
  byId(id: string): RingKey | undefined;
}

/**
 * Creates a keyring.
 * @throws JwError `config` for a bad cluster name, no keys, or a key that is not base64
 *   of 32 bytes (the message never contains key material).
 */
export function createKeyring(options: KeyringOptions): Keyring {
  const cluster = options.cluster;
  if (typeof cluster !== "string" || cluster.length === 0) {
    throw new JwError("config", "cluster name must be a non-empty string");
  }
  if (new TextEncoder().encode(cluster).length > 128) {
    throw new JwError("config", "cluster name must be at most 128 bytes");
  }
  const primaryText = options.primary ?? options.keys[0];
  if (primaryText === undefined) {
    throw new JwError("config", "a keyring needs at least one cluster key (jw server gen-key)");
  }

  /** Installed keys by id, in installation order. */
  const keys = new Map<string, RingKey>();
  /** Header string → key, for both header variants of every installed key. */
  const byHeader = new Map<string, { key: RingKey; encrypted: boolean }>();
  let primary: RingKey;

  const install = (text: string): RingKey => {
    const raw = decodeClusterKey(text);
    const id = keyId(raw);
    const existing = keys.get(id);
    if (existing) return existing;
    const key = makeRingKey(cluster, id, raw);
    keys.set(id, key);
    byHeader.set(key.headers.plain, { key, encrypted: false });
    byHeader.set(key.headers.encrypted, { key, encrypted: true });
    return key;
  };

  primary = install(primaryText);
  for (const k of options.keys) install(k);

  return {
    cluster,
    install(key) {
      install(key);
    },
    use(key) {
      const found = keys.get(keyId(decodeClusterKey(key)));
      if (!found) {
        throw new JwError("not_found", "that cluster key is not installed; install it first");
      }
      primary = found;
    },
    remove(key) {
      const id = keyId(decodeClusterKey(key));
      if (id === primary.id) {
        throw new JwError(
          "config",
          `key ${id} is the primary key; use another key before removing it`,
        );
      }
      const found = keys.get(id);
      if (!found) return;
      keys.delete(id);
      byHeader.delete(found.headers.plain);
      byHeader.delete(found.headers.encrypted);
    },
    list() {
      return [...keys.values()].map((k) => ({ id: k.id, primary: k === primary }));
    },
    primary() {
      return primary;
    },
    lookup(header) {
      return byHeader.get(header);
    },
    byId(id) {
      return keys.get(id);
    },
  };
}

/** A new random cluster key: 32 bytes as base64 (what `jw server gen-key` prints). */
export function generateClusterKey(random: Random = cryptoRandom): string {
  return Buffer.from(random.bytes(CLUSTER_KEY_BYTES)).toString("base64");
}

/**
 * The key id of a base64 cluster key: the first 8 bytes of its SHA-256, base64url.
 * @throws JwError `config` when the key is not base64 of 32 bytes.
 */
export function clusterKeyId(key: string): string {
  return keyId(decodeClusterKey(key));
}

/**
 * The token header for a cluster, key id and mode: base64url of
 * `{"alg":"HS256","typ":"jw-gossip","aud":CLUSTER,"kid":KID}`, plus `"enc":"A256GCM"` when
 * encrypted. Its length depends only on the cluster name and the mode, never on the key.
 */
export function tokenHeader(cluster: string, kid: string, encrypted: boolean): string {
  const header: Record<string, string> = {
    alg: "HS256",
    typ: GOSSIP_TOKEN_TYPE,
    aud: cluster,
    kid,
  };
  if (encrypted) header.enc = "A256GCM";
  return base64url(new TextEncoder().encode(JSON.stringify(header)));
}

const BASE64 = /^[A-Za-z0-9+/]*={0,2}$/;

function decodeClusterKey(text: string): Uint8Array {
  if (typeof text !== "string") {
    throw new JwError("config", "a cluster key must be a base64 string");
  }
  const trimmed = text.trim();
  if (!BASE64.test(trimmed) || trimmed.length % 4 === 1) {
    throw new JwError("config", "a cluster key must be base64 (jw server gen-key makes one)");
  }
  const raw = new Uint8Array(Buffer.from(trimmed, "base64"));
  if (raw.length !== CLUSTER_KEY_BYTES) {
    throw new JwError(
      "config",
      `a cluster key must be ${CLUSTER_KEY_BYTES} bytes, got ${raw.length} (jw server gen-key makes one)`,
      { detail: { bytes: raw.length } },
    );
  }
  return raw;
}

function keyId(raw: Uint8Array): string {
  return createHash("sha256").update(raw).digest().subarray(0, 8).toString("base64url");
}

function makeRingKey(cluster: string, id: string, raw: Uint8Array): RingKey {
  const aes = new Uint8Array(hkdfSync("sha256", raw, new Uint8Array(0), AES_KEY_INFO, 32));
  return {
    id,
    hmacKey: createSecretKey(raw),
    aesKey: createSecretKey(aes),
    headers: {
      plain: tokenHeader(cluster, id, false),
      encrypted: tokenHeader(cluster, id, true),
    },
  };
}
