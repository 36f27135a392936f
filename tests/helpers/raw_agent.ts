/**
 * A scripted agent speaking raw frames on the agent WebSocket, for tests that send what
 * a real agent never would: malformed JSON, unknown types, forged or replayed signatures.
 *
 * @module
 */
import { type Ed25519KeyPair, generateKeyPair, signChallenge } from "../../shared/crypto/mod.ts";
import type { Challenge } from "../../shared/protocol/agent.ts";

/** A frame as received, parsed. */
// deno-lint-ignore no-explicit-any
export type Frame = Record<string, any>;

/** One raw WebSocket connection to `/v1/agent`. */
export class RawAgent implements AsyncDisposable {
  readonly frames: Frame[] = [];
  readonly #ws: WebSocket;
  #waiters: { pred: (f: Frame) => boolean; resolve: (f: Frame) => void }[] = [];
  readonly opened: Promise<void>;
  /** Resolves with the close code and reason. */
  readonly closed: Promise<{ code: number; reason: string }>;
  #seq = 0;

  constructor(serverUrl: string, readonly agentId: string, readonly keys: Ed25519KeyPair) {
    this.#ws = new WebSocket(serverUrl.replace(/^http/, "ws") + "/v1/agent");
    this.opened = new Promise((resolve, reject) => {
      this.#ws.onopen = () => resolve();
      this.#ws.onerror = (e) => reject(new Error(`websocket error: ${(e as ErrorEvent).message}`));
    });
    this.closed = new Promise((resolve) => {
      this.#ws.onclose = (e) => resolve({ code: e.code, reason: e.reason });
    });
    this.#ws.onmessage = (e) => {
      const frame = JSON.parse(String(e.data));
      this.frames.push(frame);
      this.#waiters = this.#waiters.filter((w) => {
        if (!w.pred(frame)) return true;
        w.resolve(frame);
        return false;
      });
    };
  }

  /** Connects with a fresh (or given) key pair. */
  static async connect(
    serverUrl: string,
    agentId: string,
    keys?: Ed25519KeyPair,
  ): Promise<RawAgent> {
    const agent = new RawAgent(serverUrl, agentId, keys ?? await generateKeyPair());
    await agent.opened;
    return agent;
  }

  /** Sends a raw string. */
  sendRaw(text: string): void {
    this.#ws.send(text);
  }

  /** Sends a frame, filling `v` and `id`. */
  send(frame: Frame): string {
    const id = frame.id ?? `raw-${this.agentId}-${this.#seq++}`;
    this.#ws.send(JSON.stringify({ v: 1, id, ...frame }));
    return id;
  }

  /** The first frame (already received or future) matching `pred`. */
  next(pred: (f: Frame) => boolean, timeoutMs = 10_000): Promise<Frame> {
    const seen = this.frames.find(pred);
    if (seen) return Promise.resolve(seen);
    return new Promise((resolve, reject) => {
      const waiter = {
        pred,
        resolve: (f: Frame) => {
          clearTimeout(timer);
          resolve(f);
        },
      };
      const timer = setTimeout(() => {
        this.#waiters = this.#waiters.filter((w) => w !== waiter);
        reject(
          new Error(`no matching frame in ${timeoutMs} ms; got ${JSON.stringify(this.frames)}`),
        );
      }, timeoutMs);
      this.#waiters.push(waiter);
    });
  }

  /** Frames of one type. */
  nextOfType(type: string, timeoutMs?: number): Promise<Frame> {
    return this.next((f) => f.type === type, timeoutMs);
  }

  /** Sends hello and returns the challenge. */
  async hello(tags: Record<string, string> = {}): Promise<Challenge> {
    this.send({
      type: "hello",
      agentId: this.agentId,
      publicKey: this.keys.publicJwk,
      version: "test",
      tags,
    });
    return await this.nextOfType("challenge") as Challenge;
  }

  /** Signs a challenge with this agent's key. */
  sign(challenge: Challenge, keys: Ed25519KeyPair = this.keys): Promise<string> {
    return signChallenge(keys.privateKey, challenge.header, challenge.payload);
  }

  /** Full handshake; returns the welcome frame. */
  async handshake(tags: Record<string, string> = {}): Promise<Frame> {
    const challenge = await this.hello(tags);
    this.send({ type: "response", jws: await this.sign(challenge) });
    return await this.nextOfType("welcome");
  }

  async close(): Promise<void> {
    if (this.#ws.readyState === WebSocket.OPEN || this.#ws.readyState === WebSocket.CONNECTING) {
      this.#ws.close(1000);
    }
    await this.closed;
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.close();
  }
}
