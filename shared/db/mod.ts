/**
 * sqlite access and the audit log.
 *
 * @module
 */
export * from "./sqlite.ts";
export * from "./audit.ts";
