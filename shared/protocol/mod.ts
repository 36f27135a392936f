/**
 * Every message that crosses a process boundary: agent WebSocket frames (agent.ts),
 * the operator HTTP API (operator.ts), and the codec that checks them (codec.ts).
 *
 * @module
 */
export * from "./version.ts";
export * from "./common.ts";
export * from "./agent.ts";
export * from "./codec.ts";
export * from "./operator.ts";
export * from "./script.ts";
