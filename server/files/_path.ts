/**
 * Request paths of the file service: the raw, percent-encoded part of the URL after `/files/`
 * is checked and split into plain segments before anything touches the filesystem.
 *
 * @module
 */

/** Longest raw request path accepted, characters. */
export const MAX_PATH_CHARS = 4096;
/** Longest segment after decoding, bytes (the usual file name limit). */
export const MAX_SEGMENT_BYTES = 255;

/** A request path that passed every check. */
export interface FilesPath {
  /** Decoded segments, none empty, `.`, `..`, or with `/`, `\`, NUL or control characters. */
  segments: string[];
  /** The request ended with `/` (or was empty): it asks for a directory. */
  directory: boolean;
  /** The segments joined with `/`: the key of the file in the cache and in messages. */
  key: string;
  /** The segments percent-encoded again, joined with `/`: the path asked of upstreams. */
  encoded: string;
}

/** Why a request path was refused; `reason` is safe to show (it never names a real path). */
export interface PathRefusal {
  refused: string;
}

const encoder = new TextEncoder();

/**
 * Checks and decodes a raw request path. Percent-encoding is decoded exactly once, per
 * segment, so `%2e%2e` is `..` (refused) while `%252e%252e` is the name `%2e%2e`.
 *
 * Refused: malformed percent-encoding; a path that is absolute once decoded; `.` or `..`
 * segments (encoded or not); `/` inside a segment (`%2f`); backslashes; NUL and other control
 * characters; empty segments (`a//b`); overlong paths and segments.
 */
export function parseFilesPath(raw: string): FilesPath | PathRefusal {
  if (raw.length > MAX_PATH_CHARS) return { refused: "path too long" };
  let whole: string;
  try {
    whole = decodeURIComponent(raw);
  } catch {
    return { refused: "bad percent-encoding" };
  }
  if (whole.startsWith("/") || whole.startsWith("\\")) return { refused: "absolute path" };
  if (whole.includes("\\")) return { refused: "backslash in path" };
  if (whole.includes("\0")) return { refused: "NUL in path" };
  // deno-lint-ignore no-control-regex
  if (/[\x00-\x1f\x7f]/.test(whole)) return { refused: "control character in path" };
  const parts = raw === "" ? [] : raw.split("/");
  const directory = raw === "" || raw.endsWith("/");
  if (directory && parts.length > 0) parts.pop();
  const segments: string[] = [];
  for (const part of parts) {
    if (part === "") return { refused: "empty path segment" };
    const segment = decodeURIComponent(part);
    if (segment.includes("/")) return { refused: "encoded slash in path" };
    if (segment === "." || segment === "..") return { refused: "dot segment in path" };
    if (encoder.encode(segment).length > MAX_SEGMENT_BYTES) {
      return { refused: "path segment too long" };
    }
    segments.push(segment);
  }
  return {
    segments,
    directory,
    key: segments.join("/"),
    encoded: segments.map(encodeURIComponent).join("/"),
  };
}

/** True when `real` is `root` or inside it (both real, normalised paths). */
export function isInside(real: string, root: string): boolean {
  if (real === root) return true;
  return real.startsWith(root.endsWith("/") ? root : root + "/");
}
