/**
 * Config schemas per component and the merge of defaults < file < env < flags.
 *
 * @module
 */
export * from "./types.ts";
export * from "./load.ts";
export * from "./server.ts";
export * from "./agent.ts";
export * from "./client.ts";
