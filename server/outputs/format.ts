/**
 * Format scripts: an output's `format` file, a JavaScript module whose default export takes a
 * message (the parsed JSON object) and returns the object to publish, or null to drop it. It
 * runs in a Worker with no permissions at all (no files, network, environment or
 * subprocesses); a batch that takes longer than the timeout (an endless loop) ends the Worker,
 * which is started again for the next batch.
 *
 * @module
 */
import { JwError } from "../../shared/errors.ts";

/** What became of one message. */
export type FormatResult =
  | { ok: true; /** JSON text, or null: dropped. */ value: string | null }
  | { ok: false; error: string };

/** A loaded format script. */
export interface Formatter {
  /** Formats each message (JSON text in, results in the same order). */
  apply(bodies: readonly string[]): Promise<FormatResult[]>;
  close(): void;
}

const WORKER = new URL("./_format_worker.ts", import.meta.url);

/** Longest time one batch may take, ms. */
export const FORMAT_TIMEOUT_MS = 5_000;

interface Loaded {
  worker: Worker;
  next: number;
  waiting: Map<number, (results: FormatResult[]) => void>;
}

/**
 * Loads the format script at `path` (read here; the Worker gets its text).
 * @throws JwError `config` when the file cannot be read or has no default export function.
 */
export async function loadFormatter(
  path: string,
  timeoutMs = FORMAT_TIMEOUT_MS,
): Promise<Formatter> {
  let source: string;
  try {
    source = await Deno.readTextFile(path);
  } catch (err) {
    throw new JwError("config", `cannot read format script ${path}: ${(err as Error).message}`);
  }
  const start = async (): Promise<Loaded> => {
    const worker = new Worker(WORKER, {
      type: "module",
      // deno-lint-ignore no-explicit-any
      deno: { permissions: "none" } as any,
    });
    const loaded: Loaded = { worker, next: 1, waiting: new Map() };
    const ready = new Promise<void>((resolve, reject) => {
      worker.onmessage = (e) => {
        const m = e.data as {
          loaded?: boolean;
          error?: string;
          id?: number;
          results?: FormatResult[];
        };
        if (m.loaded !== undefined) {
          if (m.loaded) resolve();
          else reject(new JwError("config", `format script ${path}: ${m.error}`));
          return;
        }
        const done = loaded.waiting.get(m.id!);
        loaded.waiting.delete(m.id!);
        done?.(m.results ?? []);
      };
      worker.onerror = (e) => {
        e.preventDefault();
        reject(new JwError("config", `format script ${path}: ${e.message}`));
      };
    });
    worker.postMessage({ load: source });
    try {
      await ready;
    } catch (err) {
      worker.terminate();
      throw err;
    }
    return loaded;
  };
  let current: Loaded | undefined = await start();
  return {
    async apply(bodies) {
      current ??= await start();
      const run = current;
      const id = run.next++;
      let timer: ReturnType<typeof setTimeout> | undefined;
      const results = await new Promise<FormatResult[] | undefined>((resolve) => {
        run.waiting.set(id, resolve);
        timer = setTimeout(() => resolve(undefined), timeoutMs);
        run.worker.postMessage({ id, batch: bodies.map((b) => JSON.parse(b)) });
      }).finally(() => clearTimeout(timer));
      if (results === undefined) {
        // Stuck (an endless loop): end it; the next batch gets a fresh Worker.
        run.worker.terminate();
        if (current === run) current = undefined;
        return bodies.map(() => ({
          ok: false as const,
          error: `the format script took longer than ${timeoutMs} ms`,
        }));
      }
      return results;
    },
    close() {
      current?.worker.terminate();
      current = undefined;
    },
  };
}
