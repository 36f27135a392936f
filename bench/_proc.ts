/**
 * Child processes for the benchmarks: each runs in its own process group (so stopping it
 * stops everything it started), with the open-files limit raised to the hard limit, stdout
 * read line by line and stderr appended to a log file. Also reads a process's resident
 * memory and CPU time from /proc.
 *
 * @module
 */

/** How long {@link BenchProcess.stop} waits after SIGTERM before SIGKILL. */
const STOP_GRACE_MS = 5_000;

/** Every process started and not yet stopped, so a failing run can stop them all. */
const live = new Set<BenchProcess>();

/** Lines of a stream, kept in order, that callers can wait on. */
export class Lines {
  readonly lines: string[] = [];
  #waiters: { re: RegExp; resolve: (m: RegExpMatchArray) => void }[] = [];
  #listeners = new Set<(line: string) => void>();
  #ended = false;
  #onEnd: (() => void)[] = [];

  /** Adds a line and wakes the waiters it matches. */
  push(line: string): void {
    this.lines.push(line);
    for (const listener of this.#listeners) listener(line);
    this.#waiters = this.#waiters.filter((w) => {
      const m = line.match(w.re);
      if (m) w.resolve(m);
      return !m;
    });
  }

  /** Marks the stream finished: pending waits fail at once. */
  end(): void {
    this.#ended = true;
    for (const fn of this.#onEnd.splice(0)) fn();
  }

  /** Calls `listener` for every later line; returns the unsubscribe function. */
  onLine(listener: (line: string) => void): () => void {
    this.#listeners.add(listener);
    return () => this.#listeners.delete(listener);
  }

  /**
   * The first line matching `re` at index `from` (default 0) or later, past or future.
   * Rejects after `timeoutMs`, or when the stream ends first.
   */
  waitFor(re: RegExp, timeoutMs: number, from = 0): Promise<RegExpMatchArray> {
    const what = `line matching ${re}`;
    for (const line of this.lines.slice(from)) {
      const m = line.match(re);
      if (m) return Promise.resolve(m);
    }
    return new Promise((resolve, reject) => {
      const fail = (why: string) => {
        this.#waiters = this.#waiters.filter((w) => w !== waiter);
        reject(new Error(`no ${what}: ${why}; last lines:\n${this.lines.slice(-10).join("\n")}`));
      };
      const timer = setTimeout(() => fail(`none within ${timeoutMs} ms`), timeoutMs);
      const waiter = {
        re,
        resolve: (m: RegExpMatchArray) => {
          clearTimeout(timer);
          resolve(m);
        },
      };
      if (this.#ended) {
        clearTimeout(timer);
        return fail("the stream ended");
      }
      this.#onEnd.push(() => {
        clearTimeout(timer);
        fail("the stream ended");
      });
      this.#waiters.push(waiter);
    });
  }
}

/** Options for {@link spawnProcess}. */
export interface SpawnOptions {
  /** File that receives the process's stderr (appended). */
  stderrFile: string;
  /** Extra environment variables. */
  env?: Record<string, string>;
  /** Keep a pipe to the process's stdin (default false: stdin is /dev/null). */
  stdin?: boolean;
}

/**
 * A running child in its own process group. `pid` is the program itself (the shell that
 * raised the limit `exec`s it), so /proc readings are the program's own.
 */
export class BenchProcess implements AsyncDisposable {
  readonly name: string;
  readonly stdout = new Lines();
  readonly status: Promise<Deno.CommandStatus>;
  readonly stderrFile: string;
  readonly #child: Deno.ChildProcess;
  readonly #pump: Promise<void>;
  readonly #stdin?: WritableStreamDefaultWriter<Uint8Array>;
  #stopping?: Promise<Deno.CommandStatus>;

  constructor(name: string, argv: string[], options: SpawnOptions) {
    this.name = name;
    this.stderrFile = options.stderrFile;
    this.#child = new Deno.Command("bash", {
      // Soft open-files limit up to the hard limit (raising the hard limit needs
      // CAP_SYS_RESOURCE, which a container may not have), then become the program.
      args: [
        "-c",
        'ulimit -n "$(ulimit -Hn)" 2>/dev/null; exec "$@" 2>>"$BENCH_STDERR"',
        "bench",
        ...argv,
      ],
      env: { NO_COLOR: "1", ...options.env, BENCH_STDERR: options.stderrFile },
      stdin: options.stdin ? "piped" : "null",
      stdout: "piped",
      stderr: "null",
      detached: true,
    }).spawn();
    if (options.stdin) this.#stdin = this.#child.stdin.getWriter();
    this.status = this.#child.status;
    this.#pump = pumpLines(this.#child.stdout, this.stdout);
    live.add(this);
  }

  get pid(): number {
    return this.#child.pid;
  }

  /** Writes one line to the process's stdin. */
  async writeLine(line: string): Promise<void> {
    if (!this.#stdin) throw new Error(`${this.name}: stdin is not piped`);
    await this.#stdin.write(new TextEncoder().encode(line + "\n"));
  }

  /**
   * Stops the whole process group: `signal` first (default SIGTERM), SIGKILL after
   * {@link STOP_GRACE_MS}. Idempotent; resolves with the exit status.
   */
  stop(signal: Deno.Signal = "SIGTERM"): Promise<Deno.CommandStatus> {
    this.#stopping ??= (async () => {
      await this.#stdin?.close().catch(() => {});
      killGroup(this.pid, signal);
      const timer = setTimeout(() => killGroup(this.pid, "SIGKILL"), STOP_GRACE_MS);
      try {
        const status = await this.status;
        // The leader is gone; anything left in its group goes too.
        killGroup(this.pid, "SIGKILL");
        await this.#pump;
        return status;
      } finally {
        clearTimeout(timer);
        live.delete(this);
      }
    })();
    return this.#stopping;
  }

  /** The last `n` lines of the stderr log, for error messages. */
  async stderrTail(n = 20): Promise<string> {
    try {
      const text = await Deno.readTextFile(this.stderrFile);
      return text.split("\n").slice(-n - 1).join("\n");
    } catch {
      return "(no stderr log)";
    }
  }

  [Symbol.asyncDispose](): Promise<void> {
    return this.stop().then(() => {});
  }
}

function killGroup(pid: number, signal: Deno.Signal): void {
  try {
    Deno.kill(-pid, signal);
  } catch {
    // already gone
  }
}

async function pumpLines(stream: ReadableStream<Uint8Array>, out: Lines): Promise<void> {
  let buffered = "";
  try {
    for await (const chunk of stream.pipeThrough(new TextDecoderStream())) {
      buffered += chunk;
      let nl: number;
      while ((nl = buffered.indexOf("\n")) >= 0) {
        out.push(buffered.slice(0, nl));
        buffered = buffered.slice(nl + 1);
      }
    }
  } catch {
    // the pipe broke: the process is gone
  }
  if (buffered) out.push(buffered);
  out.end();
}

/** Starts `argv` in its own process group with the open-files limit raised. */
export function spawnProcess(name: string, argv: string[], options: SpawnOptions): BenchProcess {
  return new BenchProcess(name, argv, options);
}

/** Stops every process still running (SIGKILL), e.g. when a run fails or is interrupted. */
export async function stopAll(): Promise<void> {
  await Promise.all([...live].map((p) => p.stop("SIGKILL")));
}

/** Clock ticks per second of /proc/PID/stat times (`getconf CLK_TCK`; 100 on Linux). */
let clockTicks: number | undefined;

async function ticksPerSecond(): Promise<number> {
  if (clockTicks === undefined) {
    try {
      const out = await new Deno.Command("getconf", { args: ["CLK_TCK"] }).output();
      const n = Number(new TextDecoder().decode(out.stdout).trim());
      clockTicks = Number.isFinite(n) && n > 0 ? n : 100;
    } catch {
      clockTicks = 100;
    }
  }
  return clockTicks;
}

/** `VmRSS` from the text of /proc/PID/status, in bytes. */
export function parseVmRss(status: string): number {
  const m = status.match(/^VmRSS:\s+(\d+)\s+kB$/m);
  if (!m) throw new Error("no VmRSS line in /proc status");
  return Number(m[1]) * 1024;
}

/** utime + stime (fields 14 and 15) from the text of /proc/PID/stat, in clock ticks. */
export function parseCpuTicks(stat: string): number {
  // The command name (field 2) is in parentheses and may hold spaces: split after it.
  const rest = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  // rest[0] is field 3 (state), so field N is rest[N - 3].
  const utime = Number(rest[11]);
  const stime = Number(rest[12]);
  if (!Number.isFinite(utime) || !Number.isFinite(stime)) {
    throw new Error("cannot read utime/stime from /proc stat");
  }
  return utime + stime;
}

/**
 * Reads a file under /proc. Deno lets only `--allow-all` read /proc directly, and the
 * benchmark runs with the jw permissions, so `cat` reads it (`--allow-run`).
 */
export async function readProcFile(path: string): Promise<string> {
  const out = await new Deno.Command("cat", { args: [path], stderr: "piped" }).output();
  if (!out.success) {
    throw new Error(`cannot read ${path}: ${new TextDecoder().decode(out.stderr).trim()}`);
  }
  return new TextDecoder().decode(out.stdout);
}

/** Resident memory of `pid`, bytes. */
export async function readRss(pid: number): Promise<number> {
  return parseVmRss(await readProcFile(`/proc/${pid}/status`));
}

/** CPU time (user + system) `pid` has used so far, seconds. */
export async function readCpuSeconds(pid: number): Promise<number> {
  const ticks = parseCpuTicks(await readProcFile(`/proc/${pid}/stat`));
  return ticks / await ticksPerSecond();
}

/** Resolves after `ms` (benchmarks wait out fixed windows: settling, idle measurement). */
export function delay(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}
