/**
 * The server's file service under `/files/`: a root directory, optional listings, and
 * upstreams whose files are fetched once and kept in a cache.
 *
 * @module
 */
export * from "./handler.ts";
export { type CachedFile, UpstreamCache, type UpstreamCacheOptions } from "./upstream.ts";
export { fileEtag, type FileToServe, parseRange, type RangeAsked, serveFile } from "./serve.ts";
