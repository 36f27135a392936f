/**
 * Subcommand dispatch and the one place CLI errors become exit codes:
 * 0 success, 1 failure, 2 usage or config error.
 *
 * @module
 */
import { isJwError, JwError, toJwError } from "../shared/errors.ts";
import { JW_VERSION } from "../shared/protocol/version.ts";

/** Top-level help. */
export const USAGE = `jw ${JW_VERSION} — fleet remote execution

Usage: jw <command> [options]

Commands:
  server                run a server            (jw server --help)
  server hash-password  read a password on stdin, print its bcrypt hash
  server gen-key        print a new random cluster key (base64, 32 bytes)
  agent                 run an agent            (jw agent --help)
  client                talk to a server        (jw client --help)
  sign                  sign a script for agents
  demo                  three local servers + five agents + a sample command
  version               print the version

Exit codes: 0 success, 1 failure, 2 usage or configuration error.`;

type Handler = (argv: string[]) => Promise<number>;

const commands: Record<string, () => Promise<Handler>> = {
  server: async () => (await import("./server.ts")).serverCommand,
  agent: async () => (await import("./agent.ts")).agentCommand,
  client: async () => (await import("./client.ts")).clientCommand,
  sign: async () => (await import("./sign.ts")).signCommand,
  demo: async () => (await import("./demo.ts")).demoCommand,
};

/** Runs the CLI and returns the exit code. Never throws. */
export async function main(argv: string[]): Promise<number> {
  const [name, ...rest] = argv;
  try {
    if (name === undefined || name === "help" || name === "--help" || name === "-h") {
      console.log(USAGE);
      return name === undefined ? 2 : 0;
    }
    if (name === "version" || name === "--version") {
      console.log(`jw ${JW_VERSION}`);
      return 0;
    }
    const load = commands[name];
    if (!load) throw new JwError("usage", `unknown command "${name}" (try: jw --help)`);
    return await (await load())(rest);
  } catch (err) {
    return reportError(err, name);
  }
}

/** Prints an error the way every subcommand does and returns its exit code. */
export function reportError(err: unknown, command?: string): number {
  const e = toJwError(err);
  const prefix = command && commands[command] ? `jw ${command}` : "jw";
  console.error(
    `${prefix}: ${e.code === "usage" || e.code === "config" ? "" : e.code + ": "}${e.message}`,
  );
  if (isJwError(err, "usage")) console.error(`(see: ${prefix} --help)`);
  if (e.code === "internal" && e.cause instanceof Error && e.cause.stack) {
    console.error(e.cause.stack);
  }
  return e.code === "usage" || e.code === "config" ? 2 : 1;
}
