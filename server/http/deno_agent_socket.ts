/**
 * The Deno adapter for agent WebSockets: upgrades the request with
 * `Deno.upgradeWebSocket` and drives an {@link AgentConnection} from the socket's events.
 * The only file of the agent path that touches `Deno.*`.
 *
 * @module
 */
import type { AgentGateway } from "../agents/gateway.ts";
import type { AgentConnection, AgentSocket } from "../agents/connection.ts";
import type { AcceptAgent } from "./app.ts";

/** Upgraded agent sockets, for the app and for shutdown. */
export interface DenoAgentSockets {
  /** The app's `acceptAgent`: upgrades and wires one socket. */
  readonly accept: AcceptAgent;
  /** Sockets upgraded and not yet closed. */
  readonly open: number;
  /**
   * Resolves once every upgraded socket has closed, or after `timeoutMs` (then the
   * stragglers are left to the runtime). Start their close first (`AgentGateway.close`).
   */
  drained(timeoutMs: number): Promise<void>;
}

/**
 * Creates the adapter: each upgraded socket is handed to `gateway` when it opens; messages
 * (text, or binary as UTF-8) go to the connection in order, and its close is reported once.
 * Socket errors never escape.
 */
export function createDenoAgentSockets(gateway: AgentGateway): DenoAgentSockets {
  const open = new Set<WebSocket>();
  let wake: (() => void) | undefined;
  const accept: AcceptAgent = (request, address) => {
    const { socket, response } = Deno.upgradeWebSocket(request);
    socket.binaryType = "arraybuffer";
    open.add(socket);
    const adapter: AgentSocket = {
      send: (text) => socket.send(text),
      close: (code, reason) => socket.close(code, reason),
    };
    let connection: AgentConnection | undefined;
    socket.onopen = () => {
      connection = gateway.accept(adapter, address);
    };
    socket.onmessage = (event: MessageEvent<string | ArrayBuffer>) => {
      void connection?.receive(event.data);
    };
    socket.onclose = (event) => {
      open.delete(socket);
      connection?.closed(event.code, event.reason);
      if (open.size === 0) wake?.();
    };
    socket.onerror = () => {
      // A close event always follows.
    };
    return response;
  };
  return {
    accept,
    get open() {
      return open.size;
    },
    drained(timeoutMs) {
      if (open.size === 0) return Promise.resolve();
      return new Promise<void>((resolve) => {
        const timer = setTimeout(done, timeoutMs);
        function done() {
          clearTimeout(timer);
          wake = undefined;
          resolve();
        }
        wake = done;
      });
    },
  };
}
