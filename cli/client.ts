/**
 * `jw client` — the operator's command line: list agents, run commands, follow output,
 * manage stored scripts, read the audit log.
 *
 * @module
 */
import { JwError } from "../shared/errors.ts";
import { Id } from "../shared/protocol/common.ts";
import { loadConfig } from "../shared/config/load.ts";
import { ClientConfig, clientEnv } from "../shared/config/client.ts";
import { ApiClient } from "./_api.ts";
import { renderAgents, renderMembers, renderOutputs, renderReply } from "./_render.ts";
import { buildRunRequest, showRun, streamRun } from "./_run.ts";
import { JOBS_FLAG_NAMES, JOBS_USAGE, jobsCommand } from "./_jobs.ts";
import { SCRIPTS_FLAG_NAMES, SCRIPTS_USAGE, scriptsCommand } from "./_scripts.ts";
import { environment, type Parsed, parseFlags, readConfigFile, str } from "./_flags.ts";

const USAGE = `Usage: jw client [connection options] <command> [options]

Commands:
  agents                          list agents of the cluster: id, connected, server,
                                  last seen, tags
  members                         list the servers of the cluster: state, health score
  join HOST:PORT...               ask the server to join other servers (gossip addresses)
  run TARGET KEY [ARGS_JSON]      run a command and stream the replies
  show ID                         a command run earlier: its replies and each target's
                                  state now (ask the server it was given to)
  jobs install|list|delete|runs   persistent and scheduled jobs (see below)
  scripts list|show|delete|push   signed scripts stored on the server (see below)
  tail                            follow live output of all agents
  outputs                         the server's outputs (files, brokers, HTTP): queued,
                                  delivered, failed, dropped, dead-lettered, last error
  audit                           show the server's audit log, newest first

TARGET: agent:ID | tag:NAME=VALUE | all
KEY:    a command key such as exec.run or tags.set
ARGS_JSON: the command's arguments as a JSON object, e.g. '{"cmd":"/bin/echo","args":["hi"]}'

Connection options (also in the config file or JW_* variables):
  --server URL        server URL, default http://127.0.0.1:7400   (JW_SERVER)
  --user NAME         operator name, default admin                 (JW_USER)
  --password PASS     password; prefer JW_PASSWORD (flags show in ps)
  --config FILE       YAML or JSON config file                     (JW_CONFIG)
  --json              machine output: agents and scripts list as one JSON array; run,
                      tail and scripts push as one JSON object per line

run options:
  --id JOBID          job id (default: the agent makes one up)
  --meta KEY=VALUE    metadata copied onto every reply; repeatable
  --meta-json JSON    metadata as a JSON object (merged under --meta)
  --timeout DUR       how long to wait for every agent, default 30s
  --ttl DUR           how long the command waits in the mailbox for an offline agent
                      (delivered when it connects), default 1h, at most 7d; 0: only agents
                      connected now

tail options:
  --agent ID          only this agent (asked of any server: redirected to the agent's)
  --tag NAME=VALUE    only agents with this tag
  --id ID             only replies to this command
  --type TYPES        only these reply types: output, log, setTag (comma-separated)

audit options:
  --limit N           entries to show, default 50
  --action ACTION     only this action, e.g. handshake.failed

${JOBS_USAGE}

jobs options:
  --every DUR         run every DUR (at least 1s), e.g. 30s, 5m
  --cron EXPR         run on a cron schedule, e.g. "*/5 * * * *" (5 or 6 fields)
  --tz ZONE           time zone for --cron, e.g. Europe/Berlin (default: the agent's)
  --on EVENT          run on agent start, connect, disconnect or stop
  --now               also run it once right away (besides --every, --cron or --on)
  --overlap POLICY    skip (default: no new run while one is going) or allow

${SCRIPTS_USAGE}

scripts options:
  --version N         a script version (show, delete, push); default: the newest for show
                      and push, every version for delete

run ends with one line per target state: done, error, running, delivered, pending, offline
(waiting in the mailbox of its server), expired. In a cluster, targets on other servers are
followed on those servers.

Exit codes (run, jobs, scripts push): 0 every targeted agent finished without error and with
exit code 0; 1 any agent reported an error or a non-zero exit, did not answer in time, is
offline, or none matched; 2 usage error. scripts delete exits 1 when a connected agent did not confirm.`;

const OPTIONS = {
  server: { type: "string" },
  user: { type: "string" },
  password: { type: "string" },
  config: { type: "string" },
  json: { type: "boolean" },
  id: { type: "string" },
  meta: { type: "string", multiple: true },
  "meta-json": { type: "string" },
  timeout: { type: "string" },
  ttl: { type: "string" },
  agent: { type: "string" },
  tag: { type: "string" },
  type: { type: "string" },
  limit: { type: "string" },
  action: { type: "string" },
  every: { type: "string" },
  cron: { type: "string" },
  tz: { type: "string" },
  on: { type: "string" },
  overlap: { type: "string" },
  now: { type: "boolean" },
  version: { type: "string" },
} as const;

const PER_COMMAND: Record<string, string[]> = {
  agents: [],
  members: [],
  join: [],
  run: ["id", "meta", "meta-json", "timeout", "ttl"],
  show: [],
  tail: ["agent", "tag", "id", "type"],
  outputs: [],
  audit: ["limit", "action"],
  jobs: [...JOBS_FLAG_NAMES],
  scripts: [...SCRIPTS_FLAG_NAMES],
};
const CONNECTION = ["server", "user", "password", "config", "json", "help"];

/** Entry point of `jw client`. */
export async function clientCommand(argv: string[]): Promise<number> {
  const p = parseFlags(argv, OPTIONS);
  const [sub, ...args] = p.positionals;
  if (p.values.help || sub === "help") {
    console.log(USAGE);
    return 0;
  }
  if (!sub) {
    throw new JwError(
      "usage",
      "missing command: agents, members, join, run, show, jobs, scripts, tail, outputs or audit",
    );
  }
  const allowed = PER_COMMAND[sub];
  if (!allowed) {
    throw new JwError(
      "usage",
      `unknown client command "${sub}": use agents, members, join, run, show, jobs, scripts, ` +
        "tail, outputs " +
        "or audit",
    );
  }
  for (const [flag, value] of Object.entries(p.values)) {
    if (value !== undefined && !CONNECTION.includes(flag) && !allowed.includes(flag)) {
      throw new JwError("usage", `--${flag} does not apply to "client ${sub}"`);
    }
  }
  const config = loadConfig(ClientConfig, {
    ...(await readConfigFile(p)),
    env: environment(),
    envMap: clientEnv,
    flags: { server: str(p, "server"), user: str(p, "user"), password: str(p, "password") },
  });
  const api = new ApiClient(config);
  const json = p.values.json === true;
  switch (sub) {
    case "agents":
      return await agentsCommand(api, args, json);
    case "members":
      return await membersCommand(api, args, json);
    case "join":
      return await joinCommand(api, args, json);
    case "run":
      return await runCommand(api, p, args, json);
    case "outputs":
      return await outputsCommand(api, args, json);
    case "show":
      if (args.length !== 1 || !Id.safeParse(args[0]).success) {
        throw new JwError("usage", 'show needs one command id, as printed by run ("sent … as ID")');
      }
      return await showRun(api, args[0], json);
    case "tail":
      return await tailCommand(api, p, args, json);
    case "jobs":
      return await jobsCommand(api, p, args, json);
    case "scripts":
      return await scriptsCommand(api, p, args, json);
    default:
      return await auditCommand(api, p, args, json);
  }
}

function noArgs(command: string, args: string[]): void {
  if (args.length) {
    throw new JwError("usage", `"client ${command}" takes no arguments, got "${args.join(" ")}"`);
  }
}

async function agentsCommand(api: ApiClient, args: string[], json: boolean): Promise<number> {
  noArgs("agents", args);
  const agents = await api.agents();
  console.log(
    json ? JSON.stringify(agents) : agents.length ? renderAgents(agents) : "no agents yet",
  );
  return 0;
}

async function membersCommand(api: ApiClient, args: string[], json: boolean): Promise<number> {
  noArgs("members", args);
  const answer = await api.members();
  if (json) {
    console.log(JSON.stringify(answer.members));
    return 0;
  }
  console.log(renderMembers(answer.members));
  if (!answer.clustered) {
    console.error("this server runs alone: give it a cluster key to gossip with other servers");
  }
  return 0;
}

async function joinCommand(api: ApiClient, args: string[], json: boolean): Promise<number> {
  if (args.length === 0) {
    throw new JwError(
      "usage",
      'client join needs at least one gossip address, e.g. "10.0.0.2:7401"',
    );
  }
  for (const a of args) {
    if (!/^(\[[0-9a-fA-F:.]+\]|[A-Za-z0-9.-]+):\d{1,5}$/.test(a)) {
      throw new JwError("usage", `"${a}" is not HOST:PORT`);
    }
  }
  const { joined } = await api.join(args);
  if (json) console.log(JSON.stringify({ joined }));
  else console.log(`joined ${joined} of ${args.length} server(s)`);
  return 0;
}

async function outputsCommand(api: ApiClient, args: string[], json: boolean): Promise<number> {
  noArgs("outputs", args);
  const outputs = await api.outputs();
  if (json) {
    console.log(JSON.stringify(outputs));
    return 0;
  }
  if (outputs.length === 0) {
    console.log("no outputs configured (see docs/outputs.md)");
    return 0;
  }
  console.log(renderOutputs(outputs));
  return 0;
}

async function runCommand(
  api: ApiClient,
  p: Parsed,
  args: string[],
  json: boolean,
): Promise<number> {
  return await streamRun(api, buildRunRequest(p, args), json);
}

async function tailCommand(
  api: ApiClient,
  p: Parsed,
  args: string[],
  json: boolean,
): Promise<number> {
  noArgs("tail", args);
  const tag = str(p, "tag");
  if (tag !== undefined && !/^[^=]+=/.test(tag)) {
    throw new JwError("usage", `--tag expects NAME=VALUE, got "${tag}"`);
  }
  const abort = new AbortController();
  const stop = () => abort.abort();
  Deno.addSignalListener("SIGINT", stop);
  try {
    const replies = await api.stream(
      { agent: str(p, "agent"), tag, id: str(p, "id"), type: str(p, "type") },
      abort.signal,
    );
    console.error(
      `following live output from ${
        str(p, "agent") ? `agent ${str(p, "agent")}` : tag ? `tag ${tag}` : "all agents"
      } (Ctrl-C to stop)`,
    );
    for await (const reply of replies) {
      if (json) console.log(JSON.stringify(reply));
      else {
        const line = renderReply(reply);
        if (line) console.log(line);
      }
    }
  } catch (err) {
    if (!abort.signal.aborted) throw err;
  } finally {
    Deno.removeSignalListener("SIGINT", stop);
  }
  if (!abort.signal.aborted) {
    console.error(
      "the server ended the stream (shutting down, or this viewer fell too far behind)",
    );
    return 1;
  }
  return 0;
}

async function auditCommand(
  api: ApiClient,
  p: Parsed,
  args: string[],
  json: boolean,
): Promise<number> {
  noArgs("audit", args);
  const limit = Number(str(p, "limit") ?? "50");
  if (!Number.isInteger(limit) || limit < 1) {
    throw new JwError("usage", `--limit expects a positive integer`);
  }
  const entries = await api.audit({ limit, action: str(p, "action") });
  if (json) {
    console.log(JSON.stringify(entries));
    return 0;
  }
  for (const e of entries) {
    const parts = [new Date(e.ts).toISOString(), e.outcome.padEnd(6), e.action, e.actor];
    if (e.target) parts.push(`target=${e.target}`);
    if (e.key) parts.push(`key=${e.key}`);
    if (e.reason) parts.push(`reason=${JSON.stringify(e.reason)}`);
    console.log(parts.join("  "));
  }
  return 0;
}
