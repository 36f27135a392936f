/**
 * The event pipeline for replies: the in-process reply bus and command dispatch.
 *
 * @module
 */
export * from "./channel.ts";
export * from "./bus.ts";
export * from "./dispatch.ts";
