/**
 * The CommandExecutor seam: how the agent starts programs. Never through a shell: a
 * program path and an argument vector. Implementations: the Deno adapter
 * (deno_executor.ts), the whitelist wrapper here, and a fake for tests.
 *
 * @module
 */
import { posix } from "node:path";
import { JwError } from "../shared/errors.ts";
import { type Logger, silentLogger } from "../shared/log.ts";

/** What to start. */
export interface SpawnSpec {
  /** Program path (the whitelist wants it absolute). Never interpreted by a shell. */
  cmd: string;
  /** Arguments, passed as-is. */
  args: string[];
  /** Working directory. Default: the agent's. */
  cwd?: string;
  /** Extra environment variables, added to the agent's environment. */
  env?: Record<string, string>;
}

/** How a process ended: `code` when it exited, `signal` (e.g. "SIGKILL") when killed. */
export interface ExitStatus {
  code: number | null;
  signal: string | null;
}

/** A running process. */
export interface Process {
  /** OS process id (also its process group id for the Deno executor). */
  readonly pid: number;
  /**
   * Standard output as lines without terminators; a final partial line is yielded too.
   * Iterate once, to the end (or break): an unread stream holds the pipe open.
   */
  readonly stdout: AsyncIterable<string>;
  /** Standard error, like {@link Process.stdout}. */
  readonly stderr: AsyncIterable<string>;
  /** Resolves once when the process ends. Never rejects. */
  readonly status: Promise<ExitStatus>;
  /** Sends a signal to the process and everything it started. No-op once it is gone. */
  kill(signal?: Deno.Signal): void;
}

/** Starts processes. */
export interface CommandExecutor {
  /**
   * Starts a process.
   * @throws JwError `spawn_failed` when it cannot start (no such file, not executable,
   *   bad cwd), `not_whitelisted` from the whitelist wrapper.
   */
  spawn(spec: SpawnSpec): Process;
}

/**
 * Wraps `inner` so only programs on `allowRun` start. `cmd` must be absolute; `.` and `..`
 * segments and repeated slashes are normalised away, then the literal path must equal a
 * (normalised) entry. Symlinks are not resolved: a link to a listed program is not listed.
 * The normalised path is what `inner` starts. Each start is logged at debug (`cmd`, `pid`),
 * each refusal at warn (`cmd`, `reason`); arguments and environment are never logged.
 * @param logger where those lines go. Default: {@link silentLogger}.
 */
export function createWhitelistExecutor(
  inner: CommandExecutor,
  allowRun: readonly string[],
  logger: Logger = silentLogger,
): CommandExecutor {
  const allowed = new Set(allowRun.filter((p) => p.startsWith("/")).map((p) => posix.normalize(p)));
  const refuse = (cmd: string, reason: string, message: string): never => {
    logger.warn("refused to start a program", { cmd, reason });
    throw new JwError("not_whitelisted", message, { detail: { cmd } });
  };
  return {
    spawn(spec: SpawnSpec): Process {
      if (!spec.cmd.startsWith("/")) {
        refuse(
          spec.cmd,
          "not an absolute path",
          `"${spec.cmd}" is not an absolute path: exec.run needs the program's absolute path`,
        );
      }
      const cmd = posix.normalize(spec.cmd);
      if (!allowed.has(cmd)) {
        refuse(cmd, "not on allowRun", `${cmd} is not on this agent's allowRun list`);
      }
      const proc = inner.spawn({ ...spec, cmd });
      logger.debug("started a program", { cmd, pid: proc.pid });
      return proc;
    },
  };
}
