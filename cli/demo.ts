/**
 * `jw demo` — a three-server cluster and five agents on loopback in a temporary data dir.
 * Each server is a child `jw server --config FILE` process (so it can be stopped with `kill`
 * and restarted with the printed command); the agents run in this process and are all given
 * the first server's URL only, so where they end up is placement's doing. One sample command
 * runs against all of them; then the demo prints the walkthrough commands and, until Ctrl-C,
 * a line for every server that stops or comes back and every agent that moves.
 *
 * @module
 */
import { fileURLToPath } from "node:url";
import { createSocket } from "node:dgram";
import bcrypt from "bcryptjs";
import { stringify as toYaml } from "yaml";
import { JwError, toJwError } from "../shared/errors.ts";
import { AgentConfig } from "../shared/config/agent.ts";
import { randomId } from "../shared/random.ts";
import { owner } from "../shared/lrw.ts";
import type { AgentInfo, ClusterMemberInfo } from "../shared/protocol/operator.ts";
import { generateClusterKey } from "../server/cluster/keyring.ts";
import { type JwAgent, startAgent } from "../agent/mod.ts";
import { PERMISSIONS } from "../scripts/permissions.ts";
import { ApiClient } from "./_api.ts";
import { renderTable } from "./_render.ts";
import { parseFlags, str, waitForShutdownSignal } from "./_flags.ts";
import { streamRun } from "./_run.ts";

const USAGE = `Usage: jw demo [--once] [--http HOST:PORT]

Starts a cluster of three servers (s1, s2, s3, each a child "jw server --config FILE"
process) and five agents (demo-1..demo-5) on loopback with a temporary data dir. Every
agent is given the first server's URL only; placement sends each to the server that owns
it. Runs one sample command on all five, prints the servers (URL, PID, config, restart
command), where each agent ended up, the login and the commands to try, then keeps running
until Ctrl-C, printing each server that stops or comes back and each agent that moves.

Options:
  --once            exit after the sample command (exit code 1 if it failed)
  --http HOST:PORT  the first server's address, default 127.0.0.1:7400 (a free port if
                    taken, or with port 0); the others and all gossip use free ports`;

/** Server ids of the demo cluster, in start order; the first is every other's seed. */
export const DEMO_SERVERS = ["s1", "s2", "s3"] as const;

/** The demo agents and their `zone` tag. */
export const DEMO_AGENTS = [
  ["demo-1", "a"],
  ["demo-2", "b"],
  ["demo-3", "c"],
  ["demo-4", "a"],
  ["demo-5", "b"],
] as const;

/** How long each step may take before the demo gives up with a `timeout` error. */
const SERVER_START_MS = 30_000;
const CONVERGE_MS = 20_000;
const AGENTS_MS = 20_000;
const SAMPLE_MS = 15_000;
/** How long a stopping server gets after SIGTERM before SIGKILL. */
const STOP_GRACE_MS = 10_000;
/** How often the running demo looks at members and agents. */
const WATCH_MS = 1_000;

const PROGRAM_CANDIDATES = [
  "/bin/echo",
  "/usr/bin/echo",
  "/usr/bin/uname",
  "/bin/uname",
  "/bin/date",
  "/usr/bin/date",
  "/usr/bin/id",
  "/bin/hostname",
];

/**
 * True when `mainModule` (`Deno.mainModule`) is the entry point of a `deno compile`d binary:
 * those run from a virtual directory named `deno-compile-<binary name>` under the temp dir.
 */
export function isCompiled(mainModule: string): boolean {
  if (!mainModule.startsWith("file:")) return false;
  return new URL(mainModule).pathname.split("/").some((p) => p.startsWith("deno-compile-"));
}

/**
 * The argv that runs `jw` the way this process runs: the binary itself when compiled, else
 * the same Deno with `run`, the permissions `deno task jw` uses, and main.ts.
 */
export function jwArgv(
  runtime: { execPath: string; mainModule: string } = {
    execPath: Deno.execPath(),
    mainModule: Deno.mainModule,
  },
): string[] {
  if (isCompiled(runtime.mainModule)) return [runtime.execPath];
  return [
    runtime.execPath,
    "run",
    ...PERMISSIONS,
    fileURLToPath(new URL("../main.ts", import.meta.url)),
  ];
}

/** `arg` quoted for a POSIX shell when it needs to be. */
export function shellQuote(arg: string): string {
  return /^[A-Za-z0-9_/.,:=@%+-]+$/.test(arg) ? arg : `'${arg.replaceAll("'", `'\\''`)}'`;
}

async function existing(paths: string[]): Promise<string[]> {
  const found: string[] = [];
  for (const p of paths) {
    try {
      if ((await Deno.stat(p)).isFile) found.push(p);
    } catch {
      // not on this system
    }
  }
  return found;
}

function splitHostPort(text: string): { host: string; port: number } {
  const m = /^(.+):(\d{1,5})$/.exec(text);
  const port = Number(m?.[2]);
  if (!m || port > 65535) {
    throw new JwError("usage", `--http must be HOST:PORT, e.g. 127.0.0.1:7400, got "${text}"`);
  }
  return { host: m[1].replace(/^\[(.*)\]$/, "$1"), port };
}

function udpFree(host: string, port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = createSocket(host.includes(":") ? "udp6" : "udp4");
    socket.once("error", () => {
      socket.close();
      resolve(false);
    });
    socket.bind(port, host, () => socket.close(() => resolve(true)));
  });
}

/**
 * Free ports on `host`, each distinct: TCP, and UDP too when `udp` (gossip uses both on one
 * port). Another process may still take one before the server binds it; the server then
 * fails to start and says so.
 */
async function freePorts(host: string, count: number, udp: boolean): Promise<number[]> {
  const ports: number[] = [];
  for (let tries = 0; ports.length < count; tries++) {
    if (tries > 50 * count) throw new JwError("internal", `no free ports on ${host}`);
    const listener = Deno.listen({ hostname: host, port: 0 });
    const port = (listener.addr as Deno.NetAddr).port;
    listener.close();
    if (ports.includes(port) || (udp && !await udpFree(host, port))) continue;
    ports.push(port);
  }
  return ports;
}

/** The first server's HTTP port: the one asked for, or a free one when it is 0 or taken. */
async function firstHttpPort(host: string, port: number): Promise<number> {
  if (port !== 0) {
    try {
      Deno.listen({ hostname: host, port }).close();
      return port;
    } catch (err) {
      if (!(err instanceof Deno.errors.AddrInUse)) {
        throw new JwError("usage", `--http ${host}:${port}: cannot listen there (${err})`);
      }
      console.error(`(${host}:${port} is taken; using a free port)`);
    }
  }
  try {
    return (await freePorts(host, 1, false))[0];
  } catch (err) {
    throw new JwError("usage", `--http ${host}: cannot listen there (${err})`);
  }
}

function withTimeout<T>(promise: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(
      () => reject(new JwError("timeout", `${what} took longer than ${ms / 1000} s`)),
      ms,
    );
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

async function eachLine(
  stream: ReadableStream<Uint8Array>,
  onLine: (line: string) => void,
): Promise<void> {
  let buffered = "";
  try {
    for await (const chunk of stream.pipeThrough(new TextDecoderStream())) {
      buffered += chunk;
      let nl: number;
      while ((nl = buffered.indexOf("\n")) >= 0) {
        onLine(buffered.slice(0, nl));
        buffered = buffered.slice(nl + 1);
      }
    }
  } catch {
    // the process went away
  }
  if (buffered) onLine(buffered);
}

function describeStatus(status: Deno.CommandStatus): string {
  return status.signal ? `signal ${status.signal}` : `exit code ${status.code}`;
}

function clock(): string {
  return new Date().toTimeString().slice(0, 8);
}

/** One demo server: its files and its child process (while the demo's own child runs). */
class DemoServer {
  readonly dir: string;
  readonly configPath: string;
  readonly url: string;
  readonly api: ApiClient;
  /** The command that starts it, for the user to restart it with. */
  readonly command: string[];
  #child: Deno.ChildProcess | undefined;
  #exited: Promise<Deno.CommandStatus> | undefined;
  #done = false;
  #pumps: Promise<void>[] = [];
  #stderr: string[] = [];
  #stdout: string[] = [];
  #onStdout: (() => void) | undefined;

  constructor(
    readonly id: string,
    readonly http: string,
    readonly gossip: string,
    root: string,
    password: string,
    jw: readonly string[],
  ) {
    this.dir = `${root}/${id}`;
    this.configPath = `${this.dir}/server.yaml`;
    this.url = `http://${http}`;
    this.api = new ApiClient({ server: this.url, user: "admin", password });
    this.command = [...jw, "server", "--config", this.configPath];
  }

  /** Writes the config file (mode 0600: it holds the cluster key). */
  async writeConfig(config: Record<string, unknown>): Promise<void> {
    await Deno.mkdir(this.dir, { recursive: true });
    await Deno.writeTextFile(
      this.configPath,
      `# jw demo: ${this.id} of a three-server cluster on loopback\n${toYaml(config)}`,
      { mode: 0o600 },
    );
  }

  get pid(): number | undefined {
    return this.#child?.pid;
  }

  /** Resolves when the child started by {@link start} exits. */
  get exited(): Promise<Deno.CommandStatus> | undefined {
    return this.#exited;
  }

  /** Starts `jw server --config FILE` and waits for its "listening" line. */
  async start(onStderr: (line: string) => void): Promise<void> {
    const [program, ...args] = this.command;
    // The config file says it all: JW_* variables of this shell would override it.
    const env = Object.fromEntries(
      Object.entries(Deno.env.toObject()).filter(([k]) => !k.startsWith("JW_")),
    );
    this.#child = new Deno.Command(program, {
      args,
      clearEnv: true,
      env: { ...env, NO_COLOR: "1" },
      stdin: "null",
      stdout: "piped",
      stderr: "piped",
    }).spawn();
    this.#exited = this.#child.status;
    void this.#exited.then(() => (this.#done = true));
    this.#pumps = [
      eachLine(this.#child.stdout, (line) => {
        this.#stdout.push(line);
        this.#onStdout?.();
      }),
      eachLine(this.#child.stderr, (line) => {
        this.#stderr = [...this.#stderr.slice(-19), line];
        onStderr(line);
      }),
    ];
    const listening = new Promise<void>((resolve) => {
      this.#onStdout = () => {
        if (this.#stdout.some((l) => l.includes(" listening on "))) resolve();
      };
      this.#onStdout();
    });
    const failed = this.#exited.then(async (status) => {
      await Promise.all(this.#pumps);
      throw new JwError(
        "spawn_failed",
        `${this.id} exited before listening (${describeStatus(status)})${this.#stderrTail()}`,
      );
    });
    await withTimeout(Promise.race([listening, failed]), SERVER_START_MS, `starting ${this.id}`)
      .catch((err) => {
        throw err instanceof JwError && err.code === "timeout"
          ? new JwError("timeout", `${err.message}${this.#stderrTail()}`)
          : err;
      });
  }

  #stderrTail(): string {
    return this.#stderr.length ? `; its last output:\n  ${this.#stderr.join("\n  ")}` : "";
  }

  /** True while the child started by the demo runs. */
  get running(): boolean {
    return this.#exited !== undefined && !this.#done;
  }

  /** SIGTERM, then SIGKILL after {@link STOP_GRACE_MS}; waits for the exit and its output. */
  async stop(): Promise<void> {
    const child = this.#child;
    if (!child || !this.#exited) return;
    if (this.running) {
      try {
        child.kill("SIGTERM");
      } catch {
        // already gone
      }
      const timer = setTimeout(() => {
        try {
          child.kill("SIGKILL");
        } catch {
          // already gone
        }
      }, STOP_GRACE_MS);
      await this.#exited.finally(() => clearTimeout(timer));
    }
    await Promise.all(this.#pumps);
  }

  /** True when something answers `GET /healthz` at this server's URL within a second. */
  async answers(): Promise<boolean> {
    try {
      const res = await fetch(`${this.url}/healthz`, { signal: AbortSignal.timeout(1000) });
      await res.body?.cancel();
      return res.ok;
    } catch {
      return false;
    }
  }
}

/** Waits until every server sees all of them alive with a URL. */
async function waitForCluster(servers: DemoServer[]): Promise<void> {
  const deadline = Date.now() + CONVERGE_MS;
  let missing: string[] = [];
  while (Date.now() < deadline) {
    missing = [];
    for (const s of servers) {
      try {
        const { members } = await withTimeout(s.api.members(), 2000, `${s.id} members`);
        for (const other of servers) {
          const m = members.find((x) => x.id === other.id);
          if (!m || m.state !== "alive" || !m.url) {
            missing.push(`${s.id} sees ${other.id} ${m ? m.state : "not yet"}`);
          }
        }
      } catch (err) {
        missing.push(`${s.id} does not answer (${toJwError(err).message})`);
      }
    }
    if (missing.length === 0) return;
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new JwError(
    "timeout",
    `the servers did not form a cluster within ${CONVERGE_MS / 1000} s: ${missing.join("; ")}`,
  );
}

/** Agent id → server id, once every server lists every agent connected, on the same server. */
async function waitForAgents(servers: DemoServer[], ids: string[]): Promise<Map<string, string>> {
  const deadline = Date.now() + AGENTS_MS;
  let problems: string[] = [];
  while (Date.now() < deadline) {
    problems = [];
    const where = new Map<string, string>();
    for (const s of servers) {
      let agents: AgentInfo[];
      try {
        agents = await withTimeout(s.api.agents(), 2000, `${s.id} agents`);
      } catch (err) {
        problems.push(`${s.id} does not answer (${toJwError(err).message})`);
        continue;
      }
      for (const id of ids) {
        const a = agents.find((x) => x.id === id);
        if (!a?.connected || !a.server) {
          problems.push(`${s.id} does not list ${id} as connected`);
        } else if (where.has(id) && where.get(id) !== a.server) {
          problems.push(`${id} is on ${where.get(id)} or ${a.server}`);
        } else where.set(id, a.server);
      }
    }
    if (problems.length === 0) return where;
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new JwError(
    "timeout",
    `the agents did not all connect within ${AGENTS_MS / 1000} s: ${
      [...new Set(problems)].join("; ")
    }`,
  );
}

/**
 * Runs `sample` on `all` through the first server, as `jw client run` does: the replies of
 * the agents on the other servers are followed on those servers, and the summary covers all
 * five. Returns true when every agent finished cleanly.
 */
async function runSample(
  servers: DemoServer[],
  sample: Record<string, unknown>,
): Promise<boolean> {
  const code = await streamRun(servers[0].api, {
    target: "all",
    job: { key: "exec.run", args: sample },
    meta: { demo: "yes" },
    timeoutMs: SAMPLE_MS,
  }, false);
  return code === 0;
}

const STATE_WORDS: Record<ClusterMemberInfo["state"], string> = {
  alive: "is alive",
  suspect: "is suspect (missed its probes)",
  dead: "is dead (failed)",
  left: "left the cluster",
};

/**
 * While the demo runs: prints a line when a server's child exits, when a server changes state
 * in the cluster, and when an agent moves (as the first server that answers sees it).
 */
function watch(
  servers: DemoServer[],
  placed: Map<string, string>,
  restart: (s: DemoServer) => string,
): () => Promise<void> {
  let stopped = false;
  for (const s of servers) {
    void s.exited?.then((status) => {
      if (stopped) return;
      console.log(
        `${clock()}  ${s.id} (pid ${s.pid}) exited: ${describeStatus(status)}. ` +
          `Restart it with:\n          ${restart(s)}`,
      );
    });
  }
  const states = new Map(servers.map((s) => [s.id, "alive"]));
  /** Each agent's server, null while it is not connected. */
  const where = new Map<string, string | null>(placed);
  /** Each agent's last server. */
  const last = new Map<string, string>(placed);
  const loop = (async () => {
    while (!stopped) {
      await new Promise((r) => setTimeout(r, WATCH_MS));
      // The demo's own servers first: one started by hand may still be catching up.
      const order = [...servers.filter((s) => s.running), ...servers.filter((s) => !s.running)];
      for (const s of order) {
        if (stopped) break;
        let members: ClusterMemberInfo[], agents: AgentInfo[];
        try {
          [{ members }, agents] = await withTimeout(
            Promise.all([s.api.members(), s.api.agents()]),
            2000,
            "looking",
          );
        } catch {
          continue; // ask the next server
        }
        if (stopped) break;
        for (const m of members) {
          if (states.has(m.id) && states.get(m.id) !== m.state) {
            console.log(`${clock()}  ${m.id} ${STATE_WORDS[m.state]}`);
            states.set(m.id, m.state);
          }
        }
        for (const a of agents) {
          if (!where.has(a.id)) continue;
          const now = a.connected ? a.server : null;
          const before = where.get(a.id);
          if (now === before) continue;
          where.set(a.id, now);
          if (now === null) {
            console.log(`${clock()}  ${a.id} disconnected from ${before}`);
          } else {
            console.log(`${clock()}  ${a.id} moved ${last.get(a.id) ?? "-"} → ${now}`);
            last.set(a.id, now);
          }
        }
        break;
      }
    }
  })();
  return async () => {
    stopped = true;
    await loop;
  };
}

/** Entry point of `jw demo`. */
export async function demoCommand(argv: string[]): Promise<number> {
  const p = parseFlags(argv, { once: { type: "boolean" }, http: { type: "string" } }, false);
  if (p.values.help) {
    console.log(USAGE);
    return 0;
  }
  const first = splitHostPort(str(p, "http") ?? "127.0.0.1:7400");
  const compiled = isCompiled(Deno.mainModule);
  const jw = jwArgv();
  const dataDir = await Deno.makeTempDir({ prefix: "jw-demo-" });
  const password = randomId(undefined, 12);
  const agents: JwAgent[] = [];
  const servers: DemoServer[] = [];
  let stopWatching: (() => Promise<void>) | undefined;
  /** Set once the demo stops everything: the servers' own shutdown messages are expected. */
  let stopping = false;
  // Ctrl-C from the start: while starting up it abandons the step under way, then cleans up.
  const shutdown = waitForShutdownSignal();
  const stopped = new JwError("closed", "interrupted");
  const interrupted = shutdown.then(() => {
    stopping = true;
    throw stopped;
  });
  interrupted.catch(() => {});
  const step = <T>(promise: Promise<T>): Promise<T> => Promise.race([promise, interrupted]);
  try {
    const hash = await bcrypt.hash(password, 10);
    const key = generateClusterKey();
    const host = "127.0.0.1";
    const httpPorts = [
      await firstHttpPort(first.host, first.port),
      ...await freePorts(host, DEMO_SERVERS.length - 1, false),
    ];
    const gossipPorts = await freePorts(host, DEMO_SERVERS.length, true);
    DEMO_SERVERS.forEach((id, i) => {
      const http = i === 0 ? `${first.host}:${httpPorts[0]}` : `${host}:${httpPorts[i]}`;
      servers.push(new DemoServer(id, http, `${host}:${gossipPorts[i]}`, dataDir, password, jw));
    });
    for (const s of servers) {
      await s.writeConfig({
        id: s.id,
        http: s.http,
        data: `${s.dir}/data`,
        logLevel: "warn",
        auth: { users: [{ name: "admin", bcrypt: hash }] },
        cluster: {
          key,
          gossip: s.gossip,
          seeds: s === servers[0] ? [] : [servers[0].gossip],
        },
      });
    }
    console.log(`jw demo: starting 3 servers and 5 agents on loopback (data in ${dataDir})`);
    const forward = (s: DemoServer) => (line: string) => {
      if (!stopping) console.error(`[${s.id}] ${line}`);
    };
    // The first one listens before the others ask it to join.
    await step(servers[0].start(forward(servers[0])));
    await step(Promise.all(servers.slice(1).map((s) => s.start(forward(s)))));
    await step(waitForCluster(servers));

    const allowRun = await existing(PROGRAM_CANDIDATES);
    for (const [id, zone] of DEMO_AGENTS) {
      agents.push(
        await step(startAgent(AgentConfig.parse({
          id,
          server: servers[0].url,
          data: `${dataDir}/agents/${id}`,
          allowRun,
          tags: { role: "demo", zone },
          logLevel: "error",
        }))),
      );
    }
    const agentIds = agents.map((a) => a.id);
    const placed = await step(waitForAgents(servers, agentIds));

    const restart = (s: DemoServer) => s.command.map(shellQuote).join(" ");
    console.log(`
Servers (one cluster: gossip signed with a random cluster key; s2 and s3 joined s1)
${
      renderTable(
        ["SERVER", "URL", "PID", "CONFIG"],
        servers.map((s) => [s.id, s.url, String(s.pid), s.configPath]),
      )
    }
Restart a stopped server with:
${servers.map((s) => `  ${s.id}: ${restart(s)}`).join("\n")}

Agents (each was given ${servers[0].url} only; placement chose its server)
${
      renderTable(
        ["AGENT", "SERVER", "TAGS"],
        DEMO_AGENTS.map(([id, zone]) => [id, placed.get(id) ?? "-", `role=demo,zone=${zone}`]),
      )
    }

Login: admin / ${password}
`);

    const uname = allowRun.find((x) => x.endsWith("/uname")) ?? allowRun[0];
    const sample = { cmd: uname, args: uname.endsWith("uname") ? ["-srm"] : ["hello from jw"] };
    console.log(`$ jw client run all exec.run '${JSON.stringify(sample)}' --meta demo=yes`);
    const ok = await step(runSample(servers, sample));

    const client = compiled ? `${shellQuote(jw[0])} client` : "npx -y deno@2.9.6 task jw client";
    const plan = planWalkthrough(servers.map((s) => s.id), placed);
    const victim = servers.find((s) => s.id === plan.stop)!;
    const operated = servers.find((s) => s !== victim)!;
    const moved = listing(
      plan.moves.map(([agent, to], i) => `${agent}${i ? "" : " moves"} to ${to}`),
    );
    const movers = listing(plan.moves.map(([agent]) => agent));
    console.log(`
Try next (in another terminal${compiled ? "" : ", from this checkout"}):
  export JW_SERVER=${operated.url} JW_USER=admin JW_PASSWORD='${password}'
  ${client} members
  ${client} agents
  ${client} run agent:demo-1 exec.run '{"cmd":"${allowRun[0]}","args":["hello"]}' --meta ticket=42
  ${client} run tag:zone=b tags.set '{"tags":{"color":"green"}}'
  ${client} jobs install all exec.run '{"cmd":"${
      allowRun[0]
    }","args":["tick"]}' --id tick --every 10s
  ${client} tail
  ${client} audit --limit 10

Cluster walkthrough (in that terminal):
  # 1. The SERVER column: ${victim.id} has ${movers || "no agent"}.
  ${client} agents
  # 2. Stop ${victim.id}. Within a few seconds ${moved || "nothing moves"} (the next
  #    server in each one's ranking); no other agent moves. ${operated.id} shows ${victim.id} as left.
  kill ${victim.pid}
  ${client} agents
  ${client} members
  # 3. Start ${victim.id} again (Ctrl-C there stops it). Once it has been up 5 s, ${
      movers || "its agents"
    }
  #    are handed back to it, each after a random wait of up to 5 s (working where they are
  #    until then); the others stay.
  ${restart(victim)}
  ${client} agents
This terminal prints each server that stops or comes back and each agent that moves.
Programs the demo agents may run: ${allowRun.join(" ")}
`);
    if (p.values.once) return ok ? 0 : 1;
    console.log("Running. Press Ctrl-C to stop.");
    stopWatching = watch(servers, placed, restart);
    await shutdown;
    return 0;
  } catch (err) {
    if (err !== stopped) throw err;
    console.error("jw demo: interrupted while starting");
    return 130;
  } finally {
    stopping = true;
    await stopWatching?.();
    await Promise.allSettled(agents.map((a) => a.close()));
    await Promise.allSettled(servers.map((s) => s.stop()));
    for (const s of servers) {
      if (await s.answers()) {
        console.error(
          `jw demo: ${s.id} at ${s.url} is still running: it was not started by the demo ` +
            `(stop it with Ctrl-C where you started it); its data dir is removed now`,
        );
      }
    }
    await Deno.remove(dataDir, { recursive: true }).catch(() => {});
    console.log("demo stopped; temporary data removed");
  }
}

/** "a", "a and b", "a, b and c". */
function listing(items: string[]): string {
  return items.length < 2 ? items.join("") : `${items.slice(0, -1).join(", ")} and ${items.at(-1)}`;
}

/** What the cluster walkthrough does: the server to stop and where its agents should go. */
export interface WalkthroughPlan {
  /** The server to stop. */
  stop: string;
  /** Its agents and their next-ranked server among the others (all healthy), by agent id. */
  moves: [agent: string, to: string][];
}

/**
 * Picks the server the walkthrough stops: the one whose agents spread over the most other
 * servers when it goes, then the one with the most agents; on a tie, not the first server.
 * `placed` maps agent ids to their server ids.
 */
export function planWalkthrough(
  serverIds: readonly string[],
  placed: ReadonlyMap<string, string>,
): WalkthroughPlan {
  const plans = [...serverIds.slice(1), serverIds[0]].map((stop) => {
    const rest = serverIds.filter((id) => id !== stop).map((id) => ({ id, health: 0 }));
    const moves = [...placed].filter(([, at]) => at === stop).sort(([a], [b]) => a < b ? -1 : 1)
      .map(([agent]): [string, string] => [agent, owner(agent, rest)?.id ?? "-"]);
    return { stop, moves, spread: new Set(moves.map(([, to]) => to)).size };
  });
  const best = plans.reduce((a, b) =>
    b.spread > a.spread || (b.spread === a.spread && b.moves.length > a.moves.length) ? b : a
  );
  return { stop: best.stop, moves: best.moves };
}
