/**
 * Starts real `jw` processes from source with the same permissions as `deno task jw`,
 * captures their output line by line, and stops them.
 *
 * @module
 */
import { PERMISSIONS } from "../../scripts/permissions.ts";

const MAIN = new URL("../../main.ts", import.meta.url).pathname;

/** A line-buffered view of a stream that tests can wait on. */
export class LineLog {
  readonly lines: string[] = [];
  #waiters: { re: RegExp; resolve: (m: RegExpMatchArray) => void }[] = [];

  push(line: string): void {
    this.lines.push(line);
    this.#waiters = this.#waiters.filter((w) => {
      const m = line.match(w.re);
      if (m) w.resolve(m);
      return !m;
    });
  }

  /** Resolves with the first line (past or future) matching `re`; rejects after `timeoutMs`. */
  waitFor(re: RegExp, timeoutMs = 15_000): Promise<RegExpMatchArray> {
    for (const line of this.lines) {
      const m = line.match(re);
      if (m) return Promise.resolve(m);
    }
    return new Promise((resolve, reject) => {
      const waiter = {
        re,
        resolve: (m: RegExpMatchArray) => {
          clearTimeout(timer);
          resolve(m);
        },
      };
      const timer = setTimeout(() => {
        this.#waiters = this.#waiters.filter((w) => w !== waiter);
        reject(
          new Error(
            `no line matching ${re} within ${timeoutMs} ms; got:\n${this.lines.join("\n")}`,
          ),
        );
      }, timeoutMs);
      this.#waiters.push(waiter);
    });
  }

  toString(): string {
    return this.lines.join("\n");
  }
}

/** Reads `stream` as text to its end, calling `onLine` with each line (and a last unfinished one). */
export async function pumpLines(
  stream: ReadableStream<Uint8Array>,
  onLine: (line: string) => void,
): Promise<void> {
  let buffered = "";
  for await (const chunk of stream.pipeThrough(new TextDecoderStream())) {
    buffered += chunk;
    let nl: number;
    while ((nl = buffered.indexOf("\n")) >= 0) {
      onLine(buffered.slice(0, nl));
      buffered = buffered.slice(nl + 1);
    }
  }
  if (buffered) onLine(buffered);
}

function pump(stream: ReadableStream<Uint8Array>, log: LineLog): Promise<void> {
  return pumpLines(stream, (line) => log.push(line));
}

/** A running `jw` process. */
export class JwProcess implements AsyncDisposable {
  readonly stdout = new LineLog();
  readonly stderr = new LineLog();
  readonly #child: Deno.ChildProcess;
  readonly #pumps: Promise<void>[];
  readonly status: Promise<Deno.CommandStatus>;

  constructor(args: string[], env: Record<string, string> = {}) {
    this.#child = new Deno.Command(Deno.execPath(), {
      args: ["run", ...PERMISSIONS, MAIN, ...args],
      env: { NO_COLOR: "1", ...env },
      stdin: "null",
      stdout: "piped",
      stderr: "piped",
    }).spawn();
    this.#pumps = [pump(this.#child.stdout, this.stdout), pump(this.#child.stderr, this.stderr)];
    this.status = this.#child.status;
  }

  get pid(): number {
    return this.#child.pid;
  }

  /** Sends `signal` and waits for the process and its output to end. */
  async stop(signal: Deno.Signal = "SIGTERM"): Promise<Deno.CommandStatus> {
    try {
      this.#child.kill(signal);
    } catch {
      // already exited
    }
    const status = await this.status;
    await Promise.all(this.#pumps);
    return status;
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.stop("SIGKILL");
  }
}

/** A parsed JSON line; tests index into it freely. */
// deno-lint-ignore no-explicit-any
export type JsonLine = Record<string, any>;

/** Result of a finished `jw` invocation. */
export interface JwResult {
  code: number;
  stdout: string;
  stderr: string;
  /** stdout lines parsed as JSON (lines that are not JSON are skipped). */
  json: JsonLine[];
}

/** Runs `jw ARGS...` to completion. */
export async function runJw(
  args: string[],
  env: Record<string, string> = {},
  stdin?: string,
): Promise<JwResult> {
  const child = new Deno.Command(Deno.execPath(), {
    args: ["run", ...PERMISSIONS, MAIN, ...args],
    env: { NO_COLOR: "1", ...env },
    stdin: stdin === undefined ? "null" : "piped",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  if (stdin !== undefined) {
    const w = child.stdin.getWriter();
    await w.write(new TextEncoder().encode(stdin));
    await w.close();
  }
  const out = await child.output();
  const stdout = new TextDecoder().decode(out.stdout);
  const json: JsonLine[] = [];
  for (const line of stdout.split("\n")) {
    try {
      const v = JSON.parse(line);
      if (v && typeof v === "object") json.push(v);
    } catch {
      // not a JSON line
    }
  }
  return { code: out.code, stdout, stderr: new TextDecoder().decode(out.stderr), json };
}

/** A TCP port free on 127.0.0.1 right now (a clash with another process is the caller's to retry). */
export function freeTcpPort(): number {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const { port } = listener.addr as Deno.NetAddr;
  listener.close();
  return port;
}

/**
 * The first of `paths` that is a file: where a Debian package put a program.
 * @throws Error naming `what` and the package that scripts/install-test-deps.sh installs.
 */
export function findProgram(paths: readonly string[], what: string, pkg: string): string {
  for (const path of paths) {
    try {
      if (Deno.statSync(path).isFile) return path;
    } catch {
      // not here
    }
  }
  throw new Error(`${what} not found: run \`bash scripts/install-test-deps.sh\` (${pkg})`);
}
