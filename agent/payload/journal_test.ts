import assert from "node:assert/strict";
import { posix } from "node:path";
import { FakeClock } from "../../shared/clock.ts";
import { JwError } from "../../shared/errors.ts";
import {
  Log as LogSchema,
  type Output,
  Output as OutputSchema,
  type Reply,
} from "../../shared/protocol/mod.ts";
import { openAgentDatabase } from "../db.ts";
import { createDenoExecutor } from "../deno_executor.ts";
import type { CommandExecutor, Process } from "../executor.ts";
import { FakeExecutor, FakeProcess } from "../_fake_executor.ts";
import { jobHarness, type JobHarnessOptions } from "../_job_harness.ts";
import { isAlive } from "../_proc.ts";
import { type ExportEntry, writeJournal } from "../../tests/helpers/journal.ts";
import {
  decodeJournalEntry,
  JournalArgs,
  journalctlArgs,
  type JournalEntry,
  KILL_GRACE_MS,
} from "./journal.ts";

const JOURNALCTL = "/usr/bin/journalctl";
const BOOT = "0123456789abcdef0123456789abcdef";
/** 2023-11-14T22:13:20Z in microseconds. */
const T0_US = 1_700_000_000_000_000n;

// ---------------------------------------------------------------------------------------
// Journal files made with systemd's own tools.

const enc = new TextEncoder();

/** An entry `n` seconds after T0 with the clock fields journald needs, plus `fields`. */
function entryAt(n: number, fields: ExportEntry): ExportEntry {
  return {
    __REALTIME_TIMESTAMP: String(T0_US + BigInt(n) * 1_000_000n),
    __MONOTONIC_TIMESTAMP: String(1_000_000 + n * 1_000_000),
    _BOOT_ID: BOOT,
    ...fields,
  };
}

/** A temp directory holding journal files, removed on dispose. */
async function tempDir(): Promise<{ path: string } & AsyncDisposable> {
  const path = await Deno.realPath(await Deno.makeTempDir({ prefix: "jw-journal-" }));
  return {
    path,
    [Symbol.asyncDispose]: () => Deno.remove(path, { recursive: true }),
  };
}

/** The entries of the journal fixture most tests read. */
const BASE: ExportEntry[] = [
  entryAt(0, {
    MESSAGE: "web started",
    PRIORITY: "6",
    _SYSTEMD_UNIT: "web.service",
    SYSLOG_IDENTIFIER: "web",
    _PID: "101",
    _HOSTNAME: "host-a",
    REQUEST_ID: "r-1",
  }),
  entryAt(1, {
    // A binary MESSAGE: a newline and a byte that is not UTF-8.
    MESSAGE: Uint8Array.of(...enc.encode("line one\nline two "), 0xff),
    PRIORITY: "3",
    _SYSTEMD_UNIT: "db.service",
    SYSLOG_IDENTIFIER: "db",
    _PID: "202",
    BLOB: Uint8Array.of(0x68, 0x69, 0x00),
  }),
  entryAt(2, {
    MESSAGE: "web failed",
    PRIORITY: "2",
    _SYSTEMD_UNIT: "web.service",
    SYSLOG_IDENTIFIER: "web",
    _PID: "101",
  }),
  entryAt(3, { MESSAGE: "no priority", _SYSTEMD_UNIT: "db.service", SYSLOG_IDENTIFIER: "db" }),
];

// ---------------------------------------------------------------------------------------
// Harness helpers.

/** The real executor, remembering each started pid and argument vector. */
function spyExecutor(): CommandExecutor & { started: { pid: number; args: string[] }[] } {
  const inner = createDenoExecutor();
  const started: { pid: number; args: string[] }[] = [];
  return {
    started,
    spawn(spec) {
      const proc = inner.spawn(spec);
      started.push({ pid: proc.pid, args: spec.args });
      return proc;
    },
  };
}

function harness(dir: string, over: Partial<JobHarnessOptions> = {}) {
  return jobHarness({
    executor: createDenoExecutor(),
    allowRun: [JOURNALCTL],
    paths: { read: [dir], write: [] },
    ...over,
  });
}

/** Data outputs (not the done one) of `frames`, checked against the wire schema. */
function entriesOf(frames: Reply[]): JournalEntry[] {
  return frames
    .filter((f): f is Output => f.type === "output" && !f.done && f.data !== undefined)
    .map((f) => {
      OutputSchema.parse(f);
      return f.data as unknown as JournalEntry;
    });
}

function doneOf(frames: Reply[]): Output {
  const last = frames.at(-1) as Output;
  assert.equal(last.done, true, JSON.stringify(last));
  return last;
}

function logsOf(frames: Reply[]): string[] {
  return frames.filter((f) => f.type === "log").map((f) => LogSchema.parse(f).message);
}

/** Polls `cond` every 20 ms (real time) until it holds or `ms` pass. */
async function waitFor(cond: () => boolean, what: string, ms = 10_000): Promise<void> {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error(`still waiting for ${what} after ${ms}ms`);
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}

let ids = 0;

/** Runs `journal.watch` once with `args` and returns its replies. */
function watch(h: ReturnType<typeof harness>, args: Record<string, unknown>): Promise<Reply[]> {
  return h.run({ id: `env-${++ids}`, job: { key: "journal.watch", args } });
}

// ---------------------------------------------------------------------------------------
// Pure parts.

Deno.test("decodeJournalEntry turns journalctl JSON into the entry output", async (t) => {
  const cursor = "s=1;i=2;b=3;m=4;t=5;x=6";
  await t.step("text fields, trusted fields promoted, user fields kept", () => {
    const entry = decodeJournalEntry({
      __CURSOR: cursor,
      __REALTIME_TIMESTAMP: "1700000000123456",
      __MONOTONIC_TIMESTAMP: "5",
      MESSAGE: "hello",
      PRIORITY: "4",
      _SYSTEMD_UNIT: "a.service",
      UNIT: "other.service",
      SYSLOG_IDENTIFIER: "app",
      _PID: "42",
      _HOSTNAME: "h",
      _BOOT_ID: "b",
      CODE_LINE: "7",
    });
    assert.deepEqual(entry, {
      message: "hello",
      priority: 4,
      level: "warning",
      ts: "2023-11-14T22:13:20.123Z",
      unit: "a.service",
      identifier: "app",
      pid: 42,
      hostname: "h",
      cursor,
      fields: { UNIT: "other.service", CODE_LINE: "7" },
    });
  });
  await t.step("byte arrays decode as UTF-8 with replacement; repeated fields", () => {
    const entry = decodeJournalEntry({
      __CURSOR: cursor,
      MESSAGE: [...enc.encode("a\nb"), 0xc3],
      BIN: [0x68, 0x69],
      TAG: ["x", [0x79], null],
      EMPTY: [],
    })!;
    assert.equal(entry.message, "a\nb\ufffd");
    assert.deepEqual(entry.fields, { BIN: "hi", TAG: ["x", "y", null], EMPTY: "" });
    assert.equal(entry.ts, null);
    assert.equal("unit" in entry || "pid" in entry || "identifier" in entry, false);
  });
  await t.step("no or bad PRIORITY is info; UNIT stands in for _SYSTEMD_UNIT", () => {
    for (const PRIORITY of [undefined, "9", "x", ["1", "2"]]) {
      const entry = decodeJournalEntry({ __CURSOR: cursor, PRIORITY, UNIT: "u.service" })!;
      const expected = Array.isArray(PRIORITY) ? [1, "alert"] : [6, "info"];
      assert.deepEqual([entry.priority, entry.level], expected, String(PRIORITY));
      assert.equal(entry.unit, "u.service");
    }
  });
  await t.step("fields journalctl left out are null and named in omitted", () => {
    const entry = decodeJournalEntry({ __CURSOR: cursor, MESSAGE: null, BIG: null, OK: "1" })!;
    assert.equal(entry.message, "");
    assert.deepEqual(entry.fields, { BIG: null, OK: "1" });
    assert.deepEqual(entry.omitted, ["BIG", "MESSAGE"]);
  });
  await t.step("a repeated MESSAGE is joined with newlines", () => {
    const entry = decodeJournalEntry({ __CURSOR: cursor, MESSAGE: ["one", [0x74, 0x77, 0x6f]] })!;
    assert.equal(entry.message, "one\ntwo");
  });
  await t.step("what is not an entry", () => {
    for (const raw of [null, 3, "x", [], {}, { __CURSOR: 5 }, { __CURSOR: "" }]) {
      assert.equal(decodeJournalEntry(raw), undefined, JSON.stringify(raw));
    }
  });
});

Deno.test("journalctlArgs builds journalctl's argument vector; a cursor wins over since", () => {
  const args = JournalArgs.parse({
    unit: "web.service",
    identifier: "-web",
    since: "-1h",
    priority: "warning",
  });
  assert.deepEqual(journalctlArgs(args, { kind: "system" }, undefined), [
    "-o",
    "json",
    "--no-pager",
    "-f",
    "-u",
    "web.service",
    "-t",
    "-web",
    "-p",
    "4",
    "--since=-1h",
  ]);
  const finite = JournalArgs.parse({ follow: false, since: "today" });
  assert.deepEqual(journalctlArgs(finite, { kind: "file", path: "/j/x.journal" }, "s=1;i=2"), [
    "-o",
    "json",
    "--no-pager",
    "--file=/j/x.journal",
    "--after-cursor=s=1;i=2",
  ]);
  assert.deepEqual(
    journalctlArgs(JournalArgs.parse({ priority: 0 }), { kind: "directory", path: "/j" }, undefined)
      .slice(3),
    ["-f", "-D", "/j", "-p", "0"],
  );
});

Deno.test("journal.watch refuses bad arguments with invalid_args naming the argument", async (t) => {
  await using dir = await tempDir();
  const executor = new FakeExecutor((p) => p.exit(0));
  await using h = harness(dir.path, { executor });
  const cases: [string, Record<string, unknown>, RegExp][] = [
    ["a unit with a space", { unit: "web service" }, /unit: a unit name has only/],
    ["a unit with a slash", { unit: "../x" }, /unit: /],
    ["a unit glob", { unit: "web*" }, /unit: /],
    ["a since with a quote", { since: "today'" }, /since: a time has only/],
    ["an unknown priority", { priority: "warn" }, /priority: expected one of emerg, .* or 0-7/],
    ["priority 8", { priority: 8 }, /priority: /],
    ["a relative file", { file: "x.journal" }, /file: must be an absolute path/],
    ["a glob in the file", { file: `${dir.path}/*.journal` }, /file: may not contain glob/],
    ["file and directory", { file: "/a", directory: "/b" }, /at most one of file and directory/],
    ["a relative journalctl", { journalctl: "journalctl" }, /journalctl: must be an absolute/],
    ["a bad for", { for: "soon" }, /for: expected a positive duration/],
    ["a zero for", { for: 0 }, /for: expected a positive duration/],
    ["an unknown key", { lines: 10 }, /lines/],
    ["an identifier with a newline", { identifier: "a\nb" }, /identifier: /],
  ];
  for (const [name, args, message] of cases) {
    await t.step(name, async () => {
      const done = doneOf(await watch(h, args));
      assert.equal(done.error?.code, "invalid_args");
      assert.match(done.error!.message, message);
    });
  }
  assert.equal(executor.spawned.length, 0, "journalctl never started");
  const ok = JournalArgs.parse({ unit: "-.mount" });
  assert.equal(ok.unit, "-.mount", "the root mount unit's name is fine");
  assert.equal(JournalArgs.parse({ unit: "user@1000.service" }).follow, true);
  assert.equal(JournalArgs.parse({ unit: "sys-devices-x\\x2dy.device" }).journalctl, JOURNALCTL);
});

// ---------------------------------------------------------------------------------------
// A real journalctl reading real journal files.

Deno.test("journal.watch with follow: false reads a journal file and decodes every entry", async () => {
  await using dir = await tempDir();
  const file = posix.join(dir.path, "base.journal");
  await writeJournal(file, BASE);
  await using h = harness(dir.path);
  const frames = await watch(h, { file, follow: false });
  const done = doneOf(frames);
  assert.equal(done.error, null, JSON.stringify(done.error));
  assert.deepEqual(done.data, { entries: 4 });
  const entries = entriesOf(frames);
  assert.deepEqual(entries.map((e) => e.message), [
    "web started",
    "line one\nline two \ufffd",
    "web failed",
    "no priority",
  ]);
  assert.deepEqual(entries.map((e) => [e.priority, e.level]), [
    [6, "info"],
    [3, "err"],
    [2, "crit"],
    [6, "info"],
  ]);
  assert.deepEqual(entries.map((e) => e.ts), [
    "2023-11-14T22:13:20.000Z",
    "2023-11-14T22:13:21.000Z",
    "2023-11-14T22:13:22.000Z",
    "2023-11-14T22:13:23.000Z",
  ]);
  const [first, second] = entries;
  assert.equal(first.unit, "web.service");
  assert.equal(first.identifier, "web");
  assert.equal(first.pid, 101);
  assert.equal(first.hostname, "host-a");
  assert.deepEqual(first.fields, { REQUEST_ID: "r-1" });
  assert.deepEqual(second.fields, { BLOB: "hi\u0000" });
  assert.equal(second.hostname, undefined);
  const cursors = entries.map((e) => e.cursor);
  assert.ok(cursors.every((c) => /^s=[0-9a-f]+;i=[0-9a-f]+;/.test(c)), cursors.join(" "));
  assert.equal(new Set(cursors).size, 4);
  assert.deepEqual(logsOf(frames), []);
});

Deno.test("journal.watch filters by unit, identifier and priority through journalctl", async (t) => {
  await using dir = await tempDir();
  const file = posix.join(dir.path, "base.journal");
  await writeJournal(file, BASE);
  const executor = spyExecutor();
  await using h = harness(dir.path, { executor });
  const cases: [string, Record<string, unknown>, string[], string[]][] = [
    ["unit", { unit: "web.service" }, ["web started", "web failed"], ["-u", "web.service"]],
    ["identifier", { identifier: "db" }, ["line one\nline two \ufffd", "no priority"], [
      "-t",
      "db",
    ]],
    ["priority err", { priority: "err" }, ["line one\nline two \ufffd", "web failed"], [
      "-p",
      "3",
    ]],
    ["unit and priority", { unit: "web.service", priority: 2 }, ["web failed"], ["-p", "2"]],
    ["since", { since: "@1700000002" }, ["web failed", "no priority"], ["--since=@1700000002"]],
  ];
  for (const [name, args, messages, argv] of cases) {
    await t.step(name, async () => {
      const frames = await watch(h, { file, follow: false, ...args });
      assert.equal(doneOf(frames).error, null);
      const entries = entriesOf(frames);
      assert.deepEqual(entries.map((e) => e.message), messages);
      if (args.unit) assert.ok(entries.every((e) => e.unit === args.unit));
      const started = executor.started.at(-1)!.args;
      for (let i = 0; i < argv.length; i++) assert.ok(started.includes(argv[i]), started.join(" "));
      assert.equal(started.includes("-f"), false);
    });
  }
});

Deno.test("journal.watch reads a journal directory (-D)", async () => {
  await using dir = await tempDir();
  await writeJournal(posix.join(dir.path, "a.journal"), BASE.slice(0, 2));
  await using h = harness(dir.path);
  const frames = await watch(h, { directory: dir.path, follow: false });
  assert.equal(doneOf(frames).error, null);
  assert.deepEqual(entriesOf(frames).map((e) => e.unit), ["web.service", "db.service"]);
});

Deno.test("journal.watch resumes after the saved cursor across an agent restart, over since", async () => {
  await using dir = await tempDir();
  const file = posix.join(dir.path, "resume.journal");
  await writeJournal(file, BASE);
  const dbDir = posix.join(dir.path, "agent");
  await Deno.mkdir(dbDir);
  // `since` would take every entry: the saved cursor must win over it.
  const spec = {
    id: "follow-db",
    key: "journal.watch",
    args: { file, follow: false, since: "@1700000000" },
    persistent: true,
  };
  const runOf = async (h: ReturnType<typeof harness>, envelope: string) => {
    await h.run({ id: envelope, job: spec });
    await waitFor(() => h.doneRuns("follow-db").length === 1, "the run's done");
    const frames = h.frames.filter((f) => f.id === envelope);
    assert.equal(doneOf(frames).error, null, JSON.stringify(doneOf(frames).error));
    return { frames, entries: entriesOf(frames) };
  };
  let lastCursor: string;
  {
    const db = openAgentDatabase(dbDir);
    try {
      await using h = harness(dir.path, { db });
      const { entries } = await runOf(h, "env-first");
      assert.equal(entries.length, 4);
      lastCursor = entries[3].cursor;
      const row = db.prepare("SELECT state FROM job_state WHERE job_id = ?").get("follow-db") as {
        state: string;
      };
      assert.deepEqual(JSON.parse(row.state), { cursor: lastCursor }, "the last cursor is saved");
    } finally {
      db.close();
    }
  }
  await writeJournal(file, [
    entryAt(10, { MESSAGE: "after restart 1", _SYSTEMD_UNIT: "web.service" }),
    entryAt(11, { MESSAGE: "after restart 2", _SYSTEMD_UNIT: "db.service" }),
  ]);
  {
    const db = openAgentDatabase(dbDir);
    try {
      const executor = spyExecutor();
      await using h = harness(dir.path, { db, executor });
      // Installed again with the same arguments: the job keeps its state.
      const { frames, entries } = await runOf(h, "env-second");
      assert.deepEqual(entries.map((e) => e.message), ["after restart 1", "after restart 2"]);
      assert.deepEqual(doneOf(frames).data, { entries: 2 });
      const argv = executor.started[0].args;
      assert.ok(argv.includes(`--after-cursor=${lastCursor}`), argv.join(" "));
      assert.equal(argv.some((a) => a.startsWith("--since")), false, argv.join(" "));
      const row = db.prepare("SELECT state FROM job_state WHERE job_id = ?").get("follow-db") as {
        state: string;
      };
      assert.deepEqual(JSON.parse(row.state), { cursor: entries[1].cursor });
    } finally {
      db.close();
    }
  }
});

Deno.test("journal.watch follows a journal file until the job is deleted, then kills journalctl", async () => {
  await using dir = await tempDir();
  const file = posix.join(dir.path, "live.journal");
  await writeJournal(file, BASE.slice(0, 2));
  const executor = spyExecutor();
  await using h = harness(dir.path, { executor });
  await h.run({
    id: "env-live",
    job: { id: "live", key: "journal.watch", args: { file }, persistent: true },
  });
  const live = () => entriesOf(h.frames.filter((f) => f.id === "env-live"));
  await waitFor(() => live().length === 2, "the entries already in the file");
  await writeJournal(file, [entryAt(20, { MESSAGE: "appended", PRIORITY: "5" })]);
  await waitFor(() => live().length === 3, "the appended entry");
  assert.deepEqual([live()[2].message, live()[2].level], ["appended", "notice"]);
  assert.equal(h.doneRuns("live").length, 0, "still following");
  const [journalctl] = executor.started;
  assert.ok(journalctl.args.includes("-f"));
  assert.equal(await isAlive(journalctl.pid), true);

  await h.call("job.delete", { id: "live" });
  await waitFor(() => h.doneRuns("live").length === 1, "the run's end");
  const [done] = h.doneRuns("live");
  assert.equal(done.error, null);
  assert.deepEqual(done.data, { entries: 3 });
  assert.ok(done.durationMs! < 30_000);
  assert.equal(await isAlive(journalctl.pid), false, "journalctl is gone");
  assert.equal(executor.started.length, 1, "never restarted");
});

Deno.test("journal.watch with follow and `for` ends by itself", async () => {
  await using dir = await tempDir();
  const file = posix.join(dir.path, "for.journal");
  await writeJournal(file, BASE);
  const executor = spyExecutor();
  await using h = harness(dir.path, { executor });
  const frames = await watch(h, { file, unit: "db.service", for: "700ms" });
  const done = doneOf(frames);
  assert.equal(done.error, null);
  assert.deepEqual(done.data, { entries: 2 });
  assert.ok(done.durationMs! >= 700 && done.durationMs! < 10_000, `${done.durationMs}ms`);
  assert.deepEqual(entriesOf(frames).map((e) => e.unit), ["db.service", "db.service"]);
  assert.equal(await isAlive(executor.started[0].pid), false);
});

Deno.test("journal.watch with follow: false fails with journalctl's exit code and stderr", async () => {
  await using dir = await tempDir();
  const file = posix.join(dir.path, "base.journal");
  await writeJournal(file, BASE);
  await using h = harness(dir.path);
  const frames = await watch(h, { file, follow: false, since: "bogus" });
  const done = doneOf(frames);
  assert.equal(done.error?.code, "unavailable");
  assert.match(done.error!.message, /journalctl exited with code 1: .*bogus/);
  assert.ok(logsOf(frames).some((m) => /^journalctl: .*bogus/.test(m)), logsOf(frames).join());
});

Deno.test("journal.watch refusals: not_whitelisted, forbidden, not_found", async (t) => {
  await using dir = await tempDir();
  const file = posix.join(dir.path, "base.journal");
  await writeJournal(file, BASE.slice(0, 1));
  await t.step("journalctl not on allowRun", async () => {
    const executor = spyExecutor();
    await using h = harness(dir.path, { executor, allowRun: ["/bin/echo"] });
    const done = doneOf(await watch(h, { file, follow: false }));
    assert.equal(done.error?.code, "not_whitelisted");
    assert.match(done.error!.message, /\/usr\/bin\/journalctl is not on this agent's allowRun/);
    assert.equal(executor.started.length, 0);
  });
  await t.step("another journalctl path is refused too", async () => {
    await using h = harness(dir.path);
    const done = doneOf(await watch(h, { journalctl: "/bin/journalctl", file }));
    assert.equal(done.error?.code, "not_whitelisted");
  });
  await t.step("a file outside the allowed paths", async () => {
    await using elsewhere = await tempDir();
    const executor = spyExecutor();
    await using h = harness(elsewhere.path, { executor });
    const done = doneOf(await watch(h, { file, follow: false }));
    assert.equal(done.error?.code, "forbidden");
    assert.match(done.error!.message, /--allow-read/);
    const dirDone = doneOf(await watch(h, { directory: dir.path }));
    assert.equal(dirDone.error?.code, "forbidden");
    assert.equal(executor.started.length, 0);
  });
  await t.step("a symlink out of the allowed paths", async () => {
    await using allowed = await tempDir();
    const link = posix.join(allowed.path, "link.journal");
    await Deno.symlink(file, link);
    await using h = harness(allowed.path);
    const done = doneOf(await watch(h, { file: link, follow: false }));
    assert.equal(done.error?.code, "forbidden");
    // The same link inside a directory given to journalctl -D, and one level further down.
    const linked = doneOf(await watch(h, { directory: allowed.path, follow: false }));
    assert.equal(linked.error?.code, "forbidden");
    assert.match(linked.error!.message, /holds link\.journal, a link out of the allowed paths/);
    await Deno.remove(link);
    await Deno.mkdir(posix.join(allowed.path, "machine"));
    await Deno.symlink(file, posix.join(allowed.path, "machine", "system.journal"));
    const deeper = doneOf(await watch(h, { directory: allowed.path, follow: false }));
    assert.equal(deeper.error?.code, "forbidden");
  });
  await t.step("a file that does not exist", async () => {
    await using h = harness(dir.path);
    const missing = posix.join(dir.path, "missing.journal");
    const done = doneOf(await watch(h, { file: missing, follow: false }));
    assert.equal(done.error?.code, "not_found");
    assert.match(done.error!.message, /missing\.journal does not exist/);
  });
  await t.step("a directory given as file", async () => {
    await using h = harness(dir.path);
    const done = doneOf(await watch(h, { file: dir.path, follow: false }));
    assert.equal(done.error?.code, "invalid_args");
  });
});

// ---------------------------------------------------------------------------------------
// Restarts and logs, on a fake journalctl and a fake clock.

/** A journalctl JSON line for entry `n`. */
function line(n: number, extra: Record<string, unknown> = {}): string {
  return JSON.stringify({
    __CURSOR: `s=ab;i=${n}`,
    __REALTIME_TIMESTAMP: String(T0_US + BigInt(n) * 1_000_000n),
    MESSAGE: `entry ${n}`,
    PRIORITY: "6",
    ...extra,
  });
}

/** Lets promise chains settle on a fake clock (no time passes). */
async function settle(clock: FakeClock): Promise<void> {
  await clock.advance(0);
}

function fakeHarness(executor: CommandExecutor, clock: FakeClock) {
  return jobHarness({
    executor,
    clock,
    allowRun: [JOURNALCTL],
  });
}

Deno.test("journal.watch starts journalctl again after it exits, backing off 1s doubling to 30s", async () => {
  const clock = new FakeClock();
  const executor = new FakeExecutor();
  await using h = fakeHarness(executor, clock);
  await h.run({
    id: "env-r",
    job: { id: "r", key: "journal.watch", args: { unit: "web.service" }, persistent: true },
  });
  const p0 = await executor.nth(0);
  assert.equal(p0.spec.cmd, JOURNALCTL);
  assert.equal(p0.spec.args.some((a) => a.startsWith("--after-cursor")), false);
  p0.out(line(1), line(2)).err("Journal file corrupted").exit(1);
  await settle(clock);
  const logs = () => logsOf(h.frames);
  assert.ok(logs().includes("journalctl: Journal file corrupted"), logs().join("\n"));
  assert.ok(
    logs().some((m) => m === `${JOURNALCTL} exited with code 1; starting it again in 1s`),
    logs().join("\n"),
  );
  assert.equal(executor.spawned.length, 1);
  await clock.advance(999);
  assert.equal(executor.spawned.length, 1, "not before 1s");
  await clock.advance(1);
  assert.equal(executor.spawned.length, 2, "again after 1s");
  assert.ok(executor.spawned[1].spec.args.includes("--after-cursor=s=ab;i=2"));
  assert.ok(executor.spawned[1].spec.args.includes("-u"));

  // Each quick exit doubles the wait: 2, 4, 8, 16, 30, 30.
  const waits: number[] = [];
  for (let i = 1; i <= 6; i++) {
    executor.spawned[i].exit(0);
    await settle(clock);
    let waited = 0;
    while (executor.spawned.length === i + 1) {
      await clock.advance(1000);
      waited += 1000;
      assert.ok(waited <= 60_000, "restarted within a minute");
    }
    waits.push(waited);
  }
  assert.deepEqual(waits, [2000, 4000, 8000, 16_000, 30_000, 30_000]);

  // A journalctl that ran for a minute restarts after 1s again.
  const long = executor.spawned[7];
  long.out(line(3));
  await clock.advance(60_000);
  long.exit(0);
  await settle(clock);
  await clock.advance(1000);
  assert.equal(executor.spawned.length, 9, "1s after a minute of running");
  assert.ok(executor.spawned[8].spec.args.includes("--after-cursor=s=ab;i=3"));

  // Deleting the job during a backoff wait ends the run at once.
  executor.spawned[8].exit(1);
  await settle(clock);
  await h.call("job.delete", { id: "r" });
  await settle(clock);
  const [done] = h.doneRuns("r");
  assert.equal(done.error, null);
  assert.deepEqual(done.data, { entries: 3 });
  await clock.advance(120_000);
  assert.equal(executor.spawned.length, 9, "no start after the end");
  assert.equal(clock.pending, 0, "no timer left");
});

Deno.test("journal.watch saves the cursor after each entry and skips lines that are not entries", async () => {
  const clock = new FakeClock();
  const executor = new FakeExecutor();
  await using h = fakeHarness(executor, clock);
  await h.run({
    id: "env-s",
    job: {
      id: "s",
      key: "journal.watch",
      args: { follow: false, priority: "debug" },
      persistent: true,
    },
  });
  const saved = () => {
    const row = h.db.prepare("SELECT state FROM job_state WHERE job_id = 's'").get() as
      | { state: string }
      | undefined;
    return row && JSON.parse(row.state);
  };
  const p = await executor.nth(0);
  assert.ok(p.spec.args.includes("-p") && p.spec.args.includes("7"));
  assert.equal(saved(), undefined);
  p.out(line(1));
  await settle(clock);
  assert.deepEqual(saved(), { cursor: "s=ab;i=1" });
  for (let i = 0; i < 12; i++) p.out(`not json ${i}`);
  p.out("[1,2]");
  await settle(clock);
  assert.deepEqual(saved(), { cursor: "s=ab;i=1" }, "skipped lines move nothing");
  p.out(line(2, { MESSAGE: [104, 105] }));
  await settle(clock);
  assert.deepEqual(saved(), { cursor: "s=ab;i=2" });
  p.exit(0);
  await settle(clock);
  const frames = h.frames.filter((f) => f.id === "env-s");
  const done = doneOf(frames);
  assert.equal(done.error, null);
  assert.deepEqual(done.data, { entries: 2 });
  assert.deepEqual(entriesOf(frames).map((e) => e.message), ["entry 1", "hi"]);
  const skipped = logsOf(frames).filter((m) => m.startsWith("skipped a journalctl line"));
  assert.equal(skipped.length, 10, "at most 10 a minute");
  assert.ok(logsOf(frames).includes("3 more journalctl skipped lines were not logged"));
});

Deno.test("journal.watch logs journalctl's stderr at most 10 lines a minute, then counts", async () => {
  const clock = new FakeClock();
  const executor = new FakeExecutor();
  await using h = fakeHarness(executor, clock);
  const envelope = h.run({ id: "env-e", job: { key: "journal.watch", args: { follow: false } } });
  const p = await executor.nth(0);
  for (let i = 1; i <= 13; i++) p.err(`warning ${i}`);
  await settle(clock);
  const stderrLogs = () =>
    h.frames.filter((f) => f.type === "log" && f.message.startsWith("journalctl: "));
  assert.equal(stderrLogs().length, 10);
  await clock.advance(60_000);
  p.err("warning 14");
  await settle(clock);
  const last = stderrLogs().at(-1)!;
  assert.equal(last.type === "log" && last.message, "journalctl: warning 14");
  assert.deepEqual(last.type === "log" && last.fields, { suppressed: 3 });
  p.exit(0);
  const frames = await envelope;
  assert.equal(doneOf(frames).error, null);
  assert.equal(
    logsOf(frames).some((m) => m.includes("were not logged")),
    false,
    "the held-back lines were reported already",
  );
});

Deno.test("journal.watch kills journalctl with SIGKILL when SIGTERM does not end it", async () => {
  const clock = new FakeClock();
  const stubborn: FakeProcess[] = [];
  const executor: CommandExecutor = {
    spawn(spec): Process {
      const proc = new FakeProcess(7, spec);
      stubborn.push(proc);
      return {
        pid: proc.pid,
        stdout: proc.stdout,
        stderr: proc.stderr,
        status: proc.status,
        kill(signal = "SIGTERM") {
          proc.kills.push(signal);
          if (signal === "SIGKILL") proc.exit(null, "SIGKILL");
        },
      };
    },
  };
  await using h = fakeHarness(executor, clock);
  const envelope = h.run({ id: "env-k", job: { key: "journal.watch", args: { for: "5s" } } });
  await settle(clock);
  stubborn[0].out(line(1));
  await clock.advance(5000);
  assert.deepEqual(stubborn[0].kills, ["SIGTERM"]);
  await clock.advance(KILL_GRACE_MS);
  assert.deepEqual(stubborn[0].kills, ["SIGTERM", "SIGKILL"]);
  const done = doneOf(await envelope);
  assert.equal(done.error, null);
  assert.deepEqual(done.data, { entries: 1 });
  assert.equal(stubborn.length, 1);
});

Deno.test("journal.watch ignores a saved cursor that does not look like one", async () => {
  const clock = new FakeClock();
  const executor = new FakeExecutor((p) => p.exit(0));
  await using h = fakeHarness(executor, clock);
  const spec = {
    id: "c",
    key: "journal.watch",
    args: { follow: false },
    schedule: { trigger: "interval" as const, every: "1m" },
    persistent: true,
  };
  await h.run({ id: "env-c1", job: spec });
  h.db.prepare("INSERT OR REPLACE INTO job_state VALUES (?, ?, ?, ?)").run(
    "c",
    JSON.stringify(spec.args),
    JSON.stringify({ cursor: "x; rm -rf /" }),
    0,
  );
  await clock.advance(60_000);
  await settle(clock);
  const [run] = h.doneRuns("c");
  assert.equal(run?.error, null, JSON.stringify(h.frames));
  assert.equal(executor.spawned[0].spec.args.some((a) => a.startsWith("--after-cursor")), false);
  assert.ok(
    logsOf(h.frames).includes("ignored a saved journal cursor that does not look like one"),
  );
});

Deno.test("journal.watch reports a journalctl that cannot start", async () => {
  const clock = new FakeClock();
  const executor = new FakeExecutor();
  executor.failWith = new JwError("spawn_failed", `cannot start ${JOURNALCTL}: No such file`);
  await using h = fakeHarness(executor, clock);
  const frames = await h.run({ id: "env-f", job: { key: "journal.watch", args: {} } });
  assert.equal(doneOf(frames).error?.code, "spawn_failed");
});
