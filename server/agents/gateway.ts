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
  #closed = false;

  constructor(deps: ConnectionDeps) {
    this.#deps = deps;
  }

  get size(): number {
    return this.#open.size;
  }

  accept(socket: AgentSocket, address: string): AgentConnection {
    const connection = createConnection(socket, address, this.#deps, (c) => this.#open.delete(c));
    if (this.#closed) {
      connection.close(CLOSE_GOING_AWAY, "server closing");
      return connection;
    }
    this.#open.add(connection);
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
export function createAgentGateway(deps: ConnectionDeps): AgentGateway {
  return new Gateway(deps);
}
