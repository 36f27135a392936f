/**
 * A TCP proxy on loopback that a test can cut and restore, to make a server unreachable
 * for an agent (a network outage) while the server and its operators stay up.
 *
 * @module
 */

/** Forwards 127.0.0.1:port to a target until closed; `block()` cuts every connection. */
export class CuttableProxy implements AsyncDisposable {
  readonly port: number;
  readonly #listener: Deno.Listener;
  readonly #target: { hostname: string; port: number };
  readonly #open = new Set<Deno.Conn>();
  readonly #accepting: Promise<void>;
  #blocked = false;
  #blackholed = false;

  constructor(target: string) {
    const url = new URL(target);
    this.#target = { hostname: url.hostname, port: Number(url.port) };
    this.#listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
    this.port = (this.#listener.addr as Deno.NetAddr).port;
    this.#accepting = this.#accept();
  }

  /** The URL agents should use. */
  get url(): string {
    return `http://127.0.0.1:${this.port}`;
  }

  /** Closes every forwarded connection and refuses new ones until {@link unblock}. */
  block(): void {
    this.#blocked = true;
    for (const conn of this.#open) this.#closeQuietly(conn);
    this.#open.clear();
  }

  /**
   * A silent outage: open connections stay open but every byte in either direction is
   * dropped (a half-open connection, as after a NAT or route failure); new connections are
   * refused. Ends with {@link unblock}, which also closes the silenced connections.
   */
  blackhole(): void {
    this.#blackholed = true;
    this.#blocked = true;
  }

  /** Forwards new connections again (closing any silenced by {@link blackhole}). */
  unblock(): void {
    if (this.#blackholed) {
      for (const conn of this.#open) this.#closeQuietly(conn);
      this.#open.clear();
    }
    this.#blackholed = false;
    this.#blocked = false;
  }

  async #accept(): Promise<void> {
    for await (const inbound of this.#listener) {
      if (this.#blocked) {
        this.#closeQuietly(inbound);
        continue;
      }
      void this.#forward(inbound);
    }
  }

  async #forward(inbound: Deno.Conn): Promise<void> {
    let outbound: Deno.Conn;
    try {
      outbound = await Deno.connect(this.#target);
    } catch {
      this.#closeQuietly(inbound);
      return;
    }
    this.#open.add(inbound);
    this.#open.add(outbound);
    const pipe = async (from: Deno.Conn, to: Deno.Conn) => {
      const writer = to.writable.getWriter();
      try {
        for await (const chunk of from.readable) {
          if (!this.#blackholed) await writer.write(chunk);
        }
      } catch {
        // either side went away
      } finally {
        this.#closeQuietly(from);
        this.#closeQuietly(to);
        this.#open.delete(from);
        this.#open.delete(to);
      }
    };
    await Promise.all([pipe(inbound, outbound), pipe(outbound, inbound)]);
  }

  #closeQuietly(conn: Deno.Conn): void {
    try {
      conn.close();
    } catch {
      // already closed
    }
  }

  async [Symbol.asyncDispose](): Promise<void> {
    this.block();
    this.#listener.close();
    await this.#accepting.catch(() => {});
  }
}
