/**
 * A private RabbitMQ broker for tests: `rabbitmq-server` in the foreground with its own
 * HOME, Mnesia, log directory, node name and ports, and its own `epmd` on a free port, so
 * several can run at once and stopping one touches nothing else. Needs the Debian package
 * `rabbitmq-server` (scripts/install-test-deps.sh installs it). Starting takes ~7 s.
 *
 * ```ts
 * await using rabbit = await startRabbitMq();
 * // amqplib.connect(rabbit.url) …
 * await rabbit.stop();     // graceful shutdown: clients see CONNECTION_FORCED
 * await rabbit.restart();  // same ports and data: durable exchanges and queues are back
 * ```
 *
 * @module
 */
import { findProgram, freeTcpPort, pumpLines } from "./process.ts";

const SERVER = "/usr/lib/rabbitmq/bin/rabbitmq-server";
const EPMD_PATHS = ["/usr/bin/epmd", "/usr/lib/erlang/bin/epmd"];

/** Options for {@link startRabbitMq}. */
export interface RabbitMqOptions {
  /**
   * rabbitmq.conf text (sysctl format), e.g. `"max_message_size = 65536"`. Default: none
   * (the broker's defaults).
   */
  config?: string;
  /** Longest wait for the broker to accept AMQP connections, in ms. Default 60000. */
  startTimeoutMs?: number;
  /** Longest wait for a graceful stop before the broker is killed, in ms. Default 20000. */
  stopTimeoutMs?: number;
}

/** A child process with its output (stdout and stderr) captured line by line. */
class Child {
  readonly lines: string[] = [];
  readonly status: Promise<Deno.CommandStatus>;
  readonly #process: Deno.ChildProcess;
  readonly #pumps: Promise<void>[];
  #onLine: (line: string) => void = () => {};
  #exited = false;

  constructor(command: string, args: string[], env: Record<string, string>) {
    this.#process = new Deno.Command(command, {
      args,
      env,
      stdin: "null",
      stdout: "piped",
      stderr: "piped",
    }).spawn();
    this.#pumps = [this.#pump(this.#process.stdout), this.#pump(this.#process.stderr)];
    this.status = this.#process.status.then((status) => {
      this.#exited = true;
      return status;
    });
  }

  #pump(stream: ReadableStream<Uint8Array>): Promise<void> {
    return pumpLines(stream, (line) => {
      this.lines.push(line);
      this.#onLine(line);
    });
  }

  get exited(): boolean {
    return this.#exited;
  }

  kill(signal: Deno.Signal): void {
    if (this.#exited) return;
    try {
      this.#process.kill(signal);
    } catch {
      // exited meanwhile
    }
  }

  /** Waits for the process and its output to end. */
  async wait(): Promise<Deno.CommandStatus> {
    const status = await this.status;
    await Promise.all(this.#pumps);
    return status;
  }

  /**
   * Resolves once a line (past or future) matches `re`; rejects when the process exits
   * first or after `timeoutMs`.
   */
  async waitForLine(re: RegExp, timeoutMs: number, what: string): Promise<void> {
    let timer: ReturnType<typeof setTimeout> | undefined;
    const outcome = await new Promise<string>((resolve) => {
      if (this.lines.some((line) => re.test(line))) return resolve("ok");
      this.#onLine = (line) => {
        if (re.test(line)) resolve("ok");
      };
      this.status.then(() => resolve("exited"));
      timer = setTimeout(() => resolve("timed out"), timeoutMs);
    });
    clearTimeout(timer);
    this.#onLine = () => {};
    if (outcome !== "ok") throw new Error(`${what} ${outcome}:\n${this.lines.join("\n")}`);
  }
}

/** True once `port` answers the AMQP protocol header with a method frame (connection.start). */
async function amqpAnswers(port: number): Promise<boolean> {
  let conn: Deno.TcpConn | undefined;
  try {
    conn = await Deno.connect({ hostname: "127.0.0.1", port });
    await conn.write(new Uint8Array([0x41, 0x4d, 0x51, 0x50, 0, 0, 9, 1]));
    const buf = new Uint8Array(8);
    const n = await conn.read(buf);
    return n !== null && n > 0 && buf[0] === 1;
  } catch {
    return false;
  } finally {
    conn?.close();
  }
}

/** True when `child` exits within `ms`. */
async function exitsWithin(child: Child, ms: number): Promise<boolean> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const exited = await Promise.race([
    child.status.then(() => true),
    new Promise<boolean>((resolve) => timer = setTimeout(() => resolve(false), ms)),
  ]);
  clearTimeout(timer);
  return exited;
}

/** Reads the broker VM's pid from its pid file, or null. */
function readPid(path: string): number | null {
  try {
    const pid = Number(Deno.readTextFileSync(path).trim());
    return Number.isInteger(pid) && pid > 0 ? pid : null;
  } catch {
    return null;
  }
}

/**
 * A private broker. {@link RabbitMq.stop} / {@link RabbitMq.restart} keep its ports and
 * data; {@link RabbitMq.close} (or `await using`) stops it and its epmd and removes its
 * directory. Not safe to drive from two places at once.
 */
export class RabbitMq implements AsyncDisposable {
  /** The AMQP port on 127.0.0.1. */
  readonly amqpPort: number;
  /** `amqp://guest:guest@127.0.0.1:PORT` (guest may log in over loopback). */
  readonly url: string;
  /** Its HOME, Mnesia, log and config files. */
  readonly dir: string;
  readonly #env: Record<string, string>;
  readonly #epmd: Child;
  readonly #stopTimeoutMs: number;
  readonly #startTimeoutMs: number;
  #server: Child | null = null;
  #paused = false;
  #closed = false;

  constructor(
    dir: string,
    amqpPort: number,
    env: Record<string, string>,
    epmd: Child,
    startTimeoutMs: number,
    stopTimeoutMs: number,
  ) {
    this.dir = dir;
    this.amqpPort = amqpPort;
    this.url = `amqp://guest:guest@127.0.0.1:${amqpPort}`;
    this.#env = env;
    this.#epmd = epmd;
    this.#startTimeoutMs = startTimeoutMs;
    this.#stopTimeoutMs = stopTimeoutMs;
  }

  /** True while the broker process runs (also while paused). */
  get running(): boolean {
    return this.#server !== null && !this.#server.exited;
  }

  /** Everything the broker printed since it was last (re)started. */
  get log(): readonly string[] {
    return this.#server?.lines ?? [];
  }

  /** Starts the broker (again) and resolves once it answers AMQP on {@link amqpPort}. */
  async restart(): Promise<void> {
    if (this.#closed) throw new Error("RabbitMq: closed");
    if (this.running) throw new Error("RabbitMq: already running");
    // A pid file left by the last run names a process that is gone (or someone else).
    await Deno.remove(`${this.dir}/pid`).catch(() => {});
    const server = new Child(SERVER, [], this.#env);
    this.#server = server;
    this.#paused = false;
    try {
      await server.waitForLine(
        /Starting broker\.\.\. completed|Server startup complete/,
        this.#startTimeoutMs,
        "rabbitmq-server",
      );
      // The listener is up once boot completes; a few quick tries cover a slow accept.
      for (let attempt = 0; !(await amqpAnswers(this.amqpPort)); attempt++) {
        if (attempt >= 20 || server.exited) {
          throw new Error(
            `rabbitmq-server does not answer on ${this.amqpPort}:\n${server.lines.join("\n")}`,
          );
        }
        await new Promise((resolve) => setTimeout(resolve, 100));
      }
    } catch (err) {
      await this.stop();
      throw err;
    }
  }

  /**
   * Stops the broker gracefully (clients get a connection.close) and waits for it to exit;
   * kills it after the stop timeout. Keeps the data. Idempotent.
   */
  async stop(): Promise<void> {
    const server = this.#server;
    if (!server) return;
    if (this.#paused) this.resume();
    // The start script forwards SIGTERM to the VM and waits for it.
    server.kill("SIGTERM");
    if (!(await exitsWithin(server, this.#stopTimeoutMs))) await this.#killVm(server);
    await server.wait();
    this.#server = null;
  }

  /** Kills the broker VM with SIGKILL (a crash: clients see the socket close) and waits. */
  async kill(): Promise<void> {
    const server = this.#server;
    if (!server) return;
    await this.#killVm(server);
    await server.wait();
    this.#server = null;
    this.#paused = false;
  }

  /** Freezes the broker VM (SIGSTOP): connections stay open and nothing is answered. */
  pause(): void {
    const pid = this.#server && readPid(`${this.dir}/pid`);
    if (!pid) throw new Error("RabbitMq: not running");
    Deno.kill(pid, "SIGSTOP");
    this.#paused = true;
  }

  /** Undoes {@link pause}. */
  resume(): void {
    const pid = this.#server && readPid(`${this.dir}/pid`);
    if (!pid || !this.#paused) return;
    Deno.kill(pid, "SIGCONT");
    this.#paused = false;
  }

  /**
   * SIGKILLs the VM and lets the start script reap it and exit (killing the script too
   * would leave the VM a zombie); the script is killed only if it lingers.
   */
  async #killVm(server: Child): Promise<void> {
    const pid = readPid(`${this.dir}/pid`);
    if (pid) {
      try {
        Deno.kill(pid, "SIGKILL");
      } catch {
        // gone already
      }
      if (await exitsWithin(server, 5_000)) return;
    }
    server.kill("SIGKILL");
  }

  /** Stops the broker and its epmd and removes its directory. Idempotent. */
  async close(): Promise<void> {
    if (this.#closed) return;
    await this.stop();
    this.#closed = true;
    this.#epmd.kill("SIGTERM");
    await this.#epmd.wait();
    await Deno.remove(this.dir, { recursive: true }).catch(() => {});
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.close();
  }
}

/** Starts epmd in the foreground on `port`, resolving once it listens. */
async function startEpmd(port: number, timeoutMs: number): Promise<Child> {
  const epmd = new Child(findProgram(EPMD_PATHS, "epmd", "rabbitmq-server"), [
    "-d",
    "-address",
    "127.0.0.1",
    "-port",
    String(port),
  ], {});
  try {
    await epmd.waitForLine(/epmd running/, timeoutMs, "epmd");
  } catch (err) {
    epmd.kill("SIGKILL");
    await epmd.wait();
    throw err;
  }
  return epmd;
}

/**
 * Starts a private broker on free loopback ports (AMQP, Erlang distribution, epmd) with
 * the default guest user, and resolves once it answers AMQP. Retries on other ports when
 * one was taken meanwhile.
 */
export async function startRabbitMq(options: RabbitMqOptions = {}): Promise<RabbitMq> {
  findProgram([SERVER], "rabbitmq-server", "rabbitmq-server");
  const startTimeoutMs = options.startTimeoutMs ?? 60_000;
  const stopTimeoutMs = options.stopTimeoutMs ?? 20_000;
  const failures: string[] = [];
  for (let attempt = 0; attempt < 3; attempt++) {
    const dir = await Deno.makeTempDir({ prefix: "jw-rabbitmq-" });
    const [amqpPort, distPort, epmdPort] = [freeTcpPort(), freeTcpPort(), freeTcpPort()];
    if (new Set([amqpPort, distPort, epmdPort]).size < 3) continue;
    await Deno.writeTextFile(`${dir}/enabled_plugins`, "[].\n");
    const env: Record<string, string> = {
      HOME: dir,
      RABBITMQ_NODENAME: `jwtest${amqpPort}@localhost`,
      RABBITMQ_NODE_IP_ADDRESS: "127.0.0.1",
      RABBITMQ_NODE_PORT: String(amqpPort),
      RABBITMQ_DIST_PORT: String(distPort),
      ERL_EPMD_PORT: String(epmdPort),
      RABBITMQ_MNESIA_BASE: `${dir}/mnesia`,
      RABBITMQ_LOG_BASE: `${dir}/log`,
      RABBITMQ_ENABLED_PLUGINS_FILE: `${dir}/enabled_plugins`,
      RABBITMQ_PID_FILE: `${dir}/pid`,
      // Erlang distribution on loopback only.
      RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS: "-kernel inet_dist_use_interface {127,0,0,1}",
    };
    if (options.config !== undefined) {
      await Deno.writeTextFile(`${dir}/rabbitmq.conf`, options.config + "\n");
      env.RABBITMQ_CONFIG_FILE = `${dir}/rabbitmq.conf`;
    }
    let epmd: Child;
    try {
      epmd = await startEpmd(epmdPort, 10_000);
    } catch (err) {
      failures.push(String(err));
      await Deno.remove(dir, { recursive: true }).catch(() => {});
      continue;
    }
    const rabbit = new RabbitMq(dir, amqpPort, env, epmd, startTimeoutMs, stopTimeoutMs);
    try {
      await rabbit.restart();
      return rabbit;
    } catch (err) {
      failures.push(String(err));
      await rabbit.close();
    }
  }
  throw new Error(`rabbitmq-server did not start:\n${failures.join("\n")}`);
}
