/**
 * The file service under `/files/`: files from a root directory, directory listings, and files
 * fetched from upstreams and kept in a cache.
 *
 * A request goes through, in order:
 *
 * 1. the service being on (`files.root` set; else 404 saying so) and the method (GET and HEAD;
 *    else 405 with `Allow: GET, HEAD`);
 * 2. the path checks of `parseFilesPath` (traversal, encoded slashes, backslashes, NUL,
 *    absolute paths, empty segments: 400 with the reason);
 * 3. the root: the path is resolved under the root's real path with symlinks followed, and
 *    must stay inside it (a symlink leading out is answered like a missing file, 404). A file
 *    is served (see serve.ts: `ETag`, `Last-Modified`, 304s, one byte range); a directory is
 *    404 unless `listing` is on, then listed (a directory asked for without its trailing `/`
 *    is redirected to it, so relative links work);
 * 4. the upstream cache, for a file missing under the root when upstreams are configured:
 *    kept files are served from disk without asking anyone; others are fetched once (see
 *    upstream.ts). Files from the cache carry their content's sha256 twice, as
 *    `Digest: sha-256=<base64>` and `X-Checksum-Sha256: <hex>`, and `ETag: "sha256-<hex>"`.
 *
 * Errors are answered as `{error: {code, message}}` (no body for HEAD) and never name a real
 * filesystem path: 400 bad path, 404 not found, 405, 502 an upstream failed, timed out or
 * offered a file over `maxBytes`, 503 closed, 500 anything unexpected (logged). Refused paths
 * are logged at info, misses at debug. Authentication is the caller's business.
 *
 * @module
 */
import type { Clock } from "../../shared/clock.ts";
import type { FilesConfig } from "../../shared/config/files.ts";
import { type ErrorCode, JwError, toJwError } from "../../shared/errors.ts";
import type { Logger } from "../../shared/log.ts";
import { listingResponse, readListing } from "./_listing.ts";
import { type FilesPath, isInside, parseFilesPath } from "./_path.ts";
import { serveFile } from "./serve.ts";
import { type CachedFile, UpstreamCache } from "./upstream.ts";

/** Options for {@link createFilesHandler}. */
export interface FilesHandlerOptions {
  /** The parsed `files` section of the server config. */
  config: FilesConfig;
  /** Where upstream files are kept: `config.cache`, else `DATA/files-cache` (filesCacheDir). */
  cacheDir: string;
  /** Timers for upstream timeouts, and the time recorded for fetched files. */
  clock: Clock;
  logger: Logger;
  /** How upstreams are asked. Default: the global `fetch`. */
  fetch?: typeof fetch;
}

/** The file service. */
export interface FilesHandler extends AsyncDisposable {
  /**
   * Answers one request. Never throws: every failure is an HTTP answer. Safe to call
   * concurrently.
   * @param path the raw, still percent-encoded part of the URL path after `/files/`
   */
  handle(req: Request, path: string): Promise<Response>;
  /**
   * Stops upstream fetches in progress (their requests get 503) and waits for them; later
   * requests get 503. Bodies already streaming from disk are not cut.
   */
  close(): Promise<void>;
}

/** The status an error code is answered with. */
function statusFor(code: ErrorCode): number {
  switch (code) {
    case "usage":
      return 400;
    case "not_found":
      return 404;
    case "unavailable":
    case "timeout":
    case "resource_limit":
      return 502;
    case "closed":
      return 503;
    default:
      return 500;
  }
}

function errorResponse(
  req: Request,
  status: number,
  code: string,
  message: string,
  headers: Record<string, string> = {},
): Response {
  const body = JSON.stringify({ error: { code, message } });
  return new Response(req.method === "HEAD" ? null : body, {
    status,
    headers: {
      "content-type": "application/json",
      "cache-control": "no-store",
      "x-content-type-options": "nosniff",
      ...headers,
    },
  });
}

/** The headers carrying a cached file's sha256. */
function digestHeaders(sha256: string): Record<string, string> {
  const bytes = new Uint8Array(32);
  for (let i = 0; i < 32; i++) bytes[i] = parseInt(sha256.slice(i * 2, i * 2 + 2), 16);
  return {
    "digest": `sha-256=${btoa(String.fromCharCode(...bytes))}`,
    "x-checksum-sha256": sha256,
  };
}

/** What the root holds at a request path. */
type Found =
  | { kind: "file"; real: string }
  | { kind: "directory"; real: string; rootReal: string }
  | { kind: "missing" }
  | { kind: "refused"; reason: string };

/** Errors meaning "there is nothing at this path". */
function isAbsent(err: unknown): boolean {
  return err instanceof Deno.errors.NotFound || err instanceof Deno.errors.NotADirectory;
}

/**
 * Creates the file service. Nothing touches the disk or the network until a request comes;
 * the root's real path is looked up on every request, so a root created or moved later is
 * picked up.
 */
export function createFilesHandler(options: FilesHandlerOptions): FilesHandler {
  const { config, logger } = options;
  const cache = config.upstreams.length > 0
    ? new UpstreamCache({
      dir: options.cacheDir,
      upstreams: config.upstreams,
      maxBytes: config.maxBytes,
      timeoutMs: config.upstreamTimeout,
      clock: options.clock,
      logger,
      fetch: options.fetch,
    })
    : undefined;
  let closed = false;
  let rootMissingLogged = false;

  /** The root's real path; undefined (logged once) when it does not exist. */
  const realRoot = async (root: string): Promise<string | undefined> => {
    try {
      const real = await Deno.realPath(root);
      rootMissingLogged = false;
      return real;
    } catch (err) {
      if (!isAbsent(err)) throw err;
      if (!rootMissingLogged) {
        rootMissingLogged = true;
        logger.warn("files: the root directory does not exist; serving as if empty", { root });
      }
      return undefined;
    }
  };

  const locate = async (root: string, path: FilesPath): Promise<Found> => {
    const rootReal = await realRoot(root);
    if (rootReal === undefined) return { kind: "missing" };
    const candidate = path.segments.length ? `${rootReal}/${path.key}` : rootReal;
    let real: string;
    try {
      real = await Deno.realPath(candidate);
    } catch (err) {
      if (isAbsent(err)) return { kind: "missing" };
      if (err instanceof Deno.errors.PermissionDenied) {
        return { kind: "refused", reason: "permission denied" };
      }
      if (err instanceof Deno.errors.FilesystemLoop) {
        return { kind: "refused", reason: "symlink loop" };
      }
      throw err;
    }
    if (!isInside(real, rootReal)) return { kind: "refused", reason: "symlink leaves the root" };
    const info = await Deno.stat(real);
    if (info.isFile) return path.directory ? { kind: "missing" } : { kind: "file", real };
    if (info.isDirectory) return { kind: "directory", real, rootReal };
    return { kind: "refused", reason: "not a regular file" };
  };

  const notFound = (req: Request) => errorResponse(req, 404, "not_found", "not found");

  const fromCache = async (req: Request, path: FilesPath): Promise<Response> => {
    let kept: CachedFile;
    try {
      kept = await cache!.get(path.key, path.encoded);
    } catch (err) {
      const e = toJwError(err);
      if (e.code === "not_found") {
        logger.debug("files: not found", { path: path.key });
        return notFound(req);
      }
      if (e.code === "internal") throw e;
      logger.info("files: upstream fetch refused or failed", {
        path: path.key,
        error: e.message,
      });
      return errorResponse(req, statusFor(e.code), e.code, e.message);
    }
    return await serveFile(req, {
      path: kept.path,
      name: path.key,
      etag: `"sha256-${kept.sha256}"`,
      headers: digestHeaders(kept.sha256),
    });
  };

  const handle = async (req: Request, raw: string): Promise<Response> => {
    const root = config.root;
    if (root === undefined) {
      return errorResponse(
        req,
        404,
        "not_found",
        "the file service is off: no files.root in the server config",
      );
    }
    if (req.method !== "GET" && req.method !== "HEAD") {
      return errorResponse(
        req,
        405,
        "usage",
        `${req.method.slice(0, 16)} is not allowed here: use GET or HEAD`,
        { allow: "GET, HEAD" },
      );
    }
    if (closed) return errorResponse(req, 503, "closed", "the file service is closed");
    const path = parseFilesPath(raw);
    if ("refused" in path) {
      logger.info("files: refused path", { reason: path.refused, path: raw.slice(0, 256) });
      return errorResponse(req, 400, "usage", `bad path: ${path.refused}`);
    }
    const found = await locate(root, path);
    switch (found.kind) {
      case "refused":
        logger.info("files: refused", { reason: found.reason, path: path.key });
        return notFound(req);
      case "file":
        return await serveFile(req, { path: found.real, name: path.key });
      case "directory": {
        if (!config.listing) {
          logger.debug("files: directory without listing", { path: path.key });
          return notFound(req);
        }
        if (!path.directory) {
          const last = path.segments[path.segments.length - 1];
          return new Response(null, {
            status: 301,
            headers: { location: `${encodeURIComponent(last)}/`, "cache-control": "no-cache" },
          });
        }
        const shown = path.segments.length ? `/${path.key}/` : "/";
        return listingResponse(req, await readListing(found.real, found.rootReal, shown));
      }
      case "missing":
        if (!cache || path.directory) {
          logger.debug("files: not found", { path: path.key });
          return notFound(req);
        }
        return await fromCache(req, path);
    }
  };

  return {
    async handle(req: Request, raw: string): Promise<Response> {
      try {
        return await handle(req, raw);
      } catch (err) {
        if (isAbsent(err)) return notFound(req); // removed while being looked at
        const e = toJwError(err);
        if (!(err instanceof JwError) || e.code === "internal") {
          logger.error("files: request failed", {
            path: raw.slice(0, 256),
            error: e.message,
            cause: e.cause instanceof Error ? e.cause.message : undefined,
          });
        }
        return errorResponse(req, 500, "internal", "internal error");
      }
    },
    async close(): Promise<void> {
      closed = true;
      await cache?.close();
    },
    [Symbol.asyncDispose](): Promise<void> {
      return this.close();
    },
  };
}
