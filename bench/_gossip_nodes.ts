/**
 * The nodes of the gossip benchmark behind one interface: a `jw server` with a cluster key
 * (membership read with `GET /v1/members`) or a `serf agent` (membership read over its RPC
 * connection). Both report a member's state in the same words.
 *
 * @module
 */
import bcrypt from "bcryptjs";
import { JwError } from "../shared/errors.ts";
import { PERMISSIONS } from "../scripts/permissions.ts";
import { type BenchProcess, spawnProcess } from "./_proc.ts";
import { startSerfAgent } from "./_serf.ts";
import { OPERATOR } from "./_servers.ts";

const MAIN = new URL("../main.ts", import.meta.url).pathname;

/** Which gossip implementation. */
export type GossipSystem = "jw" | "serf";

/**
 * A member's state in both systems' terms: jw `dead` and serf `failed` are `failed`; serf's
 * `leaving` (a leave announced, not yet complete) has no jw counterpart.
 */
export type MemberState = "alive" | "suspect" | "failed" | "leaving" | "left";

/** jw's `/v1/members` state in the common words. */
export function jwState(state: string): MemberState {
  switch (state) {
    case "alive":
    case "suspect":
    case "left":
      return state;
    case "dead":
      return "failed";
    default:
      throw new JwError("invalid_message", `jw members: unknown state "${state}"`);
  }
}

/** serf's member status in the common words. */
export function serfState(status: string): MemberState {
  switch (status) {
    case "alive":
    case "leaving":
    case "left":
    case "failed":
      return status;
    default:
      throw new JwError("invalid_message", `serf members: unknown status "${status}"`);
  }
}

/** One running node of a cluster under test. */
export interface GossipNode {
  readonly system: GossipSystem;
  readonly name: string;
  /** "127.0.0.1:PORT", UDP and TCP. */
  readonly gossip: string;
  readonly port: number;
  /** Every member this node lists, by name. */
  members(): Promise<Map<string, MemberState>>;
  /** Tells the node to join the nodes at `addresses` and waits for its answer. */
  join(addresses: string[]): Promise<void>;
  /**
   * Sends the signal that makes the node leave gracefully (jw: SIGTERM, serf: SIGINT);
   * resolves when the process has exited.
   */
  leave(): Promise<void>;
  /** SIGKILL; resolves when the process has exited. */
  kill(): Promise<void>;
}

/** Options shared by the node starters. */
export interface NodeOptions {
  name: string;
  /** Directory for the node's files (must exist). */
  dir: string;
  /** Gossip addresses to join at start; none by default. */
  seeds?: string[];
}

/** Options for {@link startJwNode}. */
export interface JwNodeOptions extends NodeOptions {
  /** The cluster key (base64 of 32 bytes), the same for every node. */
  key: string;
  /** The bench operator's bcrypt hash (made once: bcrypt is slow on purpose). */
  operatorHash: string;
  /** How long to wait for the server to start, ms. Default 60000. */
  timeoutMs?: number;
}

/** A new cluster key: 32 random bytes, base64 (what `jw server gen-key` prints). */
export function newClusterKey(): string {
  return btoa(String.fromCharCode(...crypto.getRandomValues(new Uint8Array(32))));
}

/** The bench operator's password hash at bcrypt's lowest cost. */
export function operatorHash(): string {
  return bcrypt.hashSync(OPERATOR.password, 4);
}

const AUTH = `Basic ${btoa(`${OPERATOR.user}:${OPERATOR.password}`)}`;

async function exited(proc: BenchProcess, signal: Deno.Signal): Promise<void> {
  await proc.stop(signal);
}

/**
 * Starts `jw server` with the cluster key, gossip on a free loopback port, HTTP on another,
 * a fresh data directory and memberlist's LAN defaults (jw's own defaults).
 */
export async function startJwNode(options: JwNodeOptions): Promise<GossipNode> {
  const config = {
    id: options.name,
    http: "127.0.0.1:0",
    data: `${options.dir}/data`,
    auth: { users: [{ name: OPERATOR.user, bcrypt: options.operatorHash }] },
    cluster: { key: options.key, gossip: "127.0.0.1:0", seeds: options.seeds ?? [] },
  };
  const configFile = `${options.dir}/server.json`;
  await Deno.writeTextFile(configFile, JSON.stringify(config));
  const proc = spawnProcess(`jw-${options.name}`, [
    Deno.execPath(),
    "run",
    ...PERMISSIONS,
    MAIN,
    "server",
    "--config",
    configFile,
  ], { stderrFile: `${options.dir}/server.log` });
  let url: string;
  let gossip: string;
  try {
    const m = await proc.stdout.waitFor(
      /listening on (http:\/\/[^\s,]+), gossip on (\S+)/,
      options.timeoutMs ?? 60_000,
    );
    [url, gossip] = [m[1], m[2]];
  } catch (err) {
    const tail = await proc.stderrTail();
    await proc.stop("SIGKILL");
    throw new JwError("spawn_failed", `jw server ${options.name} did not start: ${err}\n${tail}`, {
      cause: err,
    });
  }
  const api = async (path: string, init: RequestInit = {}) => {
    const res = await fetch(`${url}${path}`, {
      ...init,
      headers: { authorization: AUTH, "content-type": "application/json" },
    });
    const body = await res.text();
    if (!res.ok) {
      throw new JwError("not_connected", `jw ${options.name} ${path}: ${res.status} ${body}`);
    }
    return JSON.parse(body);
  };
  return {
    system: "jw",
    name: options.name,
    gossip,
    port: Number(gossip.slice(gossip.lastIndexOf(":") + 1)),
    async members() {
      const answer = await api("/v1/members") as { members: { id: string; state: string }[] };
      return new Map(answer.members.map((m) => [m.id, jwState(m.state)]));
    },
    async join(addresses) {
      await api("/v1/cluster/join", { method: "POST", body: JSON.stringify({ addresses }) });
    },
    leave: () => exited(proc, "SIGTERM"),
    kill: () => exited(proc, "SIGKILL"),
  };
}

/** Starts `serf agent` (LAN profile) on free loopback ports. */
export async function startSerfNode(options: NodeOptions): Promise<GossipNode> {
  const agent = await startSerfAgent({ name: options.name, dir: options.dir, join: options.seeds });
  const { rpc } = agent;
  return {
    system: "serf",
    name: options.name,
    gossip: agent.gossip,
    port: agent.port,
    async members() {
      return new Map((await rpc.members()).map((m) => [m.name, serfState(m.status)]));
    },
    async join(addresses) {
      await rpc.join(addresses);
    },
    leave: () => agent.close("SIGINT"),
    kill: () => agent.close("SIGKILL"),
  };
}
