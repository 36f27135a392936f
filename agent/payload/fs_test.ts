import assert from "node:assert/strict";
import { FakeClock } from "../../shared/clock.ts";
import type { Log, Output, Reply } from "../../shared/protocol/mod.ts";
import { FakeExecutor } from "../_fake_executor.ts";
import { type JobHarness, jobHarness } from "../_job_harness.ts";
import { createFsWatchCommand, type FsEventSource, type FsWatchOptions } from "./fs.ts";

const executor = new FakeExecutor((p) => p.exit(0));

/** Polls `cond` every few ms until it holds; fails after `ms` real milliseconds. */
async function until(cond: () => boolean, what: string, ms = 2000): Promise<void> {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 5));
  }
}

/** A fresh temporary directory (its real path), removed by `cleanup`. */
async function tempDir(): Promise<string> {
  return await Deno.realPath(await Deno.makeTempDir({ prefix: "jw-fs-watch-" }));
}

async function removeIfThere(path: string): Promise<void> {
  await Deno.remove(path, { recursive: true }).catch(() => {});
}

function harness(dir: string, options?: FsWatchOptions, clock?: FakeClock): JobHarness {
  return jobHarness({
    executor,
    clock,
    paths: { read: [dir], write: [] },
    commands: [createFsWatchCommand(options)],
  });
}

/** The change outputs of job `id` so far. */
function changes(frames: Reply[], id: string): Record<string, unknown>[] {
  return frames
    .filter((f): f is Output => f.type === "output" && f.job.id === id && !f.done && !!f.data)
    .map((f) => f.data!);
}

/** The done output of job `id`'s run (not of its install), if it has ended. */
function doneOf(frames: Reply[], id: string): Output | undefined {
  return frames.find((f): f is Output =>
    f.type === "output" && f.job.id === id && !!f.done && f.run !== undefined
  );
}

function logs(frames: Reply[], id: string): Log[] {
  return frames.filter((f): f is Log => f.type === "log" && f.job.id === id);
}

/**
 * Starts `fs.watch` as job `id` and waits until its watch is in place. Installed as a
 * persistent job without a schedule (it runs once, now) so `job.delete` can stop it;
 * `persistent: false` runs it once like `jw client run` (stopped by `for`).
 */
async function startWatch(
  h: JobHarness,
  id: string,
  args: Record<string, unknown>,
  persistent = true,
): Promise<{ running: Promise<Reply[]> }> {
  const running = h.run({ id: `env-${id}`, job: { id, key: "fs.watch", args, persistent } });
  await until(
    () =>
      logs(h.frames, id).some((l) => l.message.startsWith("watching")) || !!doneOf(h.frames, id),
    `${id} to start watching`,
  );
  assert.equal(doneOf(h.frames, id), undefined, "the watch is running");
  return { running };
}

/** Deletes job `id` and waits for its run to end; returns the done output. */
async function deleteJob(h: JobHarness, id: string): Promise<Output> {
  assert.deepEqual(await h.call("job.delete", { id }), { deleted: id });
  await until(() => !!doneOf(h.frames, id), `${id} to end after job.delete`);
  return doneOf(h.frames, id)!;
}

Deno.test("fs.watch reports a create, a modify, a rename and a remove, each once", async () => {
  const dir = await tempDir();
  try {
    await using h = harness(dir);
    await startWatch(h, "w", { path: dir, debounce: "30ms" });
    const seen = (n: number, what: string) => until(() => changes(h.frames, "w").length >= n, what);

    // Created, then written twice before closing: one create.
    const file = await Deno.open(`${dir}/a`, { write: true, createNew: true });
    await file.write(new TextEncoder().encode("one\n"));
    await file.write(new TextEncoder().encode("two\n"));
    file.close();
    await seen(1, "the create");
    await Deno.writeTextFile(`${dir}/a`, "three\n", { append: true });
    await seen(2, "the modify");
    await Deno.rename(`${dir}/a`, `${dir}/b`);
    await seen(3, "the rename");
    await Deno.remove(`${dir}/b`);
    await seen(4, "the remove");
    await Deno.mkdir(`${dir}/d`);
    await seen(5, "the directory's create");
    await Deno.remove(`${dir}/d`);
    await seen(6, "the directory's remove");

    const done = await deleteJob(h, "w");
    assert.equal(done.error, null);
    assert.deepEqual(done.data, { events: 6 });
    assert.deepEqual(changes(h.frames, "w"), [
      { event: "create", path: `${dir}/a`, isDir: false },
      { event: "modify", path: `${dir}/a`, isDir: false },
      { event: "rename", path: `${dir}/b`, isDir: false, from: `${dir}/a`, to: `${dir}/b` },
      { event: "remove", path: `${dir}/b`, isDir: false },
      { event: "create", path: `${dir}/d`, isDir: true },
      { event: "remove", path: `${dir}/d`, isDir: true },
    ]);
  } finally {
    await removeIfThere(dir);
  }
});

Deno.test("fs.watch sends only the events asked for", async () => {
  const dir = await tempDir();
  try {
    await using h = harness(dir);
    await startWatch(h, "w", { path: dir, debounce: "30ms", events: ["create", "remove"] });
    const seen = (n: number, what: string) => until(() => changes(h.frames, "w").length >= n, what);
    await Deno.writeTextFile(`${dir}/a`, "x");
    await seen(1, "a's create");
    // A modify (not asked for), then a create: the modify's window closes first.
    await Deno.writeTextFile(`${dir}/a`, "y", { append: true });
    await Deno.writeTextFile(`${dir}/s`, "x");
    await seen(2, "s's create");
    // A rename (not asked for), then a remove.
    await Deno.rename(`${dir}/s`, `${dir}/t`);
    await Deno.remove(`${dir}/a`);
    await seen(3, "a's remove");

    const done = await deleteJob(h, "w");
    assert.deepEqual(done.data, { events: 3 });
    assert.deepEqual(changes(h.frames, "w"), [
      { event: "create", path: `${dir}/a`, isDir: false },
      { event: "create", path: `${dir}/s`, isDir: false },
      { event: "remove", path: `${dir}/a`, isDir: false },
    ]);
  } finally {
    await removeIfThere(dir);
  }
});

Deno.test("fs.watch reports changes in subdirectories only when recursive", async (t) => {
  for (const recursive of [false, true]) {
    await t.step(`recursive: ${recursive}`, async () => {
      const dir = await tempDir();
      try {
        await using h = harness(dir);
        await startWatch(h, "w", { path: dir, debounce: "30ms", recursive });
        const seen = (n: number, what: string) =>
          until(() => changes(h.frames, "w").length >= n, what);
        await Deno.mkdir(`${dir}/sub`);
        await seen(1, "the subdirectory's create");
        await Deno.writeTextFile(`${dir}/sub/x`, "x");
        if (recursive) await seen(2, "the change below the subdirectory");
        // A change at the top, reported either way, after the one below.
        await Deno.writeTextFile(`${dir}/y`, "y");
        await seen(recursive ? 3 : 2, "the change at the top");
        await deleteJob(h, "w");
        assert.deepEqual(changes(h.frames, "w"), [
          { event: "create", path: `${dir}/sub`, isDir: true },
          ...(recursive ? [{ event: "create", path: `${dir}/sub/x`, isDir: false }] : []),
          { event: "create", path: `${dir}/y`, isDir: false },
        ]);
      } finally {
        await removeIfThere(dir);
      }
    });
  }
});

Deno.test("fs.watch refuses paths outside the allowed ones, relative or missing paths, bad args", async (t) => {
  const dir = await tempDir();
  const other = await tempDir();
  try {
    await using h = harness(dir);
    const cases: [string, Record<string, unknown>, string, RegExp][] = [
      ["outside", { path: other }, "forbidden", /outside the paths this agent allows/],
      ["relative", { path: "logs" }, "invalid_args", /path: must be an absolute path/],
      ["missing", { path: `${dir}/nope` }, "not_found", /nope: no such file or directory/],
      ["long debounce", { path: dir, debounce: "2m" }, "invalid_args", /at most 1m/],
      ["bad for", { path: dir, for: "soon" }, "invalid_args", /for: expected a positive/],
      ["bad event", { path: dir, events: ["touch"] }, "invalid_args", /events/],
      ["unknown key", { path: dir, follow: true }, "invalid_args", /follow/],
    ];
    for (const [name, args, code, message] of cases) {
      await t.step(name, async () => {
        const replies = await h.run({ id: `env-${name}`, job: { key: "fs.watch", args } });
        assert.equal(replies.length, 1, "only the done output");
        const done = replies[0] as Output;
        assert.equal(done.error?.code, code, JSON.stringify(done.error));
        assert.match(done.error!.message, message);
      });
    }
  } finally {
    await removeIfThere(dir);
    await removeIfThere(other);
  }
});

Deno.test("fs.watch ends by itself after `for`, sending what was still waiting", async () => {
  const dir = await tempDir();
  try {
    await using h = harness(dir);
    const started = Date.now();
    const { running } = await startWatch(
      h,
      "w",
      { path: dir, for: "300ms", debounce: "1m" },
      false,
    );
    await Deno.writeTextFile(`${dir}/a`, "x");
    const replies = await running;
    assert.ok(Date.now() - started < 2000, "ended soon after 300ms");
    const done = replies.at(-1) as Output;
    assert.equal(done.done, true);
    assert.equal(done.error, null);
    assert.deepEqual(done.data, { events: 1 });
    assert.deepEqual(changes(h.frames, "w"), [{ event: "create", path: `${dir}/a`, isDir: false }]);
  } finally {
    await removeIfThere(dir);
  }
});

Deno.test("fs.watch ends when its job is deleted", async () => {
  const dir = await tempDir();
  try {
    await using h = harness(dir);
    // Installed (so job.delete finds it) and running; nothing awaits its end.
    await startWatch(h, "w", { path: dir });
    assert.equal(h.runner.running, 1);
    const done = await deleteJob(h, "w");
    assert.equal(done.error, null);
    assert.deepEqual(done.data, { events: 0 });
    await until(() => h.runner.running === 0, "the run to be gone");
    assert.deepEqual(h.runner.list(), []);
  } finally {
    await removeIfThere(dir);
  }
});

Deno.test("fs.watch reports the watched directory's removal and ends with not_found", async () => {
  const dir = await tempDir();
  try {
    await using h = harness(dir);
    const { running } = await startWatch(h, "w", { path: dir, debounce: "30ms" }, false);
    await Deno.writeTextFile(`${dir}/a`, "x");
    await until(() => changes(h.frames, "w").length === 1, "a's create");
    await Deno.remove(dir, { recursive: true });
    const done = (await running).at(-1) as Output;
    assert.equal(done.error?.code, "not_found");
    assert.match(done.error!.message, /was removed or moved away/);
    const seen = changes(h.frames, "w");
    assert.deepEqual(done.data, { events: seen.length });
    // When the directory goes right after its contents, the OS may report only the directory.
    const aRemoved = seen.length === 3 ? [{ event: "remove", path: `${dir}/a`, isDir: false }] : [];
    assert.deepEqual(seen, [
      { event: "create", path: `${dir}/a`, isDir: false },
      ...aRemoved,
      { event: "remove", path: dir, isDir: true },
    ]);
  } finally {
    await removeIfThere(dir);
  }
});

Deno.test("fs.watch watches a single file", async () => {
  const dir = await tempDir();
  try {
    await Deno.writeTextFile(`${dir}/f`, "x");
    await Deno.writeTextFile(`${dir}/g`, "x");
    await using h = harness(dir);
    await startWatch(h, "w", { path: `${dir}/f`, debounce: "30ms" });
    await Deno.writeTextFile(`${dir}/g`, "y", { append: true });
    await Deno.writeTextFile(`${dir}/f`, "y", { append: true });
    await until(() => changes(h.frames, "w").length === 1, "f's modify");
    await deleteJob(h, "w");
    assert.deepEqual(changes(h.frames, "w"), [{ event: "modify", path: `${dir}/f`, isDir: false }]);
  } finally {
    await removeIfThere(dir);
  }
});

/** Raw events handed over by the test, one at a time, like `Deno.watchFs`. */
class FakeSource implements FsEventSource {
  readonly #queue: Deno.FsEvent[] = [];
  #waiter: ((result: IteratorResult<Deno.FsEvent>) => void) | undefined;
  closed = false;
  /** Events pushed so far. */
  pushed = 0;
  /** Calls of `next()`: one more than the events taken in once they are all processed. */
  requests = 0;

  push(...events: Deno.FsEvent[]): void {
    for (const event of events) {
      this.pushed++;
      const waiter = this.#waiter;
      this.#waiter = undefined;
      if (waiter) waiter({ done: false, value: event });
      else this.#queue.push(event);
    }
  }

  close(): void {
    this.closed = true;
    this.#waiter?.({ done: true, value: undefined });
    this.#waiter = undefined;
  }

  [Symbol.asyncIterator](): AsyncIterator<Deno.FsEvent> {
    return {
      next: () => {
        this.requests++;
        const event = this.#queue.shift();
        if (event) return Promise.resolve({ done: false, value: event });
        if (this.closed) return Promise.resolve({ done: true, value: undefined });
        return new Promise((resolve) => this.#waiter = resolve);
      },
    };
  }
}

Deno.test("fs.watch merges the raw events of one path within the debounce window", async (t) => {
  const dir = await tempDir();
  try {
    const clock = new FakeClock();
    const source = new FakeSource();
    await using h = harness(dir, { watch: () => source }, clock);
    const { running } = await startWatch(
      h,
      "w",
      { path: dir, debounce: "100ms", for: "1h", recursive: true },
      false,
    );
    const p = (name: string) => `${dir}/${name}`;
    const ev = (kind: Deno.FsEvent["kind"], ...paths: string[]): Deno.FsEvent => ({
      kind,
      paths: paths.map(p),
    });
    type Out = Record<string, unknown>;
    const cases: [string, Deno.FsEvent[], Out[]][] = [
      ["a create and modifies are one create", [
        ev("create", "a"),
        ev("modify", "a"),
        ev("access", "a"),
        ev("modify", "a"),
      ], [{ event: "create", path: p("a"), isDir: false }]],
      ["a create then a remove is dropped", [ev("create", "b"), ev("remove", "b")], []],
      ["a remove then a create is a modify", [ev("remove", "c"), ev("create", "c")], [
        { event: "modify", path: p("c"), isDir: false },
      ]],
      ["a modify then a remove is a remove", [ev("modify", "d"), ev("remove", "d")], [
        { event: "remove", path: p("d"), isDir: false },
      ]],
      ["a rename's three raw events are one rename", [
        ev("remove", "e"),
        ev("rename", "f"),
        ev("rename", "e", "f"),
        ev("modify", "f"),
      ], [{ event: "rename", path: p("f"), isDir: false, from: p("e"), to: p("f") }]],
      ["renamed, then removed: both paths are gone", [
        ev("remove", "g"),
        ev("rename", "h"),
        ev("rename", "g", "h"),
        ev("remove", "h"),
      ], [
        { event: "remove", path: p("h"), isDir: false },
        { event: "remove", path: p("g"), isDir: false },
      ]],
      ["moved in from elsewhere: a rename without from", [ev("rename", "i")], [
        { event: "rename", path: p("i"), isDir: false },
      ]],
      ["outside the watched directory: ignored", [{ kind: "create", paths: ["/elsewhere/j"] }], []],
    ];
    let expected: Out[] = [];
    for (const [i, [name, events, outputs]] of cases.entries()) {
      await t.step(name, async () => {
        // Each case ends with a change to another path, so its outputs are known to be sent
        // once that one is.
        const marker = `marker-${i}`;
        source.push(...events, ev("create", marker));
        await until(() => source.requests === source.pushed + 1, "the raw events to be read");
        await clock.advance(99);
        assert.equal(changes(h.frames, "w").length, expected.length, "nothing before 100ms");
        await clock.advance(1);
        expected = [...expected, ...outputs, { event: "create", path: p(marker), isDir: false }];
        await until(() => changes(h.frames, "w").length === expected.length, "the outputs");
        assert.deepEqual(changes(h.frames, "w"), expected);
      });
    }

    await t.step("a dropped-events flag is a warn log", async () => {
      source.push({ kind: "other", paths: [], flag: "rescan" });
      await until(() => logs(h.frames, "w").some((l) => l.level === "warn"), "the warn log");
    });

    await t.step("the watched directory's remove ends the run", async () => {
      source.push(ev("modify", "k"), { kind: "remove", paths: [dir] });
      const done = (await running).at(-1) as Output;
      assert.equal(done.error?.code, "not_found");
      assert.ok(source.closed, "the watch was closed");
      assert.deepEqual(changes(h.frames, "w").slice(-2), [
        { event: "modify", path: p("k"), isDir: false },
        { event: "remove", path: dir, isDir: true },
      ]);
      assert.deepEqual(done.data, { events: expected.length + 2 });
    });
  } finally {
    await removeIfThere(dir);
  }
});

Deno.test("fs.watch sends every waiting change at once when too many paths wait", async () => {
  const dir = await tempDir();
  try {
    const clock = new FakeClock();
    const source = new FakeSource();
    await using h = harness(dir, { watch: () => source, maxPending: 3 }, clock);
    const { running } = await startWatch(h, "w", { path: dir, debounce: "1m", for: "1h" }, false);
    const create = (name: string): Deno.FsEvent => ({ kind: "create", paths: [`${dir}/${name}`] });
    source.push(create("a"), create("b"), create("c"), create("a"));
    await until(() => source.requests === source.pushed + 1, "the raw events to be read");
    assert.equal(changes(h.frames, "w").length, 0, "three paths may wait");
    source.push(create("d"));
    await until(() => changes(h.frames, "w").length === 3, "the three waiting changes");
    assert.deepEqual(
      changes(h.frames, "w").map((c) => c.path),
      ["a", "b", "c"].map((n) => `${dir}/${n}`),
    );
    await clock.advance(3_600_000);
    const done = (await running).at(-1) as Output;
    assert.equal(done.error, null);
    assert.deepEqual(done.data, { events: 4 });
    assert.equal(changes(h.frames, "w")[3].path, `${dir}/d`);
  } finally {
    await removeIfThere(dir);
  }
});
