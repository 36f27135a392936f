/**
 * Weighted rendezvous (highest random weight) hashing: which server owns an agent. Pure and
 * deterministic, so every server and every agent computes the same answer from the same server
 * list.
 *
 * For agent `a` and server `s` with weight `w`: `u` is a stable hash of `(a, s)` mapped into
 * (0, 1), and the score is `-w / ln(u)`. The owner is the server with the highest score (ties,
 * vanishingly rare, go to the smaller server id); {@link rank} orders all servers by score, so
 * when the owner goes away its agents move to their next-ranked server and no other agent moves.
 * A server gets a share of agents proportional to its weight.
 *
 * Weights come from Lifeguard health scores: `w = 1 / max(1, 1 + health)`, then turned into
 * exact integers — each weight times the least common multiple of the `1 + health` values,
 * divided by the weights' greatest common divisor — so the ratios are exact, equal health gives
 * weight 1 everywhere, and no floating-point rounding can differ between machines.
 *
 * **The hash.** Each id is hashed once into two 32-bit lanes: its UTF-16 code units (what
 * `charCodeAt` returns, not UTF-8 bytes) go through two multiply–xor lanes with different odd
 * multipliers, seeded differently for agent ids and server ids (server lanes are also finalized
 * with murmur3's 32-bit `fmix`, once per server list). A pair's lanes are the xor of the agent's
 * and the server's; two cross-lane `fmix` rounds (a bijection of the 64 bits in which every
 * output bit depends on every input bit) then give a 53-bit integer `k`, and `u = k / 2^53`
 * (`k = 0` counts as `0.5`), exact and strictly inside (0, 1). Only `Math.imul`, shifts and xor
 * are used, so every JavaScript engine computes the same bits.
 *
 * **Comparing scores.** Two servers of the same weight are compared by `k`, which is exactly the
 * order of their real scores, so a cluster of equal weights never computes a logarithm. Servers
 * of different weights are compared by their computed scores `-w / Math.log(u)`. The owner
 * lookup takes the best of each group of equal weight by `k`, then compares the groups' bests
 * with series bounds on `-ln(u)`, calling `Math.log` only when the bounds cannot tell two apart;
 * it returns the first server {@link rank} returns. `Math.log` is the one operation whose last
 * bit the language leaves to the engine (V8 uses its own port of fdlibm, not the system's
 * libm); only servers of different health ever reach it.
 *
 * **Hot paths** build a {@link Placement} once per server list ({@link createPlacement}): the
 * server ids are hashed and the weights computed once, and `owner()` then costs one hash of the
 * agent id plus a few nanoseconds per server, without allocating. The module keeps scratch
 * space for that, so its functions are not reentrant; JavaScript never runs two of them at once
 * (each Worker has its own copy of the module).
 *
 * @module
 */

/** A server as placement sees it. */
export interface LrwServer {
  /** Server id. */
  id: string;
  /** Lifeguard health score: 0 is healthy; higher is less healthy. */
  health: number;
}

/** A server with its integer placement weight. */
export interface WeightedServer extends LrwServer {
  weight: number;
}

/**
 * Placement over one fixed server list, with the server ids hashed and the weights computed
 * once. Immutable; safe to share.
 */
export interface Placement<S extends LrwServer> {
  /** The servers, in the order given (the caller's objects). */
  readonly servers: readonly S[];
  /** The server that owns `agentId`, or undefined when there are no servers. Allocates nothing. */
  owner(agentId: string): S | undefined;
  /** The servers ordered by their score for `agentId`, the owner first. A new array each call. */
  rank(agentId: string): S[];
}

const TWO_32 = 2 ** 32;
const TWO_53 = 2 ** 53;
const TWO_NEG_53 = 2 ** -53;
/** Relative slack on the score bounds: far above every rounding error involved. */
const SLACK = 1 - 2 ** -40;
const THIRD = 1 / 3;
const SIGN_BIT = 0x80000000 | 0;

/** Seeds: the same string hashes differently as an agent id and as a server id. */
const AGENT_SEED = 0x6a09e667 | 0;
const SERVER_SEED = 0xbb67ae85 | 0;
/** The two lanes' multipliers (odd). */
const LANE1 = 0x9e3779b1 | 0;
const LANE2 = 0x85ebca77 | 0;
/** murmur3's fmix32 multipliers. */
const FMIX1 = 0x85ebca6b | 0;
const FMIX2 = 0xc2b2ae35 | 0;

/** murmur3's 32-bit finalizer: a bijection in which every input bit flips about half the output. */
function fmix32(h: number): number {
  h = Math.imul(h ^ (h >>> 16), FMIX1);
  h = Math.imul(h ^ (h >>> 13), FMIX2);
  return h ^ (h >>> 16);
}

/**
 * The lanes of the last {@link hashId} or {@link serverLanes} call. A typed array, so writing
 * them boxes nothing and the hot path allocates nothing.
 */
const lanes = new Int32Array(2);

/**
 * Hashes `id`'s UTF-16 code units into two multiply–xor lanes, left in `lanes`. Not finalized:
 * {@link pairKey} mixes every pair strongly, and server lanes are finalized once by
 * {@link serverLanes}.
 */
function hashId(id: string, seed: number): void {
  const length = id.length;
  let h1 = seed ^ length;
  let h2 = ~seed ^ Math.imul(length, LANE1);
  for (let i = 0; i < length; i++) {
    const c = id.charCodeAt(i);
    h1 = Math.imul(h1 ^ c, LANE1);
    h2 = Math.imul(h2 ^ c, LANE2);
  }
  lanes[0] = h1;
  lanes[1] = h2;
}

/** A server id's two lanes, finalized with fmix32, left in `lanes`. */
function serverLanes(id: string): void {
  hashId(id, SERVER_SEED);
  const h1 = fmix32(lanes[0]);
  lanes[0] = h1;
  lanes[1] = fmix32(lanes[1] ^ h1);
}

/**
 * The 53-bit key `k` of a pair whose lanes are `x`, `y` (agent lanes xor server lanes): two
 * cross-lane fmix32 rounds (`x' = fmix(x)`, `y' = fmix(y ^ x')`) and `x' ^ y'`, a bijection of
 * the 64 bits in which every output bit depends on every input bit. The high 21 bits of `k` are
 * the top of `y'`, the low 32 are `x' ^ y'`. {@link bestOfGroup} inlines the same steps.
 */
function pairKey(x: number, y: number): number {
  x = fmix32(x);
  y = fmix32(y ^ x);
  return (y >>> 11) * TWO_32 + ((x ^ y) >>> 0);
}

/** `u` in (0, 1) for a key: exact, and distinct for distinct keys. */
function unit(k: number): number {
  return (k || 0.5) * TWO_NEG_53;
}

/** The computed score of a key on a server of weight `w`: the one formula every path uses. */
function keyScore(k: number, w: number): number {
  return -w / Math.log(unit(k));
}

/**
 * A lower bound of `-ln(u)` for the key, with `t = 1 - u`: `t + t²/2 + t³/3` (the series'
 * remaining terms are positive).
 */
function lnLow(k: number): number {
  const t = (TWO_53 - k) * TWO_NEG_53;
  return t * (1 + t * (0.5 + t * THIRD));
}

/** An upper bound of `-ln(u)`: {@link lnLow} plus `t⁴ / (4u)`, which bounds the series' tail. */
function lnHigh(k: number): number {
  const t = (TWO_53 - k) * TWO_NEG_53;
  const t2 = t * t;
  return t * (1 + t * (0.5 + t * THIRD)) + (t2 * t2) / (4 * unit(k));
}

/** `u` in (0, 1) for an agent on a server (see the module doc for the hash). */
export function unitHash(agentId: string, serverId: string): number {
  hashId(agentId, AGENT_SEED);
  const a1 = lanes[0];
  const a2 = lanes[1];
  serverLanes(serverId);
  return unit(pairKey(a1 ^ lanes[0], a2 ^ lanes[1]));
}

function gcd(a: number, b: number): number {
  while (b) [a, b] = [b, a % b];
  return a;
}

/**
 * Integer weights for the servers' health scores (see the module doc). Health below 0 counts
 * as 0, fractions are floored.
 */
export function weights(servers: readonly LrwServer[]): WeightedServer[] {
  const w = integerWeights(servers);
  return servers.map((s, i) => ({ ...s, weight: w[i] }));
}

/** The weights of {@link weights}, in the servers' order. */
function integerWeights(servers: readonly LrwServer[]): number[] {
  const denominators = servers.map((s) => 1 + Math.max(0, Math.floor(s.health)));
  const lcm = denominators.reduce((acc, d) => (acc / gcd(acc, d)) * d, 1);
  const raw = denominators.map((d) => lcm / d);
  const divisor = raw.reduce((acc, w) => gcd(acc, w), 0) || 1;
  return raw.map((w) => w / divisor);
}

/** The placement score of an agent on a server of weight `weight`: `-weight / ln(u)`. */
export function score(agentId: string, serverId: string, weight: number): number {
  return -weight / Math.log(unitHash(agentId, serverId));
}

/** The key of the last {@link bestOfGroup} winner (a typed array: storing it boxes nothing). */
const groupKey = new Float64Array(1);

/**
 * Index of the best server among `start` to `end` (exclusive), all of the same weight: the
 * largest key wins, then the smaller id. Leaves the winner's key in `groupKey`.
 */
function bestOfGroup(
  a1: number,
  a2: number,
  h1: Int32Array,
  h2: Int32Array,
  ids: readonly string[],
  start: number,
  end: number,
): number {
  let best = start;
  let bestHigh = -1;
  let bestLow = 0;
  for (let i = start; i < end; i++) {
    // pairKey() as two int32 halves (V8 then never changes their representation mid-loop):
    // the high 21 bits, and the low 32 with the sign bit flipped so signed order is key order.
    const x = fmix32(a1 ^ h1[i]);
    const y = fmix32(a2 ^ h2[i] ^ x);
    const high = y >>> 11;
    const low = x ^ y ^ SIGN_BIT;
    if (
      high > bestHigh ||
      (high === bestHigh && (low > bestLow || (low === bestLow && ids[i] < ids[best])))
    ) {
      best = i;
      bestHigh = high;
      bestLow = low;
    }
  }
  groupKey[0] = bestHigh * TWO_32 + ((bestLow ^ SIGN_BIT) >>> 0);
  return best;
}

/** The {@link Placement} behind {@link createPlacement}. */
class LrwPlacement<S extends LrwServer> implements Placement<S> {
  readonly servers: readonly S[];
  /** The servers by weight, heaviest first (stable), and their ids, lanes and weights. */
  readonly #byWeight: readonly S[];
  readonly #ids: readonly string[];
  readonly #h1: Int32Array;
  readonly #h2: Int32Array;
  readonly #weights: Float64Array;
  /** Where each run of equal weights starts in `#byWeight`, and `n` at the end. */
  readonly #groups: Int32Array;

  constructor(servers: readonly S[]) {
    this.servers = Object.freeze([...servers]);
    const n = this.servers.length;
    const w = integerWeights(this.servers);
    const order = w.map((_, i) => i).sort((a, b) => w[b] - w[a] || a - b);
    this.#byWeight = order.map((i) => this.servers[i]);
    this.#ids = this.#byWeight.map((s) => s.id);
    this.#weights = Float64Array.from(order, (i) => w[i]);
    this.#h1 = new Int32Array(n);
    this.#h2 = new Int32Array(n);
    for (let i = 0; i < n; i++) {
      serverLanes(this.#ids[i]);
      this.#h1[i] = lanes[0];
      this.#h2[i] = lanes[1];
    }
    const starts = [0];
    for (let i = 1; i < n; i++) if (this.#weights[i] !== this.#weights[i - 1]) starts.push(i);
    this.#groups = Int32Array.from(n ? [...starts, n] : []);
  }

  owner(agentId: string): S | undefined {
    const groups = this.#groups;
    if (groups.length === 0) return undefined;
    hashId(agentId, AGENT_SEED);
    const a1 = lanes[0];
    const a2 = lanes[1];
    const h1 = this.#h1;
    const h2 = this.#h2;
    const ids = this.#ids;
    if (groups.length === 2) {
      return this.#byWeight[bestOfGroup(a1, a2, h1, h2, ids, 0, groups[1])];
    }
    return this.#byWeight[this.#bestAcrossGroups(a1, a2)];
  }

  /**
   * The best of every weight group's best. Scores are `w / E` with `E = -ln(u)`: a challenger is
   * settled by the series bounds of `E` when they do not overlap (with {@link SLACK} to spare),
   * else by the computed scores. A group of one server skips the group scan.
   */
  #bestAcrossGroups(a1: number, a2: number): number {
    const groups = this.#groups;
    const h1 = this.#h1;
    const h2 = this.#h2;
    const ids = this.#ids;
    let best = 0;
    let bestKey: number;
    if (groups[1] === 1) {
      bestKey = pairKey(a1 ^ h1[0], a2 ^ h2[0]);
    } else {
      best = bestOfGroup(a1, a2, h1, h2, ids, 0, groups[1]);
      bestKey = groupKey[0];
    }
    let bestW = this.#weights[best];
    let bestLow = lnLow(bestKey);
    let bestHigh = lnHigh(bestKey);
    let bestScore = NaN;
    for (let g = 1; g < groups.length - 1; g++) {
      const start = groups[g];
      let i = start;
      let k: number;
      if (groups[g + 1] - start === 1) {
        k = pairKey(a1 ^ h1[start], a2 ^ h2[start]);
      } else {
        i = bestOfGroup(a1, a2, h1, h2, ids, start, groups[g + 1]);
        k = groupKey[0];
      }
      const w = this.#weights[i];
      const low = lnLow(k);
      // i loses for sure when w·E_best < bestW·E_i.
      if (w * bestHigh < bestW * low * SLACK) continue;
      const high = lnHigh(k);
      let wins = bestW * high < w * bestLow * SLACK;
      let score = NaN;
      if (!wins) {
        if (bestScore !== bestScore) bestScore = keyScore(bestKey, bestW);
        score = keyScore(k, w);
        wins = score > bestScore || (score === bestScore && ids[i] < ids[best]);
      }
      if (wins) {
        best = i;
        bestKey = k;
        bestW = w;
        bestLow = low;
        bestHigh = high;
        bestScore = score;
      }
    }
    return best;
  }

  rank(agentId: string): S[] {
    const ids = this.#ids;
    const w = this.#weights;
    const h1 = this.#h1;
    const h2 = this.#h2;
    const n = h1.length;
    hashId(agentId, AGENT_SEED);
    const a1 = lanes[0];
    const a2 = lanes[1];
    const keys = Array.from({ length: n }, (_, i) => pairKey(a1 ^ h1[i], a2 ^ h2[i]));
    const scores = new Float64Array(n).fill(NaN);
    const scoreOf = (i: number) =>
      scores[i] === scores[i] ? scores[i] : (scores[i] = keyScore(keys[i], w[i]));
    const order = Array.from({ length: n }, (_, i) => i).sort((i, j) => {
      if (w[i] === w[j]) {
        if (keys[i] !== keys[j]) return keys[j] - keys[i];
      } else {
        const si = scoreOf(i);
        const sj = scoreOf(j);
        if (si !== sj) return sj - si;
      }
      return ids[i] < ids[j] ? -1 : ids[i] > ids[j] ? 1 : 0;
    });
    return order.map((i) => this.#byWeight[i]);
  }
}

/**
 * Placement over `servers` with the server ids hashed and the weights computed once: build one
 * per server list and reuse it for every agent. The list is copied, so changing the caller's
 * array later does not change the placement.
 */
export function createPlacement<S extends LrwServer>(servers: readonly S[]): Placement<S> {
  return new LrwPlacement(servers);
}

/**
 * Servers ordered by their score for `agentId`, the owner first (ties: smaller id first).
 * Hashes every server id on each call; see {@link createPlacement} for repeated lookups.
 */
export function rank<S extends LrwServer>(agentId: string, servers: readonly S[]): S[] {
  return createPlacement(servers).rank(agentId);
}

/**
 * The server that owns `agentId`, or undefined when there is none: the first server
 * {@link rank} returns. Hashes every server id on each call; see {@link createPlacement} for
 * repeated lookups.
 */
export function owner<S extends LrwServer>(agentId: string, servers: readonly S[]): S | undefined {
  if (servers.length === 0) return undefined;
  const w = integerWeights(servers);
  hashId(agentId, AGENT_SEED);
  const a1 = lanes[0];
  const a2 = lanes[1];
  let best = 0;
  let bestKey = -1;
  let bestScore = NaN;
  for (let i = 0; i < servers.length; i++) {
    serverLanes(servers[i].id);
    const k = pairKey(a1 ^ lanes[0], a2 ^ lanes[1]);
    let wins: boolean;
    let score = NaN;
    if (i === 0) {
      wins = true;
    } else if (w[i] === w[best]) {
      wins = k > bestKey || (k === bestKey && servers[i].id < servers[best].id);
    } else {
      if (bestScore !== bestScore) bestScore = keyScore(bestKey, w[best]);
      score = keyScore(k, w[i]);
      wins = score > bestScore || (score === bestScore && servers[i].id < servers[best].id);
    }
    if (wins) {
      best = i;
      bestKey = k;
      bestScore = score;
    }
  }
  return servers[best];
}
