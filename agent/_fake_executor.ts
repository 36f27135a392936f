/**
 * A recording fake {@link CommandExecutor} for tests: processes are driven by the test
 * (write lines, exit) or by a behaviour function given at construction.
 *
 * @module
 */
import { JwError } from "../shared/errors.ts";
import type { CommandExecutor, ExitStatus, Process, SpawnSpec } from "./executor.ts";
import { Queue } from "./_queue.ts";

/** Runs when a fake process is spawned; may write output and exit it right away. */
export type FakeBehaviour = (proc: FakeProcess) => void;

/** A process whose output and exit the test controls. A kill ends it with that signal. */
export class FakeProcess implements Process {
  readonly pid: number;
  readonly spec: SpawnSpec;
  readonly stdout: Queue<string> = new Queue();
  readonly stderr: Queue<string> = new Queue();
  readonly status: Promise<ExitStatus>;
  /** Signals received, in order. */
  readonly kills: string[] = [];
  #resolve!: (s: ExitStatus) => void;
  #exited = false;

  constructor(pid: number, spec: SpawnSpec) {
    this.pid = pid;
    this.spec = spec;
    this.status = new Promise((resolve) => (this.#resolve = resolve));
  }

  /** True after {@link exit}. */
  get exited(): boolean {
    return this.#exited;
  }

  /** Writes lines to stdout. */
  out(...lines: string[]): this {
    for (const line of lines) this.stdout.push(line);
    return this;
  }

  /** Writes lines to stderr. */
  err(...lines: string[]): this {
    for (const line of lines) this.stderr.push(line);
    return this;
  }

  /** Closes both streams and ends the process. Later calls are ignored. */
  exit(code: number | null, signal: string | null = null): void {
    if (this.#exited) return;
    this.#exited = true;
    this.stdout.end();
    this.stderr.end();
    this.#resolve({ code, signal });
  }

  kill(signal: Deno.Signal = "SIGTERM"): void {
    this.kills.push(signal);
    this.exit(null, signal);
  }
}

/** Records every spawn; `failWith` makes the next spawns throw. */
export class FakeExecutor implements CommandExecutor {
  /** Every process started, in order. */
  readonly spawned: FakeProcess[] = [];
  /** When set, `spawn` throws it instead of starting anything. */
  failWith: JwError | undefined;
  readonly #behaviour: FakeBehaviour;
  #nextPid = 1000;
  #waiters: ((p: FakeProcess) => void)[] = [];

  /** @param behaviour runs on each new process (default: nothing, the test drives it). */
  constructor(behaviour: FakeBehaviour = () => {}) {
    this.#behaviour = behaviour;
  }

  spawn(spec: SpawnSpec): Process {
    if (this.failWith) throw this.failWith;
    const proc = new FakeProcess(this.#nextPid++, spec);
    this.spawned.push(proc);
    this.#behaviour(proc);
    for (const wake of this.#waiters.splice(0)) wake(proc);
    return proc;
  }

  /** The process spawned at index `n` (0-based), waiting for it if needed. */
  nth(n: number): Promise<FakeProcess> {
    if (this.spawned[n]) return Promise.resolve(this.spawned[n]);
    return new Promise((resolve) => {
      const check = () => {
        if (this.spawned[n]) resolve(this.spawned[n]);
        else this.#waiters.push(check);
      };
      this.#waiters.push(check);
    });
  }
}

/** A spawn failure like the real executor's for a missing program. */
export function spawnFailure(cmd: string): JwError {
  return new JwError("spawn_failed", `cannot start ${cmd}: No such file or directory`);
}
