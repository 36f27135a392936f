/**
 * The HTTP edge: the hono app and the Deno WebSocket adapter for agents.
 *
 * @module
 */
export * from "./app.ts";
export * from "./deno_agent_socket.ts";
