/**
 * `jw server`: accepts agent WebSockets and operator HTTP requests.
 *
 * Public surface: {@link startServer} and the {@link JwServer} it returns. The building
 * blocks live in agents/, delegate/, auth/ and http/ (each with its own mod.ts).
 *
 * @module
 */
export { type JwServer, type ServerDeps, startServer } from "./server.ts";
