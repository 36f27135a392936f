/**
 * Keys, the handshake challenge signature, and digests.
 *
 * @module
 */
export * from "./keys.ts";
export * from "./challenge.ts";
export * from "./digest.ts";
export * from "./script.ts";
