/**
 * Accepts agent sockets and keeps every open connection — mid-handshake or ready — so the
 * server can close them all on shutdown.
 *
 * @module
 */
import {
  type AgentConnection,
  type AgentSocket,
  CLOSE_GOING_AWAY,
  type ConnectionDeps,
  createConnection,
} from "./connection.ts";

/**
 * Most connections allowed mid-handshake at once; more are closed at once with 1013 (try
 * again later), so unauthenticated sockets cannot pile up. Agents retry with backoff.
 */
export const MAX_PENDING_HANDSHAKES = 4096;
/** Close code for "try again later". */
export const CLOSE_TRY_AGAIN_LATER = 1013;

/**
 * The front door for agent sockets. Synchronous; the socket adapter calls
 * {@link AgentGateway.accept} when a socket opens and drives the returned connection.
 */
export interface AgentGateway {
  /**
   * Starts the state machine for a newly opened socket. After {@link AgentGateway.close},
   * the socket is closed at once with 1001 and the returned connection is already closed.
   */
  accept(socket: AgentSocket, address: string): AgentConnection;
  /** Open connections, in any state. */
  readonly size: number;
  /** Closes every connection with 1001 "server closing" and refuses new ones. Idempotent. */
  close(): void;
}

class Gateway implements AgentGateway {
  readonly #deps: ConnectionDeps;
  readonly #open = new Set<AgentConnection>();
  readonly #pending = new Set<AgentConnection>();
  readonly #maxPending: number;
  #closed = false;

  constructor(deps: ConnectionDeps, maxPending: number) {
    this.#deps = deps;
    this.#maxPending = maxPending;
  }

  get size(): number {
    return this.#open.size;
  }

  /** Connections mid-handshake; pruned of finished ones only when it looks full. */
  #pendingCount(): number {
    if (this.#pending.size >= this.#maxPending) {
      for (const c of this.#pending) {
        if (c.state !== "hello" && c.state !== "response") this.#pending.delete(c);
      }
    }
    return this.#pending.size;
  }

  accept(socket: AgentSocket, address: string): AgentConnection {
    const connection = createConnection(socket, address, this.#deps, (c) => {
      this.#open.delete(c);
      this.#pending.delete(c);
    });
    if (this.#closed) {
      connection.close(CLOSE_GOING_AWAY, "server closing");
      return connection;
    }
    if (this.#pendingCount() >= this.#maxPending) {
      this.#deps.logger?.warn("too many handshakes in flight; refusing a connection", { address });
      connection.close(CLOSE_TRY_AGAIN_LATER, "too many handshakes in flight");
      return connection;
    }
    this.#open.add(connection);
    this.#pending.add(connection);
    return connection;
  }

  close(): void {
    this.#closed = true;
    for (const connection of [...this.#open]) {
      connection.close(CLOSE_GOING_AWAY, "server closing");
    }
  }
}

/** Creates an {@link AgentGateway} whose connections share `deps`. */
export function createAgentGateway(
  deps: ConnectionDeps,
  maxPending: number = MAX_PENDING_HANDSHAKES,
): AgentGateway {
  return new Gateway(deps, maxPending);
}
