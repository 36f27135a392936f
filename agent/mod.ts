/**
 * `jw agent`: keeps one WebSocket to the server that owns it and runs commands.
 *
 * The entry point is {@link startAgent}. The seams (transport, executor) are exported for
 * the CLI and tests, with the command ACL and the shapes `job.list` / `job.runs` answer with
 * ({@link JobSummary}, {@link RunRecord}).
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
export {
  createDiscovery,
  type Discovery,
  type DiscoveryOptions,
  type DnsDiscoveryOptions,
} from "./discovery.ts";
export { type CommandAcl, createCommandAcl, withAcl } from "./acl.ts";
export type { JobSummary, RunRecord } from "./jobs/mod.ts";
export { OUTBOX_JOB } from "./outbox.ts";
