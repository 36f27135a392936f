/**
 * The agent handshake, as pure logic: issue a challenge for a `hello`, then verify the
 * agent's signed response. No sockets here; time comes from a {@link Clock}, nonces from a
 * {@link Random}, and pinned keys from a {@link KeyStore}.
 *
 * @module
 */
import type { Clock } from "../../shared/clock.ts";
import { base64url, type Random } from "../../shared/random.ts";
import { JwError } from "../../shared/errors.ts";
import { sameKey, thumbprint, verifyChallengeResponse } from "../../shared/crypto/mod.ts";
import type {
  ChallengeClaims,
  ChallengeHeader,
  Hello,
  PublicJwk,
} from "../../shared/protocol/mod.ts";

/**
 * Where pinned agent keys live. The first key seen for an agent id is pinned for good;
 * implementations must make {@link KeyStore.pin} a no-op when a key is already pinned.
 */
export interface KeyStore {
  /** The key pinned for `agentId`, or `undefined` when the id has never authenticated. */
  pinnedKey(agentId: string): PublicJwk | undefined;
  /** Pins `key` for `agentId` unless a key is already pinned (then does nothing). */
  pin(agentId: string, key: PublicJwk, kid: string): void;
}

/** An in-memory {@link KeyStore} (tests, and anything that need not survive a restart). */
export function createMemoryKeyStore(): KeyStore {
  const keys = new Map<string, PublicJwk>();
  return {
    pinnedKey: (agentId) => keys.get(agentId),
    pin: (agentId, key) => {
      if (!keys.has(agentId)) keys.set(agentId, key);
    },
  };
}

/** A challenge handed to one connection; pass it back to {@link Handshake.verify}. */
export interface IssuedChallenge {
  /** The agent id from `hello`. */
  readonly agentId: string;
  /** The public key from `hello`. */
  readonly publicKey: PublicJwk;
  /** RFC 7638 thumbprint of {@link publicKey}. */
  readonly kid: string;
  /** The protected header the agent must sign. */
  readonly header: ChallengeHeader;
  /** The claims the agent must sign. */
  readonly claims: ChallengeClaims;
  /** When the challenge was issued, epoch ms. */
  readonly issuedAt: number;
  /** Last instant (epoch ms) a response is accepted. */
  readonly expiresAt: number;
}

/** An agent that proved it holds the key it presented. */
export interface VerifiedAgent {
  agentId: string;
  publicKey: PublicJwk;
  kid: string;
  /** True when this handshake pinned the key (first time the id was seen). */
  pinned: boolean;
}

/** Options for {@link createHandshake}. */
export interface HandshakeOptions {
  /** This server's id, the challenge's `aud`. */
  serverId: string;
  /** How long a challenge may be answered, ms. */
  challengeTtlMs: number;
  /** Pinned keys. */
  keys: KeyStore;
  clock: Clock;
  /** Source of nonces; must be cryptographically strong outside tests. */
  random: Random;
}

/**
 * Issues and verifies challenges. One instance serves every connection of a server, so a
 * nonce is outstanding in exactly one place and is consumed on first use.
 *
 * Concurrency: safe to interleave calls from many connections; each nonce is consumed
 * synchronously before any `await`, so two responses racing for one nonce cannot both pass.
 */
export interface Handshake {
  /**
   * Checks `hello` against the pinned key and returns a fresh challenge.
   * @throws JwError `key_mismatch` when a different key is pinned for the agent id.
   */
  issue(hello: Hello): Promise<IssuedChallenge>;
  /**
   * Verifies the agent's compact JWS over `challenge`, consumes the nonce, and pins the key
   * when the id is new.
   * @throws JwError `replayed` (nonce already used or unknown), `expired` (answered after
   * `expiresAt`), `bad_signature` (wrong key, altered header or claims), `key_mismatch`
   * (another key was pinned for the id while this challenge was out).
   */
  verify(challenge: IssuedChallenge, jws: string): Promise<VerifiedAgent>;
  /** Forgets an unanswered challenge (its connection went away). Idempotent. */
  release(challenge: IssuedChallenge): void;
  /** Number of challenges issued and neither answered, released nor expired. */
  readonly outstanding: number;
}

/** Bytes of entropy in a nonce. */
const NONCE_BYTES = 32;

class HandshakeImpl implements Handshake {
  readonly #options: HandshakeOptions;
  /** nonce → challenge, in issue order (so expired ones are at the front). */
  readonly #outstanding = new Map<string, IssuedChallenge>();
  /** Challenges already answered (rightly or wrongly): answering again is a replay. */
  readonly #consumed = new WeakSet<IssuedChallenge>();

  constructor(options: HandshakeOptions) {
    this.#options = options;
  }

  get outstanding(): number {
    this.#prune();
    return this.#outstanding.size;
  }

  async issue(hello: Hello): Promise<IssuedChallenge> {
    this.#checkPinned(hello.agentId, hello.publicKey);
    const kid = await thumbprint(hello.publicKey);
    const { clock, random, serverId, challengeTtlMs } = this.#options;
    this.#prune();
    const issuedAt = clock.now();
    const iat = Math.floor(issuedAt / 1000);
    const nonce = base64url(random.bytes(NONCE_BYTES));
    const challenge: IssuedChallenge = {
      agentId: hello.agentId,
      publicKey: hello.publicKey,
      kid,
      header: { alg: "EdDSA", typ: "JWT", kid },
      claims: {
        nonce,
        iat,
        exp: iat + Math.ceil(challengeTtlMs / 1000),
        aud: serverId,
        sub: hello.agentId,
        kid,
      },
      issuedAt,
      expiresAt: issuedAt + challengeTtlMs,
    };
    this.#outstanding.set(nonce, challenge);
    return challenge;
  }

  async verify(challenge: IssuedChallenge, jws: string): Promise<VerifiedAgent> {
    const nonce = challenge.claims.nonce;
    const expired = this.#options.clock.now() > challenge.expiresAt;
    if (this.#outstanding.get(nonce) !== challenge) {
      // Pruned after expiry but never answered: report the expiry, not a replay.
      if (expired && !this.#consumed.has(challenge)) {
        this.#consumed.add(challenge);
        throw new JwError("expired", "challenge response arrived after the challenge expired");
      }
      throw new JwError("replayed", "challenge nonce is not outstanding (already used or unknown)");
    }
    this.#outstanding.delete(nonce);
    this.#consumed.add(challenge);
    if (expired) {
      throw new JwError("expired", "challenge response arrived after the challenge expired");
    }
    await verifyChallengeResponse(jws, challenge.publicKey, {
      header: challenge.header,
      claims: challenge.claims,
    });
    const wasPinned = this.#checkPinned(challenge.agentId, challenge.publicKey);
    if (!wasPinned) this.#options.keys.pin(challenge.agentId, challenge.publicKey, challenge.kid);
    return {
      agentId: challenge.agentId,
      publicKey: challenge.publicKey,
      kid: challenge.kid,
      pinned: !wasPinned,
    };
  }

  release(challenge: IssuedChallenge): void {
    if (this.#outstanding.get(challenge.claims.nonce) === challenge) {
      this.#outstanding.delete(challenge.claims.nonce);
    }
    this.#consumed.add(challenge);
  }

  /** True when a key is pinned for the id (and it is `key`); throws when it is another key. */
  #checkPinned(agentId: string, key: PublicJwk): boolean {
    const pinned = this.#options.keys.pinnedKey(agentId);
    if (pinned && !sameKey(pinned, key)) {
      throw new JwError(
        "key_mismatch",
        `agent "${agentId}" presented a key other than its pinned key`,
      );
    }
    return pinned !== undefined;
  }

  /** Drops expired challenges from the front of the issue-ordered map. */
  #prune(): void {
    const now = this.#options.clock.now();
    for (const [nonce, c] of this.#outstanding) {
      if (c.expiresAt >= now) break;
      this.#outstanding.delete(nonce);
    }
  }
}

/** Creates the server's {@link Handshake}. */
export function createHandshake(options: HandshakeOptions): Handshake {
  return new HandshakeImpl(options);
}
