/**
 * The Transport seam: how the agent opens its WebSocket. The real one is
 * deno_transport.ts; tests use _fake_transport.ts.
 *
 * @module
 */

/** How a socket closed. */
export interface CloseInfo {
  code: number;
  reason: string;
}

/**
 * An open message socket. Iterating yields incoming text frames in order and ends when the
 * socket closes (whoever closed it). One consumer.
 */
export interface Socket extends AsyncIterable<string> {
  /** Sends a text frame; false when the socket is no longer open (nothing was sent). */
  send(text: string): boolean;
  /** Starts closing (code 1000 by default). Idempotent; iteration ends once closed. */
  close(code?: number, reason?: string): void;
  /** Resolves once closed. Never rejects. */
  readonly closed: Promise<CloseInfo>;
}

/** Opens sockets. */
export interface Transport {
  /**
   * Opens a socket to `url` (ws:// or wss://). Rejects with a JwError (`closed`) when the
   * connection fails or `signal` aborts first.
   */
  connect(url: string, signal?: AbortSignal): Promise<Socket>;
}
