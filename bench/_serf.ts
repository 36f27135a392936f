/**
 * Debian's `serf` agent as a benchmark peer: start an agent on free loopback ports, and talk
 * to it over its RPC protocol (msgpack over TCP) — handshake, `members`, `join`, `leave` —
 * so membership is read over one open connection per agent instead of a `serf members`
 * process per poll.
 *
 * The RPC stream is a sequence of msgpack objects. A request is a header
 * `{Command, Seq}` followed by the command's body when it has one; a response is a header
 * `{Seq, Error}` followed by a body for commands that return one (`members`, `join`).
 *
 * @module
 */
import dgram from "node:dgram";
import { decodeMultiStream, encode } from "@msgpack/msgpack";
import { JwError } from "../shared/errors.ts";
import { type BenchProcess, spawnProcess } from "./_proc.ts";

/** The only RPC protocol version serf speaks. */
const RPC_VERSION = 1;

/** A member as serf's `members` command reports it. */
export interface SerfMember {
  name: string;
  /** "ip:port" of its gossip socket. */
  address: string;
  /** "alive", "leaving", "left" or "failed" ("none" before it is known). */
  status: string;
  tags: Record<string, string>;
}

/** Which requests carry a body, and which responses are followed by one. */
const SHAPES: Record<string, { requestBody: boolean; responseBody: boolean }> = {
  handshake: { requestBody: true, responseBody: false },
  members: { requestBody: false, responseBody: true },
  join: { requestBody: true, responseBody: true },
  leave: { requestBody: false, responseBody: false },
};

/** Encodes one RPC request: the header, then the body when the command has one. */
export function encodeRequest(command: string, seq: number, body?: unknown): Uint8Array {
  const shape = SHAPES[command];
  if (!shape) throw new JwError("usage", `serf rpc: unsupported command "${command}"`);
  const header = encode({ Command: command, Seq: seq });
  if (!shape.requestBody) return header;
  const payload = encode(body ?? {});
  const out = new Uint8Array(header.length + payload.length);
  out.set(header);
  out.set(payload, header.length);
  return out;
}

/** The address a serf `Member.Addr` (4 or 16 raw bytes) denotes, as text. */
export function formatAddr(addr: unknown): string {
  if (typeof addr === "string") return addr;
  if (!(addr instanceof Uint8Array)) return "?";
  const v4 = addr.length === 4
    ? addr
    : addr.length === 16 && addr.slice(0, 10).every((b) => b === 0) && addr[10] === 0xff &&
        addr[11] === 0xff
    ? addr.slice(12)
    : undefined;
  if (v4) return [...v4].join(".");
  const groups: string[] = [];
  for (let i = 0; i + 1 < addr.length; i += 2) {
    groups.push(((addr[i] << 8) | addr[i + 1]).toString(16));
  }
  return `[${groups.join(":")}]`;
}

/** Turns a decoded `members` body into {@link SerfMember}s. */
export function parseMembers(body: unknown): SerfMember[] {
  const list = (body as { Members?: unknown })?.Members;
  if (!Array.isArray(list)) {
    throw new JwError("invalid_message", "serf rpc: a members answer without Members");
  }
  return list.map((m: Record<string, unknown>) => {
    if (typeof m?.Name !== "string" || typeof m.Status !== "string") {
      throw new JwError("invalid_message", "serf rpc: a member without Name or Status");
    }
    return {
      name: m.Name,
      address: `${formatAddr(m.Addr)}:${Number(m.Port)}`,
      status: m.Status,
      tags: (m.Tags ?? {}) as Record<string, string>,
    };
  });
}

/**
 * One RPC connection to a serf agent. Requests are sent one at a time (each waits for the
 * previous answer), so callers may share a connection without interleaving answers.
 */
export class SerfRpc implements AsyncDisposable {
  readonly #conn: Deno.TcpConn;
  readonly #objects: AsyncIterator<unknown>;
  #seq = 0;
  #queue: Promise<unknown> = Promise.resolve();
  #closed = false;

  private constructor(conn: Deno.TcpConn) {
    this.#conn = conn;
    this.#objects = decodeMultiStream(conn.readable)[Symbol.asyncIterator]();
  }

  /**
   * Connects to `host:port` and performs the handshake.
   * @throws JwError `not_connected` when the agent does not answer.
   */
  static async connect(address: string): Promise<SerfRpc> {
    const i = address.lastIndexOf(":");
    let conn: Deno.TcpConn;
    try {
      conn = await Deno.connect({
        hostname: address.slice(0, i),
        port: Number(address.slice(i + 1)),
      });
    } catch (err) {
      throw new JwError("not_connected", `serf rpc ${address}: ${(err as Error).message}`, {
        cause: err,
      });
    }
    const rpc = new SerfRpc(conn);
    try {
      await rpc.#call("handshake", { Version: RPC_VERSION });
    } catch (err) {
      rpc.close();
      throw err;
    }
    return rpc;
  }

  /** Every member this agent knows, with its status. */
  async members(): Promise<SerfMember[]> {
    return parseMembers(await this.#call("members"));
  }

  /**
   * Joins the agents at `addresses` ("ip:port").
   * @returns how many it reached.
   * @throws JwError `not_connected` when serf reports an error.
   */
  async join(addresses: string[]): Promise<number> {
    const body = await this.#call("join", { Existing: addresses, Replay: false });
    return Number((body as { Num?: number })?.Num ?? 0);
  }

  /** Asks the agent to leave gracefully; it shuts down after answering. */
  async leave(): Promise<void> {
    await this.#call("leave");
  }

  /** Closes the connection. Idempotent. */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    try {
      this.#conn.close();
    } catch {
      // already closed by the agent
    }
  }

  [Symbol.asyncDispose](): Promise<void> {
    this.close();
    return Promise.resolve();
  }

  #call(command: string, body?: unknown): Promise<unknown> {
    const run = async () => {
      if (this.#closed) throw new JwError("closed", "serf rpc: connection closed");
      const seq = this.#seq++;
      const bytes = encodeRequest(command, seq, body);
      for (let sent = 0; sent < bytes.length;) {
        sent += await this.#conn.write(bytes.subarray(sent));
      }
      const header = await this.#next(command) as { Seq?: number; Error?: string };
      if (Number(header?.Seq) !== seq) {
        throw new JwError("invalid_message", `serf rpc: answer for seq ${header?.Seq}, not ${seq}`);
      }
      const answer = SHAPES[command].responseBody ? await this.#next(command) : undefined;
      if (header.Error) {
        throw new JwError("not_connected", `serf rpc ${command}: ${header.Error}`);
      }
      return answer;
    };
    const result = this.#queue.then(run, run);
    this.#queue = result.catch(() => {});
    return result;
  }

  async #next(command: string): Promise<unknown> {
    const { value, done } = await this.#objects.next();
    if (done) throw new JwError("closed", `serf rpc ${command}: the agent closed the connection`);
    return value;
  }
}

/** Ports {@link freePort} has handed out in this process: never handed out twice. */
const handedOut = new Set<number>();

/**
 * A loopback port free for both TCP and UDP right now (serf binds both on its port), and
 * not handed out before by this process. Another process may still take it before it is
 * bound: callers retry on "address already in use".
 */
export async function freePort(): Promise<number> {
  for (let attempt = 0; attempt < 50; attempt++) {
    const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
    const port = (listener.addr as Deno.NetAddr).port;
    const socket = dgram.createSocket("udp4");
    const ok = await new Promise<boolean>((resolve) => {
      socket.once("error", () => resolve(false));
      socket.bind(port, "127.0.0.1", () => resolve(true));
    });
    await new Promise<void>((resolve) => socket.close(() => resolve()));
    listener.close();
    if (ok && !handedOut.has(port)) {
      handedOut.add(port);
      return port;
    }
  }
  throw new JwError("internal", "no loopback port free for both TCP and UDP");
}

/** Options for {@link startSerfAgent}. */
export interface SerfAgentOptions {
  /** Node name (`-node`). */
  name: string;
  /** Directory for the agent's log (must exist). */
  dir: string;
  /** Gossip addresses to join at start (`-join`); none by default. */
  join?: string[];
  /** How long to wait for the agent to start, ms. Default 15000. */
  timeoutMs?: number;
}

/** A running `serf agent`. */
export interface SerfAgent extends AsyncDisposable {
  readonly name: string;
  /** "127.0.0.1:PORT", UDP and TCP. */
  readonly gossip: string;
  readonly port: number;
  /** "127.0.0.1:PORT" of the RPC listener. */
  readonly rpcAddress: string;
  readonly process: BenchProcess;
  /** An open RPC connection, made once the agent runs. */
  readonly rpc: SerfRpc;
  /** Stops the agent: SIGKILL unless `signal` says otherwise. */
  close(signal?: Deno.Signal): Promise<void>;
}

/**
 * Starts `serf agent` with the LAN profile (memberlist's LAN defaults: probe 1 s, timeout
 * 500 ms, suspicion multiplier 4, gossip 200 ms, push-pull 30 s) on free loopback ports, and
 * opens an RPC connection to it. stdout is kept in the process's lines, stderr in
 * `DIR/NAME.log`.
 */
export async function startSerfAgent(options: SerfAgentOptions): Promise<SerfAgent> {
  // A port found free may be taken by someone else before serf binds it: try new ones.
  for (let attempt = 1;; attempt++) {
    try {
      return await startOnce(options);
    } catch (err) {
      if (attempt >= 3 || !/address already in use/.test(String(err))) throw err;
    }
  }
}

async function startOnce(options: SerfAgentOptions): Promise<SerfAgent> {
  const port = await freePort();
  const rpcPort = await freePort();
  const gossip = `127.0.0.1:${port}`;
  const rpcAddress = `127.0.0.1:${rpcPort}`;
  const proc = spawnProcess(`serf-${options.name}`, [
    "serf",
    "agent",
    `-node=${options.name}`,
    `-bind=${gossip}`,
    `-rpc-addr=${rpcAddress}`,
    "-log-level=info",
    ...(options.join ?? []).map((a) => `-join=${a}`),
  ], { stderrFile: `${options.dir}/${options.name}.log` });
  let rpc: SerfRpc;
  try {
    // serf prints this after the start-up join and just before it installs its signal
    // handlers: a SIGINT before then would kill it without a graceful leave.
    await proc.stdout.waitFor(/Log data will now stream in/, options.timeoutMs ?? 15_000);
    rpc = await SerfRpc.connect(rpcAddress);
  } catch (err) {
    await proc.stop("SIGKILL");
    const tail = proc.stdout.lines.slice(-10).join("\n");
    throw new JwError("spawn_failed", `serf agent ${options.name} did not start: ${tail}`, {
      cause: err,
    });
  }
  const close = async (signal: Deno.Signal = "SIGKILL") => {
    rpc.close();
    await proc.stop(signal);
  };
  return {
    name: options.name,
    gossip,
    port,
    rpcAddress,
    process: proc,
    rpc,
    close,
    [Symbol.asyncDispose]: () => close(),
  };
}

/**
 * The installed serf: the Debian package version and what the binary reports, e.g.
 * "0.9.4~ds1-1+b13 (binary: v0.8.2-dev)"; "not installed" when missing.
 */
export async function serfVersion(): Promise<string> {
  let binary: string;
  try {
    const out = await new Deno.Command("serf", { args: ["version"] }).output();
    binary = new TextDecoder().decode(out.stdout).split("\n")[0].replace(/^Serf\s*/, "").trim();
  } catch {
    return "not installed";
  }
  try {
    const out = await new Deno.Command("dpkg-query", {
      args: ["-W", "-f=${Version}", "serf"],
      stderr: "null",
    }).output();
    const pkg = new TextDecoder().decode(out.stdout).trim();
    if (out.success && pkg) return `${pkg} (binary: ${binary})`;
  } catch {
    // not Debian
  }
  return binary;
}
