/**
 * `script.register`, `script.run`, `script.delete` and `script.list`: signed JavaScript that
 * runs in a sandbox with no more than its signed header asks and the agent's policy allows.
 *
 * - `script.register {script}` verifies the signature against the agent's own trusted
 *   signers (never a key from the server), checks the header's permissions against the policy,
 *   and stores the file.
 * - `script.run {name, version?, args?}` loads it, verifies the signature again, checks the
 *   permissions again (the policy or trust list may have changed), then runs it in the
 *   sandbox (shared/sandbox/): its `emit`, `log` and printed lines become this run's replies.
 * - `script.delete {name, version?}` removes it; deleting what is not there is not an error.
 *
 * Every register, verify failure, permission refusal, run (at its start, and again when it
 * ends with an error) and delete is audited.
 *
 * @module
 */
import { z } from "zod";
import type { AuditEvent } from "../../shared/db/mod.ts";
import { JwError, toJwError } from "../../shared/errors.ts";
import { verifyScript } from "../../shared/crypto/script.ts";
import { MAX_SCRIPT_BYTES, ScriptName, type ScriptPermissions } from "../../shared/protocol/mod.ts";
import type { SandboxResult, SandboxRun } from "../../shared/sandbox/mod.ts";
import { callableFromScripts, callBuiltin, limitPrograms } from "../scripts/builtins.ts";
import { checkPermissions, type ScriptPolicy } from "../scripts/policy.ts";
import type { ScriptStore } from "../scripts/store.ts";
import type { TrustedSigners } from "../scripts/trust.ts";
import { type Command, defineCommand, type Registry, type RunContext } from "./commands.ts";

/** What the script commands need. */
export interface ScriptCommandOptions {
  /** This agent's id (the audit target). */
  agentId: string;
  store: ScriptStore;
  /** The agent's trusted signers (from its own config). */
  trusted: TrustedSigners;
  /** The most a script may be granted. */
  policy: ScriptPolicy;
  /** Heap limit per script run, MiB. */
  memoryMb: number;
  /** The agent's registry behind its ACL: what builtin calls go through. */
  registry: Registry;
  audit: { append(event: AuditEvent): void };
  /** Runs a script in the sandbox: `runSandboxed` from shared/sandbox/. */
  sandbox: (run: SandboxRun) => Promise<SandboxResult>;
}

const Version = z.number().int().min(1).max(2 ** 31 - 1);

/** Arguments of `script.register`. */
export const ScriptRegisterArgs = z.object({
  /** The whole signed script file. */
  script: z.string().min(1).max(MAX_SCRIPT_BYTES),
  /** When given, must be the header's name. */
  name: ScriptName.optional(),
  /** When given, must be the header's version. */
  version: Version.optional(),
}).strict();
export type ScriptRegisterArgs = z.output<typeof ScriptRegisterArgs>;

/** Arguments of `script.run`. */
export const ScriptRunArgs = z.object({
  name: ScriptName,
  /** Default: the highest version the agent holds. */
  version: Version.optional(),
  /** What the script sees as its `args` global. Default {}. */
  args: z.record(z.string(), z.unknown()).default({}),
}).strict();
export type ScriptRunArgs = z.output<typeof ScriptRunArgs>;

/** Arguments of `script.delete`. */
export const ScriptDeleteArgs = z.object({
  name: ScriptName,
  /** Default: every version. */
  version: Version.optional(),
}).strict();
export type ScriptDeleteArgs = z.output<typeof ScriptDeleteArgs>;

/** Arguments of `script.list` (none). */
export const ScriptListArgs = z.object({}).strict();

/** Creates the script commands. */
export function createScriptCommands(options: ScriptCommandOptions): Command[] {
  const { store, trusted, policy, audit } = options;
  const record = (ctx: RunContext, event: Omit<AuditEvent, "actor" | "target">) =>
    audit.append({ actor: `server:${ctx.job.createdBy}`, target: options.agentId, ...event });

  /** Verifies `text` against the trusted signers; a failure is audited as `script.verify`. */
  const verify = async (ctx: RunContext, text: string, key: string) => {
    try {
      return await verifyScript(text, trusted.lookup);
    } catch (err) {
      const e = toJwError(err);
      record(ctx, {
        action: "script.verify",
        key,
        outcome: "denied",
        reason: `${e.code}: ${e.message}`,
      });
      throw e;
    }
  };

  /** Checks permissions against the policy; a refusal is audited under `action`. */
  const permit = (
    ctx: RunContext,
    action: string,
    name: string,
    permissions: ScriptPermissions,
  ) => {
    try {
      checkPermissions(name, permissions, policy);
    } catch (err) {
      const e = toJwError(err);
      record(ctx, { action, key: name, outcome: "denied", reason: `${e.code}: ${e.message}` });
      throw e;
    }
  };

  const register = defineCommand({
    key: "script.register",
    description: "verifies a signed script against this agent's trusted signers and stores it",
    args: ScriptRegisterArgs,
    async run(ctx, args) {
      const script = await verify(ctx, args.script, "script.register");
      const { name, version } = script.header;
      const mismatch = (args.name !== undefined && args.name !== name) ||
        (args.version !== undefined && args.version !== version);
      if (mismatch) {
        throw new JwError(
          "invalid_args",
          `the script is ${name} version ${version}, not ${args.name ?? name} version ${
            args.version ?? version
          }`,
        );
      }
      permit(ctx, "script.register", name, script.header.permissions);
      const created = store.put({
        name,
        version,
        sha256: script.sha256,
        signer: script.signer,
        text: script.text,
        registeredAt: ctx.clock.now(),
      });
      record(ctx, {
        action: "script.register",
        key: name,
        args: { name, version, sha256: script.sha256, signer: script.signer },
        outcome: "ok",
        reason: `${name}@${version}${created ? "" : " (already registered)"}`,
      });
      return {
        error: null,
        data: { name, version, sha256: script.sha256, signer: script.signer, created },
      };
    },
  });

  const run = defineCommand({
    key: "script.run",
    description: "runs a registered script in a sandbox limited to its signed permissions",
    args: ScriptRunArgs,
    async run(ctx, args) {
      const stored = store.get(args.name, args.version);
      const script = await verify(ctx, stored.text, "script.run");
      const { name, version, permissions, timeout } = script.header;
      permit(ctx, "script.run", name, permissions);
      record(ctx, {
        action: "script.run",
        key: name,
        args: { name, version, args: args.args },
        outcome: "ok",
        reason: `${name}@${version}`,
      });
      const calls = new AbortController();
      const signal = AbortSignal.any([ctx.signal, calls.signal]);
      const executor = limitPrograms(ctx.executor, name, permissions.run);
      try {
        const result = await options.sandbox({
          source: script.text,
          name,
          permissions: { read: permissions.read, write: permissions.write, net: permissions.net },
          timeoutMs: timeout,
          memoryMb: options.memoryMb,
          commands: options.registry.keys().filter(callableFromScripts),
          globals: {
            args: args.args,
            meta: ctx.job.meta ?? null,
            job: { id: ctx.job.id, key: ctx.job.key, run: ctx.job.run },
          },
          host: {
            call: (key, callArgs, _signal, onEvent) =>
              callBuiltin(
                options.registry,
                ctx,
                { executor, paths: { read: permissions.read, write: permissions.write } },
                signal,
                key,
                callArgs,
                onEvent,
              ),
            emit: (data) => ctx.emitData(data),
            log: (level, message, fields) => ctx.log(level, message, fields),
            print: (stream, line) => ctx.emitText(stream, line),
          },
          signal: ctx.signal,
        });
        if (result.error) {
          // What the sandbox refused (a read outside its permissions, the time or memory
          // limit) ends the run; the operator sees the error, the audit log keeps it.
          record(ctx, {
            action: "script.run",
            key: name,
            outcome: "error",
            reason: `${name}@${version}: ${result.error.code}: ${result.error.message}`.slice(
              0,
              1024,
            ),
          });
        }
        return { error: result.error };
      } finally {
        calls.abort(new JwError("closed", `script "${name}" ended`));
      }
    },
  });

  const remove = defineCommand({
    key: "script.delete",
    description: "removes a script (every version, or one) from this agent",
    args: ScriptDeleteArgs,
    run(ctx, args) {
      const versions = store.delete(args.name, args.version);
      record(ctx, {
        action: "script.delete",
        key: args.name,
        outcome: "ok",
        reason: versions.length
          ? `${args.name}@${versions.join(",")}`
          : `${args.name}: not registered`,
      });
      return Promise.resolve({ error: null, data: { deleted: versions.length, versions } });
    },
  });

  const list = defineCommand({
    key: "script.list",
    description: "lists the scripts registered on this agent",
    args: ScriptListArgs,
    run() {
      return Promise.resolve({ error: null, data: { scripts: store.list() } });
    },
  });

  return [register, run, remove, list] as Command[];
}
