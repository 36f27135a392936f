/**
 * The sandbox child process: `runSandboxed` starts it with `deno run`, the script's permission
 * flags and a V8 heap limit. It reads a start message on stdin, runs the script in a module
 * Worker holding the same permissions, and relays the Worker's messages to stdout as lines
 * prefixed with the run's token and the host's answers back to the Worker. It exits right after
 * the `done` line, and when stdin closes (the host went away).
 *
 * Relative imports only: it runs with `--no-config`, without an import map or npm packages, so
 * it starts fast and needs nothing but the Deno cache.
 *
 * @module
 */
import { chunk, readLines } from "./_lines.ts";
import {
  type ChildMessage,
  type EventMessage,
  LOG_LEVELS,
  MAX_MESSAGE_CHARS,
  MAX_PRINT_CHARS,
  RESERVED_CATEGORIES,
  type ResultMessage,
  type StartMessage,
} from "./_protocol.ts";
import { type WorkerInit, workerMain } from "./_worker_runtime.ts";

const MAX_STACK_CHARS = 4096;
const encoder = new TextEncoder();

function writeAll(text: string): void {
  const bytes = encoder.encode(text);
  let written = 0;
  while (written < bytes.length) written += Deno.stdout.writeSync(bytes.subarray(written));
}

function workerPermissions(list: string[]): string[] | false {
  return list.length > 0 ? list : false;
}

async function main(): Promise<void> {
  const lines = readLines(Deno.stdin.readable, MAX_MESSAGE_CHARS * 2);
  const first = await lines.next();
  if (first.done) Deno.exit(0);
  const start = JSON.parse(first.value) as StartMessage;
  const token = start.token;
  let done = false;
  const send = (msg: ChildMessage): void => writeAll(token + JSON.stringify(msg) + "\n");
  const end = (msg: ChildMessage & { t: "done" }): never => {
    done = true;
    send(msg);
    Deno.exit(0);
  };

  const runtimeUrl = URL.createObjectURL(
    new Blob([`(${workerMain.toString()})();\n`], { type: "text/javascript" }),
  );
  const worker = new Worker(runtimeUrl, {
    type: "module",
    name: start.name,
    deno: {
      permissions: {
        read: workerPermissions(start.permissions.read),
        write: workerPermissions(start.permissions.write),
        net: workerPermissions(start.permissions.net),
        env: false,
        run: false,
        sys: false,
        ffi: false,
        import: false,
      },
    },
  });
  worker.onerror = (event) => {
    event.preventDefault();
    if (!done) {
      end({ t: "done", error: { code: "internal", message: `sandbox: ${event.message}` } });
    }
  };
  worker.onmessageerror = () => {
    if (!done) end({ t: "done", error: { code: "internal", message: "sandbox: bad message" } });
  };

  const channel = new MessageChannel();
  channel.port1.onmessage = (event: MessageEvent<ChildMessage>) => {
    if (done) return;
    const msg = event.data;
    if (msg.t === "done") end(msg);
    if (msg.t === "print") {
      for (const line of (msg.text ?? "").split("\n")) {
        for (const piece of chunk(line, MAX_PRINT_CHARS)) {
          send({ t: "print", stream: msg.stream, line: piece });
        }
      }
      return;
    }
    send(msg);
  };
  const init: WorkerInit = {
    port: channel.port2,
    runtimeUrl,
    name: start.name,
    source: start.source,
    typescript: start.typescript === true,
    commands: start.commands,
    globals: start.globals,
    reserved: RESERVED_CATEGORIES,
    logLevels: LOG_LEVELS,
    maxMessageChars: MAX_MESSAGE_CHARS,
    maxStackChars: MAX_STACK_CHARS,
  };
  worker.postMessage(init, [channel.port2]);

  for await (const line of lines) {
    const msg = JSON.parse(line) as ResultMessage | EventMessage;
    if (msg.t === "result" || msg.t === "event") channel.port1.postMessage(msg);
  }
  // The host closed stdin: it no longer wants the result.
  Deno.exit(0);
}

if (import.meta.main) await main();
