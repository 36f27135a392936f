/**
 * The `files` section of the server config: the file service under `/files/`.
 *
 * ```yaml
 * files:
 *   root: /srv/jw/files            # without it the service is off
 *   listing: true
 *   upstreams: [https://mirror.example.com/jw, https://backup.example.com/jw]
 *   maxBytes: 2GiB
 *   upstreamTimeout: 1m
 * ```
 *
 * A file missing under `root` is looked up at each upstream in order, kept in `cache` with its
 * sha256 and served from there afterwards. Use the schema as `files: FilesConfig.prefault({})`
 * and the cache directory {@link filesCacheDir} gives.
 *
 * @module
 */
import { posix } from "node:path";
import { z } from "zod";
import { Duration, Size } from "./types.ts";

/** An absolute directory path, normalised (no trailing slash, no `.` or `..`). */
const AbsoluteDir = z.string().transform((v, ctx) => {
  if (v.includes("\0") || !posix.isAbsolute(v)) {
    ctx.addIssue({
      code: "custom",
      message: `expected an absolute directory like "/srv/jw/files", got ${JSON.stringify(v)}`,
    });
    return z.NEVER;
  }
  const normal = posix.normalize(v);
  return normal.length > 1 ? normal.replace(/\/+$/, "") : normal;
});

/**
 * An upstream base URL: http or https, no credentials, query or fragment. Parses to the URL
 * without its trailing slashes, so `${base}/${path}` is the file's URL.
 */
const UpstreamUrl = z.string().transform((v, ctx) => {
  let url: URL | undefined;
  try {
    url = new URL(v);
  } catch {
    // reported below
  }
  let problem: string | undefined;
  if (!url || (url.protocol !== "http:" && url.protocol !== "https:")) {
    problem = "expected an http:// or https:// base URL";
  } else if (url.username || url.password) {
    problem = "credentials in an upstream URL are not supported";
  } else if (url.search || url.hash || v.includes("?") || v.includes("#")) {
    problem = "an upstream base URL takes no ?query or #fragment";
  }
  if (problem) {
    ctx.addIssue({ code: "custom", message: `${problem}, got ${JSON.stringify(v)}` });
    return z.NEVER;
  }
  return url!.href.replace(/\/+$/, "");
});

/** The file service's config. Every field documents its default. */
export const FilesConfig = z.object({
  /**
   * Directory served under `/files/`; symlinks are followed only while they stay inside it.
   * Default: none, and then the service is off (every request gets 404 saying so).
   */
  root: AbsoluteDir.optional(),
  /**
   * Answer a directory with a listing of its entries (HTML, or JSON for
   * `Accept: application/json`) instead of 404. Default false.
   */
  listing: z.boolean().default(false),
  /**
   * Base URLs asked, in order, for a file missing under `root` (`${base}/${path}`); what one of
   * them has is kept in `cache`. Default [] (no upstreams: a missing file is 404).
   */
  upstreams: z.array(UpstreamUrl).default([]),
  /** Directory where files fetched from upstreams are kept. Default: `DATA/files-cache`. */
  cache: AbsoluteDir.optional(),
  /** Largest file taken from an upstream; a bigger one is refused and not kept. Default "1GiB". */
  maxBytes: Size.prefault("1GiB"),
  /**
   * Longest wait for an upstream's answer, and between two pieces of its body. Default "30s".
   */
  upstreamTimeout: Duration.prefault("30s"),
}).strict();
export type FilesConfig = z.output<typeof FilesConfig>;

/** The cache directory to use: `config.cache`, else `files-cache` under the data directory. */
export function filesCacheDir(config: FilesConfig, dataDir: string): string {
  return config.cache ?? posix.join(dataDir, "files-cache");
}
