/**
 * The Deno adapter of {@link CommandExecutor}: `Deno.Command`, no shell, stdin closed,
 * stdout/stderr piped and split into lines. The child is `detached`, so it leads its own
 * process group and `kill` reaches everything it started.
 *
 * @module
 */
import { type Clock, realClock } from "../shared/clock.ts";
import { JwError } from "../shared/errors.ts";
import type { CommandExecutor, ExitStatus, Process, SpawnSpec } from "./executor.ts";
import { DEFAULT_MAX_LINE_CHARS, LineReader } from "./lines.ts";

/** Options for {@link createDenoExecutor}. */
export interface DenoExecutorOptions {
  /** Timers for the drain grace. Default `realClock`. */
  clock?: Clock;
  /**
   * After the process exits, how long its output pipes may stay open (held by children it
   * left running) before reading stops, so a finished command is not held up by a daemon it
   * started. Default 2000 ms.
   */
  drainGraceMs?: number;
  /** Longest output line; longer ones arrive in chunks. Default 65536 characters. */
  maxLineChars?: number;
}

/** The variables every child gets: PATH, LANG and HOME from the agent (or safe defaults). */
export function baseEnvironment(): Record<string, string> {
  const env: Record<string, string> = {
    PATH: Deno.env.get("PATH") ?? "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    LANG: Deno.env.get("LANG") ?? "C.UTF-8",
  };
  const home = Deno.env.get("HOME");
  if (home) env.HOME = home;
  return env;
}

/**
 * Creates the real executor. Needs `--allow-run` for the programs started.
 * Each process is independent; `spawn` may be called concurrently.
 */
export function createDenoExecutor(options: DenoExecutorOptions = {}): CommandExecutor {
  const clock = options.clock ?? realClock;
  const grace = options.drainGraceMs ?? 2000;
  const maxLine = options.maxLineChars ?? DEFAULT_MAX_LINE_CHARS;
  return {
    spawn(spec: SpawnSpec): Process {
      let child: Deno.ChildProcess;
      try {
        child = new Deno.Command(spec.cmd, {
          args: spec.args,
          cwd: spec.cwd,
          // A clean environment: the agent's own variables never leak into children, and only
          // what the caller passes (a base PATH/LANG/HOME plus vetted extras) is set.
          clearEnv: true,
          env: { ...baseEnvironment(), ...spec.env },
          stdin: "null",
          stdout: "piped",
          stderr: "piped",
          detached: true,
        }).spawn();
      } catch (err) {
        throw new JwError("spawn_failed", `cannot start ${spec.cmd}: ${(err as Error).message}`, {
          cause: err,
          detail: { cmd: spec.cmd },
        });
      }
      const stdout = new LineReader(child.stdout, maxLine);
      const stderr = new LineReader(child.stderr, maxLine);
      const drained = Promise.all([stdout.done, stderr.done]);
      // Gone = exited and pipes closed: until then its group may still hold processes.
      let gone = false;
      void Promise.all([child.status, drained]).then(() => (gone = true));

      const status = child.status.then((s): ExitStatus => {
        if (!stdout.finished || !stderr.finished) {
          const timer = clock.setTimeout(() => {
            void stdout.cancel();
            void stderr.cancel();
          }, grace);
          void drained.then(() => clock.clearTimeout(timer));
        }
        return s.signal ? { code: null, signal: s.signal } : { code: s.code, signal: null };
      });

      return {
        pid: child.pid,
        stdout,
        stderr,
        status,
        kill(signal: Deno.Signal = "SIGTERM") {
          if (gone) return;
          try {
            Deno.kill(-child.pid, signal);
          } catch {
            try {
              child.kill(signal);
            } catch {
              // already exited
            }
          }
        },
      };
    },
  };
}
