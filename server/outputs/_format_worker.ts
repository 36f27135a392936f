/// <reference no-default-lib="true" />
/// <reference lib="deno.worker" />
/**
 * The Worker a format script runs in (started with no permissions by format.ts). It gets
 * the script's source once, imports it from a data: URL, and then answers batches: for each
 * message, the default export's result (an object, or null to drop it) or the error it threw.
 *
 * @module
 */

type Format = (message: unknown) => unknown;

let format: Format | undefined;

function describe(err: unknown): string {
  return err instanceof Error ? `${err.name}: ${err.message}` : String(err);
}

self.onmessage = async (e: MessageEvent) => {
  const msg = e.data as { load?: string; batch?: unknown[]; id?: number };
  if (msg.load !== undefined) {
    try {
      const bytes = new TextEncoder().encode(msg.load);
      let binary = "";
      for (const b of bytes) binary += String.fromCharCode(b);
      const mod = await import(`data:text/javascript;base64,${btoa(binary)}`);
      if (typeof mod.default !== "function") {
        throw new Error("the format script must `export default function (message) { … }`");
      }
      format = mod.default as Format;
      self.postMessage({ loaded: true });
    } catch (err) {
      self.postMessage({ loaded: false, error: describe(err) });
    }
    return;
  }
  const results = (msg.batch ?? []).map((m) => {
    try {
      const value = format!(m);
      if (value === null || value === undefined) return { ok: true, value: null };
      if (typeof value !== "object" || Array.isArray(value)) {
        return { ok: false, error: "the format script must return an object or null" };
      }
      return { ok: true, value: JSON.stringify(value) };
    } catch (err) {
      return { ok: false, error: describe(err) };
    }
  });
  self.postMessage({ id: msg.id, results });
};
