/**
 * Content types of served files, by extension.
 *
 * @module
 */

const TEXT = "; charset=utf-8";

/** Lower-case extension (without the dot) → content type. */
const TYPES: Record<string, string> = {
  txt: "text/plain" + TEXT,
  log: "text/plain" + TEXT,
  asc: "text/plain" + TEXT,
  sha256: "text/plain" + TEXT,
  md: "text/markdown" + TEXT,
  csv: "text/csv" + TEXT,
  json: "application/json",
  yaml: "application/yaml",
  yml: "application/yaml",
  xml: "application/xml",
  sh: "application/x-sh",
  html: "text/html" + TEXT,
  htm: "text/html" + TEXT,
  css: "text/css" + TEXT,
  js: "text/javascript" + TEXT,
  mjs: "text/javascript" + TEXT,
  ts: "text/typescript" + TEXT,
  wasm: "application/wasm",
  tar: "application/x-tar",
  gz: "application/gzip",
  tgz: "application/gzip",
  bz2: "application/x-bzip2",
  xz: "application/x-xz",
  zst: "application/zstd",
  zip: "application/zip",
  deb: "application/vnd.debian.binary-package",
  rpm: "application/x-rpm",
  iso: "application/x-iso9660-image",
  png: "image/png",
  jpg: "image/jpeg",
  jpeg: "image/jpeg",
  gif: "image/gif",
  webp: "image/webp",
  ico: "image/x-icon",
  svg: "image/svg+xml",
  pdf: "application/pdf",
};

/** What is served for an unknown extension. */
export const DEFAULT_CONTENT_TYPE = "application/octet-stream";

/** The content type for a file name: by its last extension, case-insensitive. */
export function contentTypeFor(name: string): string {
  const base = name.slice(name.lastIndexOf("/") + 1);
  const dot = base.lastIndexOf(".");
  if (dot <= 0) return DEFAULT_CONTENT_TYPE;
  return TYPES[base.slice(dot + 1).toLowerCase()] ?? DEFAULT_CONTENT_TYPE;
}
