/**
 * A minimal client for the V8 inspector of a Deno process started with
 * `--inspect=127.0.0.1:0`: force a garbage collection, read the heap size, and record a CPU
 * profile. The benchmarks use it only where they say so (density and the profile pass),
 * never while timing fan-out rounds.
 *
 * @module
 */

/** The `--inspect` flag that lets the OS pick the inspector port. */
export const INSPECT_FLAG = "--inspect=127.0.0.1:0";

/** One node of a V8 CPU profile (`Profiler.stop`). */
export interface ProfileNode {
  id: number;
  callFrame: { functionName: string; url: string; lineNumber: number; columnNumber: number };
  hitCount?: number;
  children?: number[];
}

/** A V8 CPU profile (`.cpuprofile`). */
export interface CpuProfile {
  nodes: ProfileNode[];
  startTime: number;
  endTime: number;
  samples?: number[];
  timeDeltas?: number[];
}

/** V8 heap figures, bytes. */
export interface HeapUsage {
  usedSize: number;
  totalSize: number;
}

/** A session on one process's inspector. Close it when done. */
export class Inspector implements AsyncDisposable {
  readonly #ws: WebSocket;
  readonly #pending = new Map<
    number,
    { resolve: (v: Record<string, unknown>) => void; reject: (e: Error) => void }
  >();
  #nextId = 1;

  private constructor(ws: WebSocket) {
    this.#ws = ws;
    ws.onmessage = (e) => {
      const msg = JSON.parse(String(e.data));
      const waiter = msg.id !== undefined ? this.#pending.get(msg.id) : undefined;
      if (!waiter) return;
      this.#pending.delete(msg.id);
      if (msg.error) waiter.reject(new Error(`inspector: ${msg.error.message}`));
      else waiter.resolve(msg.result ?? {});
    };
    ws.onclose = () => {
      for (const w of this.#pending.values()) w.reject(new Error("inspector closed"));
      this.#pending.clear();
    };
  }

  /** Connects to the inspector WebSocket `url` (`ws://127.0.0.1:PORT/UUID`). */
  static async connect(url: string): Promise<Inspector> {
    const ws = new WebSocket(url);
    await new Promise<void>((resolve, reject) => {
      ws.onopen = () => resolve();
      ws.onerror = () => reject(new Error(`cannot open inspector at ${url}`));
    });
    ws.onerror = () => {};
    return new Inspector(ws);
  }

  /** Sends one inspector command and resolves with its result. */
  call(method: string, params: Record<string, unknown> = {}): Promise<Record<string, unknown>> {
    const id = this.#nextId++;
    return new Promise((resolve, reject) => {
      this.#pending.set(id, { resolve, reject });
      this.#ws.send(JSON.stringify({ id, method, params }));
    });
  }

  /** Runs a full garbage collection in the process. */
  async collectGarbage(): Promise<void> {
    await this.call("HeapProfiler.collectGarbage");
  }

  /** The V8 heap: bytes in use and bytes reserved. */
  async heapUsage(): Promise<HeapUsage> {
    const r = await this.call("Runtime.getHeapUsage");
    return { usedSize: Number(r.usedSize), totalSize: Number(r.totalSize) };
  }

  /** Starts sampling the CPU every `intervalUs` microseconds. */
  async startProfile(intervalUs = 500): Promise<void> {
    await this.call("Profiler.enable");
    await this.call("Profiler.setSamplingInterval", { interval: intervalUs });
    await this.call("Profiler.start");
  }

  /** Stops sampling and returns the profile. */
  async stopProfile(): Promise<CpuProfile> {
    const r = await this.call("Profiler.stop");
    await this.call("Profiler.disable");
    return r.profile as CpuProfile;
  }

  close(): void {
    this.#ws.close();
  }

  [Symbol.asyncDispose](): Promise<void> {
    this.close();
    return Promise.resolve();
  }
}

/** Finds the inspector URL Deno prints on stderr ("Debugger listening on ws://…"). */
export async function inspectorUrl(stderrFile: string, timeoutMs = 10_000): Promise<string> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const text = await Deno.readTextFile(stderrFile).catch(() => "");
    const m = text.match(/Debugger listening on (ws:\/\/\S+)/);
    if (m) return m[1];
    if (Date.now() > deadline) throw new Error(`no inspector URL in ${stderrFile}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}
