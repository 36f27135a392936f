/**
 * `jw demo` — a local server and two agents on loopback in a temporary data dir, one
 * sample command against both, then the exact `jw client` commands to try next. Runs
 * until Ctrl-C (or, with `--once`, exits after the sample command).
 *
 * @module
 */
import bcrypt from "bcryptjs";
import { JwError } from "../shared/errors.ts";
import { AgentConfig } from "../shared/config/agent.ts";
import { ServerConfig } from "../shared/config/server.ts";
import { randomId } from "../shared/random.ts";
import { type JwServer, startServer } from "../server/mod.ts";
import { type JwAgent, startAgent } from "../agent/mod.ts";
import { ApiClient } from "./_api.ts";
import { renderReply, renderSummary, succeeded } from "./_render.ts";
import { parseFlags, str, waitForShutdownSignal } from "./_flags.ts";

const USAGE = `Usage: jw demo [--once] [--http HOST:PORT]

Starts a server and two agents (demo-1, demo-2) on loopback with a temporary data dir,
runs one sample command on both, prints the results and the jw client commands to try,
then keeps running until Ctrl-C.

Options:
  --once            exit after the sample command (exit code 1 if it failed)
  --http HOST:PORT  server address, default 127.0.0.1:7400 (or a free port if taken)`;

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

async function startDemoServer(http: string, dataDir: string, hash: string): Promise<JwServer> {
  const make = (addr: string) =>
    ServerConfig.parse({
      http: addr,
      data: `${dataDir}/server`,
      auth: { users: [{ name: "admin", bcrypt: hash }] },
      logLevel: "warn",
    });
  try {
    return await startServer(make(http));
  } catch (err) {
    if (
      !(err instanceof Deno.errors.AddrInUse) && !String((err as Error).message).includes("in use")
    ) throw err;
    console.error(`(${http} is taken; using a free port)`);
    return await startServer(make(http.replace(/:\d+$/, ":0")));
  }
}

function withTimeout<T>(promise: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(
      () => reject(new JwError("timeout", `${what} took longer than ${ms} ms`)),
      ms,
    );
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

/** Entry point of `jw demo`. */
export async function demoCommand(argv: string[]): Promise<number> {
  const p = parseFlags(argv, { once: { type: "boolean" }, http: { type: "string" } }, false);
  if (p.values.help) {
    console.log(USAGE);
    return 0;
  }
  const dataDir = await Deno.makeTempDir({ prefix: "jw-demo-" });
  const password = randomId(undefined, 12);
  const agents: JwAgent[] = [];
  let server: JwServer | undefined;
  try {
    const hash = await bcrypt.hash(password, 10);
    server = await startDemoServer(str(p, "http") ?? "127.0.0.1:7400", dataDir, hash);
    const allowRun = await existing(PROGRAM_CANDIDATES);
    for (const [i, zone] of [[1, "a"], [2, "b"]] as const) {
      agents.push(
        await startAgent(AgentConfig.parse({
          id: `demo-${i}`,
          server: server.url,
          data: `${dataDir}/agent-${i}`,
          allowRun,
          tags: { role: "demo", zone },
          logLevel: "warn",
        })),
      );
    }
    await withTimeout(Promise.all(agents.map((a) => a.welcomed())), 15_000, "agents connecting");
    console.log(`server  ${server.id} at ${server.url} (data in ${dataDir})`);
    console.log(`agents  ${agents.map((a) => a.id).join(", ")} connected`);
    console.log(`login   admin / ${password}\n`);

    const uname = allowRun.find((x) => x.endsWith("/uname")) ?? allowRun[0];
    const sample = { cmd: uname, args: uname.endsWith("uname") ? ["-srm"] : ["hello from jw"] };
    console.log(`$ jw client run all exec.run '${JSON.stringify(sample)}' --meta demo=yes`);
    const api = new ApiClient({ server: server.url, user: "admin", password });
    let ok = false;
    for await (
      const event of api.run({
        target: "all",
        job: { key: "exec.run", args: sample },
        meta: { demo: "yes" },
        timeoutMs: 15_000,
      })
    ) {
      if (event.type === "dispatched") continue;
      if (event.type === "summary") {
        for (const line of renderSummary(event)) console.log(line);
        ok = Object.values(event.agents).length === 2 &&
          Object.values(event.agents).every(succeeded);
        continue;
      }
      const line = renderReply(event);
      if (line) console.log(line);
    }

    const jw = "npx -y deno@2.9.6 task jw client";
    const conn = `--server ${server.url} --user admin`;
    console.log(`
Try next (in another terminal, from this checkout):
  export JW_PASSWORD='${password}'
  ${jw} ${conn} agents
  ${jw} ${conn} run agent:demo-1 exec.run '{"cmd":"${
      allowRun[0]
    }","args":["hello"]}' --meta ticket=42
  ${jw} ${conn} run tag:zone=b tags.set '{"tags":{"color":"green"}}'
  ${jw} ${conn} --json run all exec.run '{"cmd":"${uname}","args":["-a"]}'
  ${jw} ${conn} jobs install all exec.run '{"cmd":"${
      allowRun[0]
    }","args":["tick"]}' --id tick --every 10s
  ${jw} ${conn} jobs list
  ${jw} ${conn} tail
  ${jw} ${conn} audit --limit 10
Programs the demo agents may run: ${allowRun.join(" ")}
`);
    if (p.values.once) return ok ? 0 : 1;
    const shutdown = waitForShutdownSignal();
    console.log("Running. Press Ctrl-C to stop.");
    await shutdown;
    return 0;
  } finally {
    for (const a of agents) await a.close();
    await server?.close();
    await Deno.remove(dataDir, { recursive: true }).catch(() => {});
    console.log("demo stopped; temporary data removed");
  }
}
