/**
 * A private Mosquitto broker on a free loopback port, for tests of MQTT outputs. Needs the
 * Debian package `mosquitto` (scripts/install-test-deps.sh installs it). It runs in the
 * foreground with its own config file: one listener on 127.0.0.1, anonymous clients allowed,
 * persistence off unless asked, and a large `max_queued_messages` (Mosquitto's default of
 * 1000 silently drops QoS 1 messages for a subscriber that falls behind).
 *
 * ```ts
 * await using broker = await startMosquitto();
 * // … publish to broker.url …
 * await broker.stop();    // an outage
 * await broker.restart(); // the same port again
 * ```
 *
 * @module
 */
import { findProgram, freeTcpPort, pumpLines } from "./process.ts";

/** Options for {@link startMosquitto}. */
export interface MosquittoOptions {
  /**
   * Keep retained messages and persistent sessions across {@link Mosquitto.restart} (in the
   * broker's temporary directory). Default false.
   */
  persistence?: boolean;
  /** `max_queued_messages` per client. Default 100000. */
  maxQueuedMessages?: number;
  /** More lines for the config file (e.g. `max_inflight_messages 10`). Default none. */
  extraConfig?: string[];
  /** Longest wait for the broker to accept connections, in ms. Default 10000. */
  startTimeoutMs?: number;
}

const MOSQUITTO_PATHS = ["/usr/sbin/mosquitto", "/usr/bin/mosquitto", "/usr/local/sbin/mosquitto"];

/** A running broker process. */
interface Run {
  child: Deno.ChildProcess;
  /** Reads its stderr into the log; ends when it exits. */
  pump: Promise<void>;
}

/** Someone waiting for a log line. */
interface LogWaiter {
  re: RegExp;
  resolve: (line: string) => void;
  reject: (err: Error) => void;
}

/**
 * A Mosquitto broker started by {@link startMosquitto}. Not safe to stop and restart from
 * several tasks at once.
 */
export class Mosquitto implements AsyncDisposable {
  /** The port it listens on (127.0.0.1); the same after {@link restart}. */
  readonly port: number;
  /** Everything every run of the broker logged, line by line. */
  readonly log: string[] = [];
  readonly #dir: string;
  readonly #options: MosquittoOptions;
  #run: Run | null = null;
  #waiters: LogWaiter[] = [];
  #paused = false;
  #closed = false;

  constructor(port: number, dir: string, options: MosquittoOptions) {
    this.port = port;
    this.#dir = dir;
    this.#options = options;
  }

  /** `mqtt://127.0.0.1:PORT`. */
  get url(): string {
    return `mqtt://127.0.0.1:${this.port}`;
  }

  /** The broker's PID, or null while it is stopped. */
  get pid(): number | null {
    return this.#run?.child.pid ?? null;
  }

  /** True while the broker process runs (paused or not). */
  get running(): boolean {
    return this.#run !== null;
  }

  /**
   * Starts the broker on {@link port} and resolves once it accepts connections.
   * @throws Error when it exits or does not listen within the start timeout.
   */
  async start(): Promise<void> {
    if (this.#closed) throw new Error("mosquitto: closed");
    if (this.#run) return;
    const config = `${this.#dir}/mosquitto.conf`;
    await Deno.mkdir(this.#dir, { recursive: true });
    await Deno.writeTextFile(config, this.#config());
    const child = new Deno.Command(findProgram(MOSQUITTO_PATHS, "mosquitto", "mosquitto"), {
      args: ["-c", config],
      stdin: "null",
      stdout: "null",
      stderr: "piped",
    }).spawn();
    const from = this.log.length;
    const pump = (async () => {
      await pumpLines(child.stderr, (line) => this.#push(line));
      const waiters = this.#waiters;
      this.#waiters = [];
      for (const w of waiters) w.reject(new Error(`mosquitto exited before logging ${w.re}`));
    })();
    this.#run = { child, pump };
    this.#paused = false;
    // Mosquitto logs "running" once its listeners are open.
    const started = await this.waitForLog(
      / running$/,
      this.#options.startTimeoutMs ?? 10_000,
      from,
    ).then(() => true, () => false);
    if (started && await this.#serving(from)) return;
    await this.stop();
    throw new Error(
      `mosquitto did not start on port ${this.port}:\n${this.log.slice(from).join("\n")}`,
    );
  }

  /**
   * Stops the broker (SIGTERM; clients see their connections close) and waits for it to
   * exit. Its directory is removed unless `persistence` is on (then {@link close} removes
   * it); {@link restart} starts it again on the same port. Idempotent.
   */
  async stop(): Promise<void> {
    const run = this.#run;
    if (!run) return;
    this.#run = null;
    const signal = (sig: Deno.Signal) => {
      try {
        run.child.kill(sig);
      } catch {
        // already exited
      }
    };
    let exited = false;
    const status = run.child.status.then(() => {
      exited = true;
    });
    signal("SIGTERM");
    if (this.#paused) signal("SIGCONT");
    this.#paused = false;
    // Mosquitto installs its signal handlers, logs "running", then sets its run flag: a
    // SIGTERM in between is lost (start() waits past that point, but a broker can still
    // be stopped mid-start). Repeat it every second; SIGKILL after 5 s.
    for (let i = 0; i < 5 && !exited; i++) {
      let timer: ReturnType<typeof setTimeout> | undefined;
      await Promise.race([status, new Promise((r) => timer = setTimeout(r, 1000))]);
      clearTimeout(timer);
      if (!exited) signal("SIGTERM");
    }
    if (!exited) signal("SIGKILL");
    await status;
    await run.pump;
    if (!this.#options.persistence) await this.#removeDir();
  }

  /**
   * True once the broker's main loop accepted a connection: it logs each one ("New
   * connection from HOST:PORT"), so the port accepts and the broker is past its startup.
   */
  async #serving(from: number): Promise<boolean> {
    let conn: Deno.TcpConn;
    try {
      conn = await Deno.connect({ hostname: "127.0.0.1", port: this.port });
    } catch {
      return false;
    }
    try {
      const local = (conn.localAddr as Deno.NetAddr).port;
      const timeoutMs = this.#options.startTimeoutMs ?? 10_000;
      await this.waitForLog(
        new RegExp(`New connection from 127\\.0\\.0\\.1:${local} `),
        timeoutMs,
        from,
      );
      return true;
    } catch {
      return false;
    } finally {
      conn.close();
    }
  }

  /**
   * Resolves with the first log line matching `re` (from line `from` of {@link log} on,
   * past or future); rejects after `timeoutMs`. Mosquitto logs clients connecting
   * ("New client connected from … as ID"), disconnecting ("Client ID disconnected.") and
   * losing their connection ("Client ID closed its connection."). Also rejects when the
   * broker exits first.
   */
  waitForLog(re: RegExp, timeoutMs = 5_000, from = 0): Promise<string> {
    const seen = this.log.slice(from).find((l) => re.test(l));
    if (seen !== undefined) return Promise.resolve(seen);
    return new Promise((resolve, reject) => {
      const waiter: LogWaiter = {
        re,
        resolve: (line) => {
          clearTimeout(timer);
          resolve(line);
        },
        reject: (err) => {
          clearTimeout(timer);
          reject(err);
        },
      };
      const timer = setTimeout(() => {
        this.#waiters = this.#waiters.filter((w) => w !== waiter);
        reject(new Error(`mosquitto logged no line matching ${re} within ${timeoutMs} ms`));
      }, timeoutMs);
      this.#waiters.push(waiter);
    });
  }

  #push(line: string): void {
    this.log.push(line);
    this.#waiters = this.#waiters.filter((w) => {
      if (!w.re.test(line)) return true;
      w.resolve(line);
      return false;
    });
  }

  /** Stops the broker if it runs and starts it again on the same port. */
  async restart(): Promise<void> {
    await this.stop();
    await this.start();
  }

  /**
   * Freezes the broker (SIGSTOP): connections stay open but nothing is answered, like a
   * hung broker. {@link resume} undoes it; {@link stop} works on a paused broker too.
   */
  pause(): void {
    if (!this.#run || this.#paused) return;
    this.#run.child.kill("SIGSTOP");
    this.#paused = true;
  }

  /** Lets a paused broker run again (SIGCONT). */
  resume(): void {
    if (!this.#run || !this.#paused) return;
    this.#run.child.kill("SIGCONT");
    this.#paused = false;
  }

  /** Stops the broker and removes its directory. Idempotent. */
  async close(): Promise<void> {
    await this.stop();
    if (this.#closed) return;
    this.#closed = true;
    await this.#removeDir();
  }

  async #removeDir(): Promise<void> {
    await Deno.remove(this.#dir, { recursive: true }).catch(() => {});
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.close();
  }

  #config(): string {
    const lines = [
      `listener ${this.port} 127.0.0.1`,
      "allow_anonymous true",
      `max_queued_messages ${this.#options.maxQueuedMessages ?? 100_000}`,
      "log_dest stderr",
      "log_type error",
      "log_type warning",
      "log_type notice",
      "log_type information",
    ];
    if (this.#options.persistence) {
      lines.push("persistence true", `persistence_location ${this.#dir}/`);
    } else {
      lines.push("persistence false");
    }
    // Started as root, Mosquitto would switch to the `mosquitto` user, which cannot read
    // the private directory.
    if (Deno.uid() === 0) lines.push("user root");
    lines.push(...(this.#options.extraConfig ?? []));
    return lines.join("\n") + "\n";
  }
}

/**
 * Starts Mosquitto on a free port of 127.0.0.1 and resolves once it accepts connections.
 * Retries on another port when the chosen one was taken meanwhile. Stop it with
 * {@link Mosquitto.close} (or `await using`).
 */
export async function startMosquitto(options: MosquittoOptions = {}): Promise<Mosquitto> {
  const dir = await Deno.makeTempDir({ prefix: "jw-mosquitto-" });
  const failures: string[] = [];
  for (let attempt = 0; attempt < 5; attempt++) {
    const broker = new Mosquitto(freeTcpPort(), dir, options);
    try {
      await broker.start();
      return broker;
    } catch (err) {
      failures.push(err instanceof Error ? err.message : String(err));
    }
  }
  await Deno.remove(dir, { recursive: true }).catch(() => {});
  throw new Error(`mosquitto did not start:\n${failures.join("\n")}`);
}
