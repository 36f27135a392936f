/**
 * What the agent keeps and checks for signed scripts: the store, the trusted signers, the
 * policy, and the bridge from a script's builtin calls to the command registry. The
 * commands themselves are in agent/payload/script.ts; the sandbox in shared/sandbox/.
 *
 * @module
 */
export * from "./store.ts";
export * from "./trust.ts";
export * from "./policy.ts";
export * from "./builtins.ts";
