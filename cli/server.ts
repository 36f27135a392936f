/**
 * `jw server` — run a server; `jw server hash-password` — make a bcrypt hash for
 * `auth.users` in the server config; `jw server gen-key` — make a cluster key.
 *
 * @module
 */
import bcrypt from "bcryptjs";
import { JwError } from "../shared/errors.ts";
import { loadConfig } from "../shared/config/load.ts";
import { ServerConfig, serverEnv } from "../shared/config/server.ts";
import { startServer } from "../server/mod.ts";
import { generateClusterKey } from "../server/cluster/keyring.ts";
import {
  environment,
  list,
  parseFlags,
  readConfigFile,
  str,
  waitForShutdownSignal,
} from "./_flags.ts";

const USAGE = `Usage: jw server [options]
       jw server hash-password [--cost N] < password
       jw server gen-key

Runs a server: agent WebSockets at /v1/agent, the operator API under /v1/.

Options (each also settable in the config file, or as JW_* in the environment):
  --config FILE      YAML or JSON config file                 (JW_CONFIG)
  --id ID            server id; default: generated once, kept in the data dir (JW_ID)
  --http HOST:PORT   listen address, default 127.0.0.1:7400; port 0 = any free (JW_HTTP)
  --public-url URL   URL agents and operators use to reach it (JW_PUBLIC_URL)
  --data DIR         data directory, default ./jw-data/server  (JW_DATA)
  --log-level LEVEL  error|warn|info|debug, default info       (JW_LOG_LEVEL)

Cluster (gossip between servers runs only when a cluster key is set):
  --gossip HOST:PORT gossip address, UDP and TCP; default 127.0.0.1:7401 (JW_GOSSIP)
  --seed HOST:PORT   gossip address of a server to join; repeatable (JW_SEEDS)
                     the key: cluster.key in the config file or JW_CLUSTER_KEY

Config file only (defaults shown):
  agents:
    challengeTtl: 30s       how long an agent may take to answer its challenge
    handshakeTimeout: 10s   connect-to-welcome limit
    heartbeat: 15s          alive interval asked of agents
    maxFrame: 1MiB          largest frame accepted from an agent
  auth:
    users: []               also JW_USERS as a JSON array
  cluster:
    key: ""                 cluster key from jw server gen-key (JW_CLUSTER_KEY); required
                            with seeds or a DNS name
    keys: []                further keys accepted while rotating
    name: jw                cluster name; servers of another cluster are refused
    encrypt: false          encrypt gossip (AES-256-GCM) as well as signing it
    seeds: []               as --seed
    dns:                    find seeds by SRV record, e.g.
      name: _jw-gossip._udp.example.com    (nameServer: HOST:PORT to ask another server)
    advertise: ""           address other servers send gossip to (default: as bound)
    ssdp:                   LAN discovery by UDP multicast, off by default
      enabled: false        (group: 239.255.255.250, port: 1900, interface, interval: 10s)
    probeInterval: 1s       SWIM probe interval
    probeTimeout: 500ms
    suspicionMult: 4
    gossipInterval: 200ms
    pushPullInterval: 30s

Operators log in with HTTP basic against auth.users in the config file:
  auth:
    users:
      - name: admin
        bcrypt: "$2b$10$..."     # from: jw server hash-password

jw server gen-key prints a new random cluster key (32 bytes, base64) that signs the
gossip between servers; every server of a cluster needs the same key.

On start it prints "jw server ID listening on URL" on stdout (and ", gossip on HOST:PORT"
when it has a cluster key).
SIGINT or SIGTERM shuts it down cleanly.`;

const OPTIONS = {
  config: { type: "string" },
  id: { type: "string" },
  http: { type: "string" },
  "public-url": { type: "string" },
  data: { type: "string" },
  "log-level": { type: "string" },
  gossip: { type: "string" },
  seed: { type: "string", multiple: true },
} as const;

/** Entry point of `jw server`. */
export async function serverCommand(argv: string[]): Promise<number> {
  if (argv[0] === "hash-password") return await hashPassword(argv.slice(1));
  if (argv[0] === "gen-key") return genKey(argv.slice(1));
  const p = parseFlags(argv, OPTIONS, false);
  if (p.values.help) {
    console.log(USAGE);
    return 0;
  }
  const config = loadConfig(ServerConfig, {
    ...(await readConfigFile(p)),
    env: environment(),
    envMap: serverEnv,
    flags: {
      id: str(p, "id"),
      http: str(p, "http"),
      publicUrl: str(p, "public-url"),
      data: str(p, "data"),
      logLevel: str(p, "log-level"),
      "cluster.gossip": str(p, "gossip"),
      "cluster.seeds": list(p, "seed"),
    },
  });
  // Listen before announcing, so a signal sent right after the announcement is handled.
  const shutdown = waitForShutdownSignal();
  const server = await startServer(config);
  console.log(
    `jw server ${server.id} listening on ${server.url}` +
      (server.gossip ? `, gossip on ${server.gossip}` : ""),
  );
  if (config.auth.users.length === 0) {
    console.error(
      "jw server: warning: no operator users configured (auth.users); the /v1/ API will refuse every login",
    );
  }
  const signal = await shutdown;
  console.error(`jw server: ${signal}, shutting down`);
  await server.close();
  return 0;
}

async function hashPassword(argv: string[]): Promise<number> {
  const p = parseFlags(argv, { cost: { type: "string" } }, false);
  if (p.values.help) {
    console.log(USAGE);
    return 0;
  }
  const cost = Number(str(p, "cost") ?? "10");
  if (!Number.isInteger(cost) || cost < 4 || cost > 15) {
    throw new JwError("usage", `--cost must be an integer from 4 to 15, got "${str(p, "cost")}"`);
  }
  const password = (await new Response(Deno.stdin.readable).text()).replace(/\r?\n$/, "");
  if (password.length === 0) {
    throw new JwError(
      "usage",
      "no password on stdin (try: echo -n secret | jw server hash-password)",
    );
  }
  if (new TextEncoder().encode(password).length > 72) {
    throw new JwError("usage", "password is longer than 72 bytes, which bcrypt cannot use in full");
  }
  console.log(await bcrypt.hash(password, cost));
  return 0;
}

function genKey(argv: string[]): number {
  const p = parseFlags(argv, {}, false);
  if (p.values.help) {
    console.log(USAGE);
    return 0;
  }
  console.log(generateClusterKey());
  return 0;
}
