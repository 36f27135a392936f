/**
 * `jw agent` — run an agent.
 *
 * @module
 */
import { loadConfig } from "../shared/config/load.ts";
import { AgentConfig, agentEnv } from "../shared/config/agent.ts";
import { startAgent } from "../agent/mod.ts";
import {
  environment,
  keyValues,
  list,
  parseFlags,
  readConfigFile,
  str,
  waitForShutdownSignal,
} from "./_flags.ts";

const USAGE = `Usage: jw agent --id ID (--seed URL... | --dns NAME) [options]

Runs an agent: keeps one WebSocket to the server that owns it and runs the commands it is
sent. On first start it creates an Ed25519 key pair in the data dir (agent.key, mode 0600).

Finding a server: it tries the DNS SRV targets of --dns first, then the --seed URLs, then
the server list remembered from its last connection (in DATA/agent.db); any server of the
cluster redirects it to its owner. Once connected it keeps the cluster's server list and,
when its server goes away, moves to its next-ranked server. At least one of --dns, --seed
or a remembered list is needed.

Options (each also settable in the config file, or as JW_* in the environment):
  --config FILE        YAML or JSON config file                   (JW_CONFIG)
  --id ID              agent id, unique in the fleet (required)   (JW_ID)
  --seed URL           any server of the cluster (http(s) or ws(s)); repeatable
                                                                  (JW_SEEDS, comma-separated)
  --server URL         the same as one more --seed                (JW_SERVER)
  --dns NAME           SRV name listing the servers, e.g. _jw._tcp.example.com (JW_DNS)
  --dns-server IP:PORT DNS server to ask instead of the system's; the SRV targets are
                       resolved through it too                    (JW_DNS_SERVER)
  --dns-tls            connect to the SRV targets with https/wss  (JW_DNS_TLS=true)
  --data DIR           data directory, default ./jw-data/agent     (JW_DATA)
  --allow-run PATH     absolute path of a program exec.run (and scripts, through it) may
                       start (journal.watch needs journalctl here); repeatable; nothing by
                       default                                     (JW_ALLOW_RUN, comma-separated)
  --allow-read PATH    file or directory fs.watch, file.tail and journal.watch may read and
                       signed scripts may be granted; repeatable; nothing by default
                                                                   (JW_ALLOW_READ)
  --allow-write PATH   ...that file.fetch may write to and scripts be granted; repeatable
                                                                   (JW_ALLOW_WRITE)
  --allow-net HOST[:PORT]  host signed scripts may be granted to reach; repeatable (JW_ALLOW_NET)
  --trust-signer FILE  public key (JWK, from jw sign keygen) whose signed scripts this
                       agent accepts; repeatable; none by default  (JW_TRUST_SIGNERS)
  --allow-env NAME     environment variable exec.run callers may set; repeatable;
                       programs otherwise get only PATH, LANG, HOME (JW_ALLOW_ENV)
  --allow-command KEY  command key this agent accepts: "exec.run", "job.*" or "*";
                       repeatable; default "*" (every command)   (JW_ALLOW_COMMANDS)
  --tag NAME=VALUE     initial tag, repeatable                     (JW_TAGS, a JSON object)
  --log-level LEVEL    error|warn|info|debug, default info          (JW_LOG_LEVEL)

Config file only (defaults shown):
  maxFrame: 1MiB          largest frame accepted from the server
  execTimeout: 10m        exec.run timeout when the command gives none (at most 24d)
  seeds: []              as --seed
  dns:                    as --dns, --dns-server, --dns-tls
    name: _jw._tcp.example.com   nameServer: IP:PORT   tls: false
  reconnect:
    min: 500ms            first reconnect delay cap (exponential, full jitter)
    max: 30s              largest reconnect delay cap
    failover: 5s          after a lost connection, the first retry (to the next-ranked
                          server) waits a random delay below this, spreading arrivals
  jobs:
    keepRuns: 20          finished runs kept per job
    max: 1000             most jobs installed on this agent
    maxRunning: 64        most runs going at once (due runs beyond it are skipped)
  outbox:
    maxFrames: 10000      unacknowledged replies kept; oldest dropped beyond it
    maxSize: 64MiB        ...and at most this much of their JSON
  policy:                 the same lists as --allow-run/-read/-write/-net
    run: []  read: []  write: []  net: []
  trust:
    signers: []           the same list as --trust-signer
  scripts:
    memory: 64MiB         heap limit of one script run (at least 16MiB)

SIGINT or SIGTERM stops it cleanly.`;

const OPTIONS = {
  config: { type: "string" },
  id: { type: "string" },
  seed: { type: "string", multiple: true },
  server: { type: "string" },
  dns: { type: "string" },
  "dns-server": { type: "string" },
  "dns-tls": { type: "boolean" },
  data: { type: "string" },
  "allow-run": { type: "string", multiple: true },
  "allow-command": { type: "string", multiple: true },
  "allow-env": { type: "string", multiple: true },
  "allow-read": { type: "string", multiple: true },
  "allow-write": { type: "string", multiple: true },
  "allow-net": { type: "string", multiple: true },
  "trust-signer": { type: "string", multiple: true },
  tag: { type: "string", multiple: true },
  "log-level": { type: "string" },
} as const;

/** Entry point of `jw agent`. */
export async function agentCommand(argv: string[]): Promise<number> {
  const p = parseFlags(argv, OPTIONS, false);
  if (p.values.help) {
    console.log(USAGE);
    return 0;
  }
  const config = loadConfig(AgentConfig, {
    ...(await readConfigFile(p)),
    env: environment(),
    envMap: agentEnv,
    flags: {
      id: str(p, "id"),
      seeds: list(p, "seed"),
      server: str(p, "server"),
      "dns.name": str(p, "dns"),
      "dns.nameServer": str(p, "dns-server"),
      "dns.tls": p.values["dns-tls"] === true ? true : undefined,
      data: str(p, "data"),
      allowRun: list(p, "allow-run"),
      allowCommands: list(p, "allow-command"),
      allowEnv: list(p, "allow-env"),
      "policy.read": list(p, "allow-read"),
      "policy.write": list(p, "allow-write"),
      "policy.net": list(p, "allow-net"),
      "trust.signers": list(p, "trust-signer"),
      tags: keyValues(list(p, "tag"), "tag"),
      logLevel: str(p, "log-level"),
    },
  });
  // Listen before announcing, so a signal sent right after the announcement is handled.
  const shutdown = waitForShutdownSignal();
  const agent = await startAgent(config);
  const seeds = [...(config.server ? [config.server] : []), ...config.seeds];
  const sources = [
    ...(config.dns ? [`dns ${config.dns.name}`] : []),
    ...(seeds.length ? [`seeds ${[...new Set(seeds)].join(", ")}`] : []),
  ];
  console.log(
    `jw agent ${agent.id} started (key ${agent.kid}), ${
      sources.length ? sources.join("; ") : "remembered servers"
    }`,
  );
  const signal = await shutdown;
  console.error(`jw agent: ${signal}, shutting down`);
  await agent.close();
  return 0;
}
