/**
 * The Deno adapter of {@link Transport}: the built-in WebSocket client.
 *
 * @module
 */
import { JwError } from "../shared/errors.ts";
import type { CloseInfo, Socket, Transport } from "./transport.ts";
import { Queue } from "./_queue.ts";

const decoder = new TextDecoder();

/** Creates the real transport. Needs `--allow-net` for the server's host. */
export function createDenoTransport(): Transport {
  return {
    connect(url: string, signal?: AbortSignal): Promise<Socket> {
      return new Promise((resolve, reject) => {
        if (signal?.aborted) return reject(new JwError("closed", `connect to ${url} aborted`));
        let ws: WebSocket;
        try {
          ws = new WebSocket(url);
        } catch (err) {
          return reject(
            new JwError("closed", `cannot connect to ${url}: ${(err as Error).message}`),
          );
        }
        const socket = new DenoSocket(ws);
        const onAbort = () => {
          socket.close(1000, "agent stopping");
          reject(new JwError("closed", `connect to ${url} aborted`));
        };
        signal?.addEventListener("abort", onAbort, { once: true });
        ws.addEventListener("open", () => {
          signal?.removeEventListener("abort", onAbort);
          resolve(socket);
        }, { once: true });
        void socket.closed.then(({ code, reason }) => {
          signal?.removeEventListener("abort", onAbort);
          // A no-op once opened: then the socket reports the close itself.
          reject(
            new JwError(
              "closed",
              `cannot connect to ${url} (close ${code}${reason ? " " + reason : ""})`,
            ),
          );
        });
      });
    },
  };
}

/**
 * How long a close may wait for the peer's close frame. A server that went silent (a
 * half-open connection) never answers; after this the socket counts as closed (1006).
 */
const CLOSE_WAIT_MS = 2_000;

class DenoSocket implements Socket {
  readonly #ws: WebSocket;
  readonly #incoming = new Queue<string>();
  readonly closed: Promise<CloseInfo>;
  #settle!: (info: CloseInfo) => void;
  #closeTimer: ReturnType<typeof setTimeout> | undefined;

  constructor(ws: WebSocket) {
    this.#ws = ws;
    ws.binaryType = "arraybuffer";
    ws.addEventListener("message", (e: MessageEvent) => {
      this.#incoming.push(typeof e.data === "string" ? e.data : decoder.decode(e.data));
    });
    let settled = false;
    this.closed = new Promise((resolve) => {
      this.#settle = (info) => {
        if (settled) return;
        settled = true;
        if (this.#closeTimer !== undefined) clearTimeout(this.#closeTimer);
        this.#incoming.end();
        resolve(info);
      };
    });
    ws.addEventListener(
      "close",
      (e: CloseEvent) => this.#settle({ code: e.code, reason: e.reason }),
      { once: true },
    );
    // "error" is always followed by "close"; listening keeps it from being reported as uncaught.
    ws.addEventListener("error", () => {});
  }

  send(text: string): boolean {
    if (this.#ws.readyState !== WebSocket.OPEN) return false;
    this.#ws.send(text);
    return true;
  }

  close(code = 1000, reason = ""): void {
    if (this.#ws.readyState === WebSocket.CLOSING || this.#ws.readyState === WebSocket.CLOSED) {
      return;
    }
    this.#ws.close(code, reason);
    this.#closeTimer = setTimeout(
      () => this.#settle({ code: 1006, reason: "no close frame from the server" }),
      CLOSE_WAIT_MS,
    );
  }

  [Symbol.asyncIterator](): AsyncIterator<string> {
    return this.#incoming[Symbol.asyncIterator]();
  }
}
