/**
 * Agent connections: the handshake, the per-socket state machine, the registry of live
 * agents, and their persisted records.
 *
 * @module
 */
export * from "./handshake.ts";
export * from "./agent_store.ts";
export * from "./registry.ts";
export * from "./connection.ts";
export * from "./gateway.ts";
