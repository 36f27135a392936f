/**
 * The upstream cache of the file service: files missing under the root are fetched from the
 * configured upstreams and kept on disk with their sha256.
 *
 * Layout under the cache directory:
 *
 * - `objects/XX/HASH` — a file's content, where HASH is the hex sha256 of its request path
 *   (`a/b.tar`) and XX its first two characters, so no request path ever becomes a
 *   filesystem path;
 * - `objects/XX/HASH.json` — its sidecar `{path, sha256, size, upstream, fetchedAt}`, written
 *   after the content: an entry without a sidecar (or whose size disagrees) does not count;
 * - `tmp/` — downloads in progress; emptied when the cache is first used.
 *
 * Entries never expire and the cache is never pruned; delete entries (or the whole directory)
 * to make the next request fetch again.
 *
 * @module
 */
import { createHash } from "node:crypto";
import { posix } from "node:path";
import type { Clock } from "../../shared/clock.ts";
import { isJwError, JwError, toJwError } from "../../shared/errors.ts";
import type { Logger } from "../../shared/log.ts";

/** A file kept in the cache. */
export interface CachedFile {
  /** The request path it was fetched for (`a/b.tar`). */
  key: string;
  /** Where its content is. */
  path: string;
  /** sha256 of the content, lower-case hex. */
  sha256: string;
  size: number;
  /** The URL it came from. */
  upstream: string;
  /** When it was fetched, epoch ms. */
  fetchedAt: number;
}

/** Options for {@link UpstreamCache}. */
export interface UpstreamCacheOptions {
  /** The cache directory; created when first needed. */
  dir: string;
  /** Base URLs without a trailing slash, asked in order. */
  upstreams: readonly string[];
  /** Largest file taken, bytes. */
  maxBytes: number;
  /** Longest wait for an answer, and between two pieces of a body, ms. */
  timeoutMs: number;
  clock: Clock;
  logger: Logger;
  /** Default: the global `fetch`. */
  fetch?: typeof fetch;
}

/** What `HASH.json` holds. */
interface Sidecar {
  /** The request path (the cache key). */
  path: string;
  sha256: string;
  size: number;
  upstream: string;
  fetchedAt: number;
}

const SHA256_HEX = /^[0-9a-f]{64}$/;

function sha256Hex(text: string): string {
  return createHash("sha256").update(text, "utf8").digest("hex");
}

/** `https://host:port` of a URL, for messages (never its path or query). */
function originOf(url: string): string {
  try {
    return new URL(url).origin;
  } catch {
    return "upstream";
  }
}

/** Writes all of `bytes` (a write may take only part). */
async function writeAll(file: Deno.FsFile, bytes: Uint8Array): Promise<void> {
  let done = 0;
  while (done < bytes.length) done += await file.write(bytes.subarray(done));
}

async function removeQuietly(path: string): Promise<void> {
  try {
    await Deno.remove(path);
  } catch {
    // already gone
  }
}

/**
 * Files fetched from upstreams, kept on disk. {@link UpstreamCache.get} serves a kept file, or
 * fetches it once: concurrent calls for the same path share one fetch (and its outcome).
 * Safe for concurrent use by many requests; one cache directory belongs to one server.
 */
export class UpstreamCache implements AsyncDisposable {
  #opts: UpstreamCacheOptions;
  #fetch: typeof fetch;
  #inflight = new Map<string, Promise<CachedFile>>();
  #aborts = new Set<AbortController>();
  #ready: Promise<void> | undefined;
  #closed = false;

  constructor(opts: UpstreamCacheOptions) {
    this.#opts = opts;
    this.#fetch = opts.fetch ?? ((input, init) => fetch(input, init));
  }

  /** Fetches in progress (tests and status). */
  get inflight(): number {
    return this.#inflight.size;
  }

  /** Where the content and the sidecar of `key` live. */
  #paths(key: string): { data: string; meta: string } {
    const id = sha256Hex(key);
    const data = posix.join(this.#opts.dir, "objects", id.slice(0, 2), id);
    return { data, meta: `${data}.json` };
  }

  /**
   * The kept file for request path `key`, if there is a complete one.
   * @throws JwError `internal` when the cache cannot be read for another reason than absence.
   */
  async lookup(key: string): Promise<CachedFile | undefined> {
    const { data, meta } = this.#paths(key);
    let text: string;
    try {
      text = await Deno.readTextFile(meta);
    } catch (err) {
      if (err instanceof Deno.errors.NotFound) return undefined;
      throw new JwError("internal", "the files cache cannot be read", { cause: err });
    }
    let entry: Partial<Sidecar>;
    try {
      entry = JSON.parse(text);
    } catch {
      entry = {};
    }
    if (
      entry.path !== key || typeof entry.sha256 !== "string" || !SHA256_HEX.test(entry.sha256) ||
      !Number.isSafeInteger(entry.size)
    ) {
      this.#opts.logger.warn("files cache: bad sidecar, fetching again", { key });
      return undefined;
    }
    try {
      const info = await Deno.stat(data);
      if (!info.isFile || info.size !== entry.size) {
        this.#opts.logger.warn("files cache: content does not match its sidecar", { key });
        return undefined;
      }
    } catch {
      return undefined;
    }
    return {
      key,
      path: data,
      sha256: entry.sha256,
      size: entry.size!,
      upstream: String(entry.upstream ?? ""),
      fetchedAt: Number(entry.fetchedAt ?? 0),
    };
  }

  /**
   * The kept file for request path `key` (`encoded`: the same path percent-encoded), fetching
   * it first if it is not kept. Upstreams are asked in order: 404 or 410 moves on to the next,
   * and so does a failure (network error, timeout, another status), which is reported only
   * when no upstream had the file.
   * @throws JwError `not_found` (every upstream answered 404/410), `resource_limit` (larger
   *   than `maxBytes`: nothing is kept), `unavailable` or `timeout` (an upstream failed and none
   *   had it), `closed`, `internal` (the cache directory cannot be written).
   */
  get(key: string, encoded: string): Promise<CachedFile> {
    if (this.#closed) return Promise.reject(new JwError("closed", "the file service is closed"));
    const running = this.#inflight.get(key);
    if (running) return running;
    const load = (async () => (await this.lookup(key)) ?? await this.#fetchFirst(key, encoded))();
    const shared = load.finally(() => {
      if (this.#inflight.get(key) === shared) this.#inflight.delete(key);
    });
    this.#inflight.set(key, shared);
    return shared;
  }

  async #fetchFirst(key: string, encoded: string): Promise<CachedFile> {
    let failure: JwError | undefined;
    for (const base of this.#opts.upstreams) {
      if (this.#closed) throw new JwError("closed", "the file service is closed");
      const url = `${base}/${encoded}`;
      try {
        const got = await this.#fetchOne(url, key);
        if (got) return got;
        this.#opts.logger.debug("files upstream: not there", { url });
      } catch (err) {
        const e = toJwError(err);
        if (e.code !== "unavailable" && e.code !== "timeout") throw e;
        this.#opts.logger.warn("files upstream failed", { url, error: e.message });
        failure ??= e;
      }
    }
    if (failure) throw failure;
    throw new JwError("not_found", `not found here or at any upstream: ${key}`);
  }

  /** Creates the directories and empties `tmp/`, once (again after a failure). */
  #prepare(): Promise<void> {
    this.#ready ??= (async () => {
      const tmp = posix.join(this.#opts.dir, "tmp");
      await Deno.mkdir(posix.join(this.#opts.dir, "objects"), { recursive: true });
      await Deno.mkdir(tmp, { recursive: true });
      for await (const entry of Deno.readDir(tmp)) {
        await removeQuietly(posix.join(tmp, entry.name));
      }
    })().catch((err) => {
      this.#ready = undefined;
      throw new JwError("internal", "the files cache directory cannot be prepared", {
        cause: err,
      });
    });
    return this.#ready;
  }

  /**
   * Fetches `url` into the cache as `key`.
   * @returns undefined when the upstream does not have it (404, 410).
   */
  async #fetchOne(url: string, key: string): Promise<CachedFile | undefined> {
    const { clock, maxBytes, timeoutMs } = this.#opts;
    const origin = originOf(url);
    const abort = new AbortController();
    this.#aborts.add(abort);
    let timedOut = false;
    const expire = () => {
      timedOut = true;
      abort.abort();
    };
    let timer = clock.setTimeout(expire, timeoutMs);
    const rearm = () => {
      clock.clearTimeout(timer);
      timer = clock.setTimeout(expire, timeoutMs);
    };
    /** A network-side failure as the JwError to report. */
    const failed = (err: unknown, what: string): JwError => {
      if (timedOut) {
        return new JwError("timeout", `${origin} did not answer within ${timeoutMs}ms`);
      }
      if (this.#closed) return new JwError("closed", "the file service is closed");
      const reason = err instanceof Error ? err.message.split("\n")[0].slice(0, 200) : "";
      return new JwError("unavailable", `${origin}: ${what} failed${reason ? `: ${reason}` : ""}`, {
        cause: err,
      });
    };
    try {
      let res: Response;
      try {
        res = await this.#fetch(url, { signal: abort.signal, redirect: "follow" });
      } catch (err) {
        throw failed(err, "request");
      }
      if (res.status === 404 || res.status === 410) {
        await res.body?.cancel().catch(() => {});
        return undefined;
      }
      if (res.status !== 200) {
        await res.body?.cancel().catch(() => {});
        throw new JwError("unavailable", `${origin} answered HTTP ${res.status}`);
      }
      const declared = res.headers.get("content-length");
      if (declared !== null && Number(declared) > maxBytes) {
        await res.body?.cancel().catch(() => {});
        throw tooLarge(key, maxBytes);
      }
      return await this.#download(res, url, key, rearm, failed);
    } finally {
      clock.clearTimeout(timer);
      this.#aborts.delete(abort);
    }
  }

  /**
   * Streams an upstream's 200 answer into `tmp/`, hashing it on the way, then moves it into
   * place with its sidecar. Nothing is kept when anything fails.
   */
  async #download(
    res: Response,
    url: string,
    key: string,
    rearm: () => void,
    failed: (err: unknown, what: string) => JwError,
  ): Promise<CachedFile> {
    const { clock, maxBytes } = this.#opts;
    const reader = res.body?.getReader();
    const tmp = posix.join(this.#opts.dir, "tmp", `${crypto.randomUUID()}.part`);
    let created = false;
    try {
      await this.#prepare();
      const hash = createHash("sha256");
      let size = 0;
      const file = await Deno.open(tmp, { write: true, createNew: true, mode: 0o644 });
      created = true;
      try {
        for (;;) {
          if (!reader) break;
          rearm();
          let chunk: ReadableStreamReadResult<Uint8Array>;
          try {
            chunk = await reader.read();
          } catch (err) {
            throw failed(err, "download");
          }
          if (chunk.done) break;
          size += chunk.value.length;
          if (size > maxBytes) throw tooLarge(key, maxBytes);
          hash.update(chunk.value);
          await writeAll(file, chunk.value);
        }
        await file.syncData();
      } finally {
        file.close();
      }
      const sidecar: Sidecar = {
        path: key,
        sha256: hash.digest("hex"),
        size,
        upstream: url,
        fetchedAt: clock.now(),
      };
      const { data, meta } = this.#paths(key);
      await Deno.mkdir(posix.dirname(data), { recursive: true });
      await Deno.rename(tmp, data);
      created = false;
      await Deno.writeTextFile(`${tmp}.json`, JSON.stringify(sidecar) + "\n");
      await Deno.rename(`${tmp}.json`, meta);
      this.#opts.logger.info("files upstream: fetched", {
        key,
        url,
        size,
        sha256: sidecar.sha256,
      });
      return { ...sidecar, key, path: data };
    } catch (err) {
      await reader?.cancel().catch(() => {});
      if (created) await removeQuietly(tmp);
      await removeQuietly(`${tmp}.json`);
      if (isJwError(err)) throw err;
      throw new JwError("internal", "the files cache cannot be written", { cause: err });
    }
  }

  /** Stops every fetch in progress (their requests get `closed`) and waits for them to end. */
  async close(): Promise<void> {
    this.#closed = true;
    for (const abort of this.#aborts) abort.abort();
    await Promise.allSettled([...this.#inflight.values()]);
  }

  [Symbol.asyncDispose](): Promise<void> {
    return this.close();
  }
}

function tooLarge(key: string, maxBytes: number): JwError {
  return new JwError(
    "resource_limit",
    `${key} is larger than the ${maxBytes} bytes allowed from upstreams (files.maxBytes)`,
    { detail: { maxBytes } },
  );
}
