import assert from "node:assert/strict";
import { FakeClock } from "../clock.ts";
import { isJwError, JwError } from "../errors.ts";
import {
  runSandboxed,
  type SandboxHost,
  type SandboxLogLevel,
  type SandboxResult,
  type SandboxRun,
} from "./mod.ts";

type Event =
  | { kind: "call"; key: string; args: unknown }
  | { kind: "emit"; data: Record<string, unknown> }
  | { kind: "log"; level: SandboxLogLevel; message: string; fields?: Record<string, unknown> }
  | { kind: "print"; stream: "stdout" | "stderr"; line: string };

/** A host that records everything, in order, and answers calls with `answer`. */
class RecordingHost implements SandboxHost {
  readonly events: Event[] = [];
  readonly signals: (AbortSignal | undefined)[] = [];
  constructor(
    readonly answer: (key: string, args: unknown) => Promise<unknown> = (_key, args) =>
      Promise.resolve({ echo: args }),
  ) {}
  call(key: string, args: unknown, signal?: AbortSignal): Promise<unknown> {
    this.events.push({ kind: "call", key, args });
    this.signals.push(signal);
    return this.answer(key, args);
  }
  emit(data: Record<string, unknown>): void {
    this.events.push({ kind: "emit", data });
  }
  log(level: SandboxLogLevel, message: string, fields?: Record<string, unknown>): void {
    this.events.push(
      fields ? { kind: "log", level, message, fields } : { kind: "log", level, message },
    );
  }
  print(stream: "stdout" | "stderr", line: string): void {
    this.events.push({ kind: "print", stream, line });
  }
  emits(): Record<string, unknown>[] {
    return this.events.flatMap((e) => (e.kind === "emit" ? [e.data] : []));
  }
  lines(stream: "stdout" | "stderr"): string[] {
    return this.events.flatMap((e) => (e.kind === "print" && e.stream === stream ? [e.line] : []));
  }
}

const NO_PERMISSIONS = { read: [], write: [], net: [] };

function run(
  source: string,
  options: Partial<SandboxRun> = {},
): Promise<SandboxResult & { host: RecordingHost }> {
  const host = (options.host as RecordingHost | undefined) ?? new RecordingHost();
  return runSandboxed({
    name: "test-script",
    source,
    permissions: NO_PERMISSIONS,
    timeoutMs: 20_000,
    commands: [],
    globals: { args: null, meta: null, job: null },
    ...options,
    host,
  }).then((result) => ({ ...result, host }));
}

function assertFailed(result: SandboxResult, code: string, message: RegExp): void {
  assert.ok(result.error, "the run failed");
  assert.equal(result.error.code, code, result.error.message);
  assert.match(result.error.message, message);
}

Deno.test("runSandboxed() round trip: globals, emit, log, print and builtin calls in order", async () => {
  const host = new RecordingHost((key, args) =>
    key === "exec.fail"
      ? Promise.reject(new JwError("not_whitelisted", "/bin/nope is not on the whitelist"))
      : Promise.resolve({ key, echo: args })
  );
  const source = `/*---
name: round-trip
version: 1
---*/
emit({ args, meta, id: job.id, hasList: typeof job.list });
log.info("starting", { n: args.n });
log.trace("no fields");
console.log("printed", { a: 1 });
const value = await exec.run({ cmd: "/usr/bin/df", args: ["-P"] });
emit({ value });
try {
  await exec.fail({});
} catch (err) {
  emit({ caught: err.message, code: err.code, isError: err instanceof Error });
}
emit({ list: await job.list() });
let frozen = false;
try { args.n = 2; } catch { frozen = true; }
console.error("done", frozen);
`;
  const result = await run(source, {
    host,
    commands: ["exec.run", "exec.fail", "job.list", "emit.x", "log.y"],
    globals: { args: { n: 7 }, meta: { ticket: "T-1" }, job: { id: "job-1", key: "script.run" } },
  });
  assert.equal(result.error, null);
  assert.ok(result.durationMs >= 0);
  assert.deepEqual(host.events, [
    {
      kind: "emit",
      data: { args: { n: 7 }, meta: { ticket: "T-1" }, id: "job-1", hasList: "function" },
    },
    { kind: "log", level: "info", message: "starting", fields: { n: 7 } },
    { kind: "log", level: "trace", message: "no fields" },
    { kind: "print", stream: "stdout", line: "printed { a: 1 }" },
    { kind: "call", key: "exec.run", args: { cmd: "/usr/bin/df", args: ["-P"] } },
    {
      kind: "emit",
      data: { value: { key: "exec.run", echo: { cmd: "/usr/bin/df", args: ["-P"] } } },
    },
    { kind: "call", key: "exec.fail", args: {} },
    {
      kind: "emit",
      data: { caught: "/bin/nope is not on the whitelist", code: "not_whitelisted", isError: true },
    },
    { kind: "call", key: "job.list", args: undefined },
    { kind: "emit", data: { list: { key: "job.list" } } },
    { kind: "print", stream: "stderr", line: "done true" },
  ]);
});

Deno.test("runSandboxed() reserved categories are not exposed and emit() refuses non-objects", async () => {
  const result = await run(
    `emit({ emit: typeof emit.x, log: typeof log.y, exec: typeof exec });
     const refused = [];
     for (const v of [[1], null, "s", 3, new Date(0)]) {
       try { emit(v); } catch (err) { refused.push(err.name); }
     }
     emit({ refused });`,
    { commands: ["emit.x", "log.y", "args.z", "meta.w"] },
  );
  assert.equal(result.error, null);
  assert.deepEqual(result.host.emits(), [
    { emit: "undefined", log: "undefined", exec: "undefined" },
    { refused: ["TypeError", "TypeError", "TypeError", "TypeError", "TypeError"] },
  ]);
});

Deno.test("runSandboxed() waits for builtin calls the script did not await", async () => {
  const result = await run(
    `exec.run({ n: 1 }).then(async (v) => { emit({ first: v }); emit({ second: await exec.run({ n: 2 }) }); });`,
    { commands: ["exec.run"] },
  );
  assert.equal(result.error, null);
  assert.deepEqual(result.host.emits(), [
    { first: { echo: { n: 1 } } },
    { second: { echo: { n: 2 } } },
  ]);
});

Deno.test("runSandboxed() read permission: /etc/shadow refused, a granted directory readable", async () => {
  const dir = await Deno.makeTempDir({ prefix: "jw-sandbox-" });
  try {
    await Deno.writeTextFile(`${dir}/data.txt`, "inside");
    const denied = await run(`await Deno.readTextFile("/etc/shadow");`);
    assertFailed(denied, "script_failed", /^NotCapable: Requires read access to "\/etc\/shadow"/);

    const allowed = await run(
      `emit({ text: await Deno.readTextFile(${JSON.stringify(`${dir}/data.txt`)}) });`,
      { permissions: { read: [dir], write: [], net: [] } },
    );
    assert.equal(allowed.error, null);
    assert.deepEqual(allowed.host.emits(), [{ text: "inside" }]);

    const outside = await run(`await Deno.readTextFile("/etc/hostname");`, {
      permissions: { read: [dir], write: [], net: [] },
    });
    assertFailed(outside, "script_failed", /Requires read access to "\/etc\/hostname"/);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("runSandboxed() write permission: only inside permissions.write", async () => {
  const dir = await Deno.makeTempDir({ prefix: "jw-sandbox-" });
  try {
    const ok = await run(`await Deno.writeTextFile(${JSON.stringify(`${dir}/out.txt`)}, "w");`, {
      permissions: { read: [], write: [dir], net: [] },
    });
    assert.equal(ok.error, null);
    assert.equal(await Deno.readTextFile(`${dir}/out.txt`), "w");

    const denied = await run(`await Deno.writeTextFile(${JSON.stringify(`${dir}/x.txt`)}, "w");`, {
      permissions: { read: [dir], write: [], net: [] },
    });
    assertFailed(denied, "script_failed", /Requires write access/);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("runSandboxed() refuses programs, environment and system information", async (t) => {
  const cases: [string, string, RegExp][] = [
    [
      "Deno.Command",
      `await new Deno.Command("/bin/sh").output();`,
      /Requires run access to "\/bin\/sh"/,
    ],
    [
      "node:child_process",
      `const cp = await import("node:child_process"); cp.execFileSync("/bin/sh", ["-c", "true"]);`,
      /^NotCapable: Requires (run|env) access/,
    ],
    ["Deno.env.get", `Deno.env.get("HOME");`, /Requires env access to "HOME"/],
    ["Deno.hostname", `Deno.hostname();`, /Requires sys access/],
    ["Deno.stdin", `await Deno.stdin.read(new Uint8Array(1));`, /Deno.stdin is not available/],
  ];
  for (const [what, source, message] of cases) {
    await t.step(what, async () => {
      assertFailed(await run(source), "script_failed", message);
    });
  }
});

Deno.test("runSandboxed() fetch reaches a loopback server only when permissions.net names it", async () => {
  await using server = Deno.serve(
    { hostname: "127.0.0.1", port: 0, onListen: () => {} },
    () => new Response("pong"),
  );
  const target = `127.0.0.1:${server.addr.port}`;
  const source =
    `const res = await fetch("http://${target}/ping"); emit({ body: await res.text() });`;

  const denied = await run(source);
  assertFailed(denied, "script_failed", new RegExp(`Requires net access to "${target}"`));

  const other = await run(source, { permissions: { read: [], write: [], net: ["127.0.0.1:1"] } });
  assertFailed(other, "script_failed", /Requires net access/);

  const allowed = await run(source, { permissions: { read: [], write: [], net: [target] } });
  assert.equal(allowed.error, null);
  assert.deepEqual(allowed.host.emits(), [{ body: "pong" }]);
});

Deno.test("runSandboxed() refuses remote, npm and unreadable local imports without fetching", async () => {
  let requests = 0;
  await using server = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen: () => {} }, () => {
    requests++;
    return new Response("export default 1;", { headers: { "content-type": "text/javascript" } });
  });
  const target = `127.0.0.1:${server.addr.port}`;
  const net = { read: [], write: [], net: [target] };

  const remote = await run(`await import("https://example.com/x.js");`);
  assertFailed(remote, "script_failed", /Requires import access to "example.com:443"/);

  // Even with net access to the server, importing from it is refused before any request.
  const loopback = await run(`await import("http://${target}/x.js");`, { permissions: net });
  assertFailed(loopback, "script_failed", /import access/);
  const staticImport = await run(`import x from "http://${target}/y.js";`, { permissions: net });
  assertFailed(staticImport, "script_failed", /import access/);
  assert.equal(requests, 0, "the server saw no request");

  const npm = await run(`await import("npm:left-pad@1.3.0");`);
  assertFailed(npm, "script_failed", /--no-npm/);

  const passwd = await run(`await import("file:///etc/passwd");`);
  assertFailed(passwd, "script_failed", /Requires read access to "\/etc\/passwd"/);

  const dir = await Deno.makeTempDir({ prefix: "jw-sandbox-" });
  try {
    await Deno.writeTextFile(`${dir}/lib.js`, "export const v = 42;");
    const source = `const { v } = await import("file://${dir}/lib.js"); emit({ v });`;
    assertFailed(await run(source), "script_failed", /Requires read access/);
    const granted = await run(source, { permissions: { read: [dir], write: [], net: [] } });
    assert.equal(granted.error, null);
    assert.deepEqual(granted.host.emits(), [{ v: 42 }]);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("runSandboxed() stops an endless loop at the timeout and aborts pending calls", async () => {
  const looping = await run(`while (true) {}`, { timeoutMs: 1000 });
  assert.deepEqual(looping.error, { code: "timeout", message: "script stopped after 1s" });

  // A call that never answers: the run still ends, and the call's signal says so.
  const host = new RecordingHost(() => new Promise(() => {}));
  const waiting = await run(`await exec.run({});`, {
    host,
    timeoutMs: 1000,
    commands: ["exec.run"],
  });
  assert.equal(waiting.error?.code, "timeout");
  assert.equal(host.signals.length, 1);
  assert.equal(host.signals[0]?.aborted, true);
});

Deno.test("runSandboxed() takes the timeout and duration from the given Clock", async () => {
  const clock = new FakeClock();
  const pending = run(`while (true) {}`, { clock, timeoutMs: 120_000 });
  assert.equal(clock.pending, 1, "the timeout is armed");
  await clock.advance(120_000);
  const result = await pending;
  assert.deepEqual(result.error, { code: "timeout", message: "script stopped after 2m" });
  assert.equal(result.durationMs, 120_000);
  assert.equal(clock.pending, 0, "no timer left behind");
});

Deno.test("runSandboxed() ends with resource_limit past the heap limit; the host keeps working", async (t) => {
  const sources: [string, string][] = [
    [
      "100 flat 1 MiB strings",
      `const a = []; for (let i = 0; i < 100; i++) { const s = "x".repeat(1 << 20) + i; s.charCodeAt(1); a.push(s); }`,
    ],
    // repeat() alone makes a tree of slices that stays small; toUpperCase() writes it out flat.
    ["a 100M-character string", `const s = "x".repeat(1e8).toUpperCase(); emit({ n: s.length });`],
    [
      "100 MB of arrays",
      `const a = []; for (let i = 0; i < 100; i++) a.push(new Array(1 << 17).fill(i + 0.5));`,
    ],
  ];
  for (const [what, source] of sources) {
    await t.step(what, async () => {
      const result = await run(source, { memoryMb: 64 });
      assert.deepEqual(result.error, {
        code: "resource_limit",
        message: "script went past its memory limit of 64 MiB",
      });
      assert.deepEqual(result.host.lines("stderr"), [], "V8's report is not printed");
    });
  }
  const after = await run(`emit({ ok: true });`);
  assert.equal(after.error, null);
  assert.deepEqual(after.host.emits(), [{ ok: true }]);
});

Deno.test("runSandboxed() abort stops the script with closed", async () => {
  const controller = new AbortController();
  const host = new RecordingHost(() => {
    controller.abort("agent stopping");
    return new Promise(() => {});
  });
  const aborted = await run(`await exec.run({}); emit({ never: true });`, {
    host,
    signal: controller.signal,
    commands: ["exec.run"],
  });
  assert.deepEqual(aborted.error, { code: "closed", message: "agent stopping" });
  assert.deepEqual(host.emits(), []);

  const early = new AbortController();
  early.abort();
  const before = await run(`emit({ never: true });`, { signal: early.signal });
  assert.deepEqual(before.error, { code: "closed", message: "script stopped" });
  assert.deepEqual(before.host.events, []);
});

Deno.test("runSandboxed() reports uncaught errors as script_failed", async (t) => {
  const cases: [string, string, RegExp][] = [
    [
      "a syntax error",
      `emit({});\nconst x = ;\n`,
      /^SyntaxError: Expression expected at test-script:2:11$/,
    ],
    [
      "a thrown error",
      `function f() { throw new RangeError("boom"); }\nf();`,
      /^RangeError: boom$/,
    ],
    ["a thrown string", `throw "plain";`, /^Uncaught "plain"$/],
    [
      "a timer's error",
      `setTimeout(() => { throw new Error("later"); }, 1);\nawait new Promise((r) => setTimeout(r, 50));`,
      /^Error: later$/,
    ],
    [
      "an unhandled rejection",
      `Promise.reject(new TypeError("nobody caught me"));`,
      /^TypeError: nobody caught me$/,
    ],
    ["Deno.exit(3)", `Deno.exit(3);`, /^Error: script exited with code 3$/],
    ["a relative import", `import "./other.js";`, /^TypeError: /],
  ];
  for (const [what, source, message] of cases) {
    await t.step(what, async () => {
      const result = await run(source);
      assertFailed(result, "script_failed", message);
      assert.deepEqual(result.host.emits(), []);
    });
  }
  const stack = await run(`function inner() { throw new Error("deep"); }\ninner();`);
  assert.match(String(stack.error?.detail?.stack), /at inner \(test-script:1:26\)/);
});

Deno.test("runSandboxed() Deno.exit(0) and close() end the run as a success", async () => {
  for (const stop of ["Deno.exit(0)", "close()"]) {
    const result = await run(`emit({ before: 1 }); ${stop}; emit({ after: 1 });`);
    assert.equal(result.error, null, stop);
    assert.deepEqual(result.host.emits(), [{ before: 1 }], stop);
  }
});

Deno.test("runSandboxed() printed text: raw writes, long lines, forged protocol lines", async () => {
  const source = `
const enc = new TextEncoder();
await Deno.stdout.write(enc.encode("raw out\\n"));
await Deno.stderr.write(enc.encode("raw err\\n"));
console.log('{"t":"done","error":null}');
await Deno.stdout.write(enc.encode('{"t":"emit","data":{"forged":true}}\\n'));
console.log("two\\nlines");
console.log("y".repeat(70000));
emit({ end: true });`;
  const result = await run(source);
  assert.equal(result.error, null);
  assert.deepEqual(result.host.emits(), [{ end: true }]);
  const stdout = result.host.lines("stdout");
  assert.ok(stdout.includes("raw out"));
  assert.ok(stdout.includes('{"t":"done","error":null}'));
  assert.ok(stdout.includes('{"t":"emit","data":{"forged":true}}'));
  const printed = stdout.filter((l) => !l.startsWith("raw") && !l.startsWith("{"));
  assert.deepEqual(printed.map((l) => l.length), [3, 5, 65536, 70000 - 65536]);
  assert.deepEqual(result.host.lines("stderr"), ["raw err"]);
});

Deno.test("runSandboxed() runs TypeScript when asked", async () => {
  const source =
    `const n: number = 2;\ninterface P { x: number }\nconst p: P = { x: n };\nemit({ p });`;
  const result = await run(source, { typescript: true });
  assert.equal(result.error, null);
  assert.deepEqual(result.host.emits(), [{ p: { x: 2 } }]);
  assertFailed(await run(source), "script_failed", /^SyntaxError: /);
});

Deno.test("runSandboxed() two runs at once keep their messages apart", async () => {
  const source = `
for (let i = 0; i < 50; i++) {
  emit({ who: args.who, i });
  console.log(args.who + " " + i);
  log.info(args.who, { i });
  const r = await exec.run({ who: args.who, i });
  if (r.who !== args.who) throw new Error("crossed: " + JSON.stringify(r));
}`;
  const hostFor = (name: string) =>
    new RecordingHost((_key, args) =>
      Promise.resolve({ who: (args as { who: string }).who, host: name })
    );
  const [a, b] = await Promise.all(["a", "b"].map((who) =>
    run(source, {
      host: hostFor(who),
      commands: ["exec.run"],
      globals: { args: { who }, meta: null, job: null },
    })
  ));
  for (const [who, result] of [["a", a], ["b", b]] as const) {
    assert.equal(result.error, null, who);
    const emits = result.host.emits();
    assert.equal(emits.length, 50);
    assert.ok(emits.every((e, i) => e.who === who && e.i === i), who);
    assert.deepEqual(
      result.host.lines("stdout"),
      Array.from({ length: 50 }, (_, i) => `${who} ${i}`),
    );
    for (const event of result.host.events) {
      if (event.kind === "log") assert.equal(event.message, who);
      if (event.kind === "call") assert.equal((event.args as { who: string }).who, who);
    }
  }
});

Deno.test("runSandboxed() refuses malformed runs before starting anything", async (t) => {
  const cases: [string, Partial<SandboxRun>, RegExp][] = [
    ["a bad command key", { commands: ["exec"] }, /command key "exec"/],
    [
      "a relative read path",
      { permissions: { read: ["etc"], write: [], net: [] } },
      /read permission/,
    ],
    [
      "a path with a comma",
      { permissions: { read: [], write: ["/a,b"], net: [] } },
      /without commas/,
    ],
    ["a bad net entry", { permissions: { read: [], write: [], net: ["a b"] } }, /net permission/],
    ["a zero timeout", { timeoutMs: 0 }, /timeoutMs/],
    ["a tiny heap", { memoryMb: 1 }, /memoryMb/],
    ["an empty name", { name: "" }, /name/],
  ];
  for (const [what, options, message] of cases) {
    await t.step(what, async () => {
      await assert.rejects(run("emit({});", options), (err) => {
        assert.ok(isJwError(err, "invalid_args"));
        assert.match(err.message, message);
        return true;
      });
    });
  }
});

/** A host whose `test.stream` call sends `args.n` events `{n: i}`, then resolves. */
class StreamingHost extends RecordingHost {
  override call(
    key: string,
    args: unknown,
    signal?: AbortSignal,
    onEvent?: (value: unknown) => void,
  ): Promise<unknown> {
    this.events.push({ kind: "call", key, args });
    this.signals.push(signal);
    if (key !== "test.stream") return Promise.resolve({ streamed: onEvent !== undefined });
    const n = (args as { n: number }).n;
    for (let i = 1; i <= n; i++) onEvent?.({ n: i });
    return Promise.resolve({ count: n });
  }
}

Deno.test("runSandboxed() streaming calls: a handler gets each event; what it returns is emitted", async (t) => {
  const commands = ["test.stream", "test.plain"];
  await t.step("filter and reshape, in order, before the call's result", async () => {
    const { error, host } = await run(
      `const r = await test.stream({ n: 5 }, (e) => e.n % 2 ? { odd: e.n } : null);
       emit({ total: r.count });`,
      { host: new StreamingHost(), commands },
    );
    assert.equal(error, null);
    assert.deepEqual(host.emits(), [{ odd: 1 }, { odd: 3 }, { odd: 5 }, { total: 5 }]);
  });
  await t.step("a handler may emit itself, aggregate, and return a promise", async () => {
    const { error, host } = await run(
      `let sum = 0;
       await test.stream({ n: 4 }, async (e) => { sum += e.n; if (e.n === 4) emit({ sum }); });
       const plain = await test.plain({});
       emit(plain);`,
      { host: new StreamingHost(), commands },
    );
    assert.equal(error, null);
    assert.deepEqual(host.emits(), [{ sum: 10 }, { streamed: false }]);
  });
  await t.step("a handler that throws fails the run", async () => {
    const result = await run(
      `await test.stream({ n: 3 }, (e) => { if (e.n === 2) throw new Error("bad event"); });`,
      { host: new StreamingHost(), commands },
    );
    assertFailed(result, "script_failed", /bad event/);
  });
  await t.step("a handler that is not a function is refused", async () => {
    const result = await run(`await test.stream({ n: 1 }, 42);`, {
      host: new StreamingHost(),
      commands,
    });
    assertFailed(result, "script_failed", /handler must be a function/);
  });
});
