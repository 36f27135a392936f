/**
 * Test helper: a minimal agent endpoint on 127.0.0.1 (port 0) that speaks the server side
 * of the handshake for real (challenge, signature check, welcome) and lets the test send
 * and receive frames. Like the real server it acknowledges every reply that carries a
 * `dseq` and drops one it has already seen (across connections), so tests see each reply
 * once.
 *
 * @module
 */
import { thumbprint, verifyChallengeResponse } from "../shared/crypto/mod.ts";
import type { ChallengeClaims, ChallengeHeader, PublicJwk } from "../shared/protocol/mod.ts";
import { deadline } from "./_deadline.ts";
import { Queue } from "./_queue.ts";

/** One agent connection as the server sees it. */
export class ServerConn {
  readonly #ws: WebSocket;
  readonly #frames = new Queue<Record<string, unknown>>();
  readonly #iterator: AsyncIterator<Record<string, unknown>>;
  readonly closed: Promise<{ code: number; reason: string }>;
  /** The agent's hello, once {@link handshake} read it. */
  hello: Record<string, unknown> | undefined;

  constructor(ws: WebSocket, delivery: { dseq: number } = { dseq: 0 }) {
    this.#ws = ws;
    this.#iterator = this.#frames[Symbol.asyncIterator]();
    ws.addEventListener("message", (e) => {
      const frame = JSON.parse(e.data);
      if (typeof frame.dseq === "number") {
        const fresh = frame.dseq > delivery.dseq;
        if (fresh) delivery.dseq = frame.dseq;
        ws.send(JSON.stringify({ v: 1, id: `k-${frame.dseq}`, type: "ack", upTo: delivery.dseq }));
        if (!fresh) return;
      }
      this.#frames.push(frame);
    });
    this.closed = new Promise((resolve) => {
      ws.addEventListener("close", (e) => {
        this.#frames.end();
        resolve({ code: e.code, reason: e.reason });
      });
    });
  }

  /** Sends a frame once the socket is open. */
  async send(frame: object): Promise<void> {
    if (this.#ws.readyState === WebSocket.CONNECTING) {
      await new Promise((resolve) => this.#ws.addEventListener("open", resolve, { once: true }));
    }
    this.#ws.send(JSON.stringify(frame));
  }

  /** The next frame from the agent (rejects after `ms`). */
  async next(ms = 5000): Promise<Record<string, unknown>> {
    const r = await deadline(this.#iterator.next(), ms, "no frame from the agent");
    if (r.done) throw new Error("agent closed the socket");
    return r.value;
  }

  /** Frames until (and including) the `done` output of envelope `id`. */
  async untilDone(id: string): Promise<Record<string, unknown>[]> {
    const frames: Record<string, unknown>[] = [];
    for (;;) {
      const f = await this.next();
      if (f.id !== id) continue;
      frames.push(f);
      if (f.type === "output" && f.done === true) return frames;
    }
  }

  /** Runs the server side of the handshake: hello → challenge → verified response → welcome. */
  async handshake(serverId = "s1", heartbeatMs = 60_000): Promise<void> {
    const hello = await this.next();
    if (hello.type !== "hello") throw new Error(`expected hello, got ${hello.type}`);
    this.hello = hello;
    const publicKey = hello.publicKey as PublicJwk;
    const kid = await thumbprint(publicKey);
    const now = Math.floor(Date.now() / 1000);
    const header: ChallengeHeader = { alg: "EdDSA", typ: "JWT", kid };
    const claims: ChallengeClaims = {
      nonce: crypto.randomUUID(),
      iat: now,
      exp: now + 30,
      aud: serverId,
      sub: hello.agentId as string,
      kid,
    };
    await this.send({ v: 1, id: "c-1", type: "challenge", header, payload: claims });
    const response = await this.next();
    await verifyChallengeResponse(response.jws as string, publicKey, { header, claims });
    await this.send({
      v: 1,
      id: "w-1",
      type: "welcome",
      serverId,
      agentId: hello.agentId,
      heartbeatMs,
      maxFrameBytes: 1 << 20,
    });
  }

  /** Closes from the server side. */
  close(code = 1000, reason = ""): void {
    this.#ws.close(code, reason);
  }
}

/** A running test endpoint. */
export interface TestServer extends AsyncDisposable {
  /** `http://127.0.0.1:PORT` */
  url: string;
  /** The `n`th connection (0-based), waiting for it. */
  conn(n: number): Promise<ServerConn>;
}

/** Starts a test endpoint serving `/v1/agent`. */
export function startTestServer(): TestServer {
  const conns: ServerConn[] = [];
  const waiters: (() => void)[] = [];
  const delivery = { dseq: 0 };
  const server = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen: () => {} }, (req) => {
    if (new URL(req.url).pathname !== "/v1/agent") {
      return new Response("not found", { status: 404 });
    }
    const { socket, response } = Deno.upgradeWebSocket(req);
    conns.push(new ServerConn(socket, delivery));
    for (const wake of waiters.splice(0)) wake();
    return response;
  });
  return {
    url: `http://127.0.0.1:${server.addr.port}`,
    conn(n) {
      const ready = new Promise<ServerConn>((resolve) => {
        const check = () => (conns[n] ? resolve(conns[n]) : waiters.push(check));
        check();
      });
      return deadline(ready, 5000, `no connection #${n}`);
    },
    async [Symbol.asyncDispose]() {
      for (const c of conns) c.close();
      await Promise.all(conns.map((c) => c.closed));
      await server.shutdown();
    },
  };
}
