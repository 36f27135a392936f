/**
 * The script sandbox: runs one script (a JavaScript module, or TypeScript on request) with
 * exactly the permissions it is given, a timeout and a heap limit, and bridges its builtin
 * calls, `emit`, `log` and printed text to a {@link SandboxHost}.
 *
 * ```ts
 * const result = await runSandboxed({
 *   name: "disk-report",
 *   source: 'const r = await exec.run({ cmd: "/usr/bin/df", args: ["-P"] }); emit({ r });',
 *   permissions: { read: ["/var/log/app"], write: [], net: [] },
 *   timeoutMs: 30_000,
 *   commands: ["exec.run"],
 *   globals: { args: {}, meta: {}, job: { id: "j1" } },
 *   host, // call / emit / log / print
 * });
 * // result.error: null, or {code: "script_failed" | "timeout" | "resource_limit" | "closed", ...}
 * ```
 *
 * ## Layers
 *
 * 1. **A child process per run** (`child.ts`): `deno run --no-config --no-lock --no-prompt
 *    --no-remote --no-npm --cached-only --quiet --unstable-worker-options
 *    --v8-flags=--max-old-space-size=<memoryMb>` plus `--allow-read=…`, `--allow-write=…`,
 *    `--allow-net=…` equal to the script's permissions and nothing else (no env, sys, ffi, run,
 *    import). Its environment is cleared except `NO_COLOR` and what Deno needs to find its cache
 *    (`DENO_DIR`, else `HOME` and `XDG_CACHE_HOME`); its working directory is `/`. Deno Workers
 *    have no heap limit of their own, so the V8 heap limit needs a process: a script that goes
 *    past it kills only this process (V8 aborts it), and the host reports `resource_limit`. A
 *    timeout or abort SIGKILLs it, which also stops `while (true) {}`.
 * 2. **A module Worker in that process** with the same permissions (`read`, `write`, `net` as
 *    given; `env`, `run`, `sys`, `ffi`, `import` false). Its program (`_worker_runtime.ts`)
 *    installs the script's globals, hides `Deno.stdin`, routes `console` output through a
 *    private MessagePort, and imports the script from a blob URL. Remote modules are refused
 *    twice (the `import` permission and `--no-remote`) and `npm:` specifiers are refused
 *    (`--no-npm`), before any network access; a local `file:` import needs read permission.
 * 3. **The script**: an ES module; top-level await works.
 *
 * Host ↔ child: NDJSON on the child's stdin (a start message, then call results) and lines on its
 * stdout that begin with a random per-run token followed by JSON (calls, emits, logs, console
 * lines, the final `done`). The token goes to the child on stdin before the Worker exists and
 * never to the Worker; stdout lines without it are text the script wrote to `Deno.stdout` and go
 * to `host.print("stdout", …)`; stderr lines go to `host.print("stderr", …)`, except V8's
 * out-of-memory report. Every protocol message has a limit of 8 MiB of JSON (a bigger `emit`,
 * `log` or call argument throws a RangeError in the script), printed lines arrive in pieces of
 * at most 64 KiB, and a run may have at most {@link MAX_CALLS_IN_FLIGHT} builtin calls at once.
 *
 * ## What a script sees
 *
 * - `args`, `meta`, `job`: the run's globals, deep-frozen read-only values.
 * - `emit(obj)`: structured output; `obj` must be a plain object (TypeError for arrays and
 *   anything else) and JSON.
 * - `log.error|warn|info|debug|trace(message, fields?)`.
 * - One object per builtin category with one async function per command:
 *   `await exec.run({ cmd: "/usr/bin/df", args: ["-P"] })`. A rejected call throws an `Error`
 *   with the host error's `.code` and `.message`. A key `a.b.c` nests (`a.b.c()`). A category
 *   that is already a global object gets its methods added to it without replacing what is
 *   there (`job.id` and `await job.list()`; a `job` global that is not an object becomes one
 *   holding just the methods); the categories `args`, `meta`, `emit` and `log` are
 *   reserved and never exposed, nor is one whose name is a global primitive value.
 * - Streaming calls: `await file.tail({ path }, (line) => …)`. With a handler as the second
 *   argument, each output of the command reaches the handler as it comes (a structured output
 *   as is, a text line as `{stream, text}`); what the handler returns, if an object, is
 *   emitted (return null to drop the event), and it may call `emit` itself. The call resolves
 *   when the command ends. A handler that throws fails the run.
 * - `console.log|info|debug|dir` print to stdout, `console.error|warn|trace|assert` to stderr,
 *   in order with `emit` and `log`. Direct writes to `Deno.stdout`/`Deno.stderr` also arrive, by
 *   line, but without an order relative to the rest.
 *
 * ## When a run ends
 *
 * - When the module's evaluation has settled and no builtin call is pending: a script that
 *   forgets to `await` a call is allowed to finish it, and calls made from that call's
 *   continuations too. Other pending work (timers, `fetch`, file reads) is not waited for: the
 *   process is killed, and with it any pending timers.
 * - At the first uncaught exception, in the module or later (a timer callback, an unhandled
 *   rejection): `script_failed` with `"<Error name>: <message>"` and `detail.stack` (the script
 *   URL replaced by its name). A script that does not parse fails the same way with
 *   `"SyntaxError: <parser message> at <name>:<line>:<column>"`.
 * - `Deno.exit(0)` and `close()` end the run at once as a success; `Deno.exit(n)` as
 *   `script_failed` "script exited with code n".
 * - After `timeoutMs`: `timeout`; on `signal` abort: `closed`; past the heap limit:
 *   `resource_limit`. Builtin calls still running then get their `signal` aborted and are not
 *   awaited; every other host callback has been made before `runSandboxed` resolves.
 *
 * ## Limits to know
 *
 * - The heap limit is V8's old-space limit per isolate. ArrayBuffer and typed-array memory lives
 *   outside the V8 heap and is not counted; Workers that a script starts itself (the global
 *   `Worker` or `node:worker_threads`) each get their own heap of that size.
 * - The runtime layer (globals, console routing) is not a security boundary: a script can
 *   tamper with it, which only changes its own run's output. The boundary is the Deno
 *   permissions of the Worker and of the process around it.
 * - Each run costs one `deno run`: an empty script takes about 65 ms from start to result, and
 *   the idle child holds about 50 MB RSS (2 cores, transpiled files already in the Deno cache).
 * - **Compiled binaries** (`deno compile`) are not supported: there `Deno.execPath()` is the `jw`
 *   binary, which cannot `run` `child.ts` and whose permissions are fixed at compile time. A
 *   compiled `jw` would need a hidden subcommand that runs the child code from its embedded
 *   files, take the heap limit from `DENO_V8_FLAGS` in the child's environment, and rely on the
 *   Worker's permissions alone (the child process would hold all of `jw`'s permissions).
 *
 * @module
 */
export {
  DEFAULT_SANDBOX_MEMORY_MB,
  MAX_CALLS_IN_FLIGHT,
  runSandboxed,
  type SandboxHost,
  type SandboxLogLevel,
  type SandboxPermissions,
  type SandboxResult,
  type SandboxRun,
} from "./run.ts";
