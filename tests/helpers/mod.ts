/**
 * Test helpers: real `jw` processes, a test fleet, and a raw-frame agent.
 *
 * @module
 */
export * from "./process.ts";
export * from "./fleet.ts";
export * from "./raw_agent.ts";
export * from "./proxy.ts";
