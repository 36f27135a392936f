/**
 * `jw agent`: keeps one WebSocket to the server that owns it and runs commands.
 *
 * The entry point is {@link startAgent}. The seams (transport, executor) are exported for
 * the CLI and tests.
 *
 * @module
 */
export { type AgentDeps, type JwAgent, startAgent } from "./agent.ts";
export type { CloseInfo, Socket, Transport } from "./transport.ts";
export { createDenoTransport } from "./deno_transport.ts";
export {
  type CommandExecutor,
  createWhitelistExecutor,
  type ExitStatus,
  type Process,
  type SpawnSpec,
} from "./executor.ts";
export { createDenoExecutor, type DenoExecutorOptions } from "./deno_executor.ts";
export { type AgentIdentity, loadIdentity } from "./identity.ts";
export { AGENT_PATH, agentUrl } from "./url.ts";
