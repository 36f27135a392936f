import assert from "node:assert/strict";
import type { Log, Output, Reply } from "../../shared/protocol/mod.ts";
import { openAgentDatabase } from "../db.ts";
import type { DatabaseSync } from "../../shared/db/mod.ts";
import { FakeExecutor } from "../_fake_executor.ts";
import { type JobHarness, jobHarness } from "../_job_harness.ts";
import { MAX_LINE_BYTES } from "./_file_tail.ts";

const executor = new FakeExecutor((p) => p.exit(0));

/** A temp directory (its real path), removed after `fn`. */
async function withDir(fn: (dir: string) => Promise<void>): Promise<void> {
  const dir = await Deno.realPath(await Deno.makeTempDir({ prefix: "jw-tail-" }));
  try {
    await fn(dir);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

function harness(dir: string, db?: DatabaseSync): JobHarness {
  return jobHarness({
    executor,
    db,
    paths: { read: [dir], write: [] },
  });
}

/** Polls `cond` every 10 ms until it holds; fails after `ms`. */
async function waitFor(cond: () => boolean, what: string, ms = 10_000): Promise<void> {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
}

function stdout(frames: Reply[]): string[] {
  return frames
    .filter((f): f is Output => f.type === "output" && f.stream === "stdout")
    .map((f) => f.text!);
}

function logs(frames: Reply[], pattern: RegExp): Log[] {
  return frames.filter((f): f is Log => f.type === "log" && pattern.test(f.message));
}

const append = (path: string, text: string) => Deno.writeTextFile(path, text, { append: true });

/** A `file.tail` run now: its lines so far, and a stop that returns its done output. */
function startTail(h: JobHarness, id: string, args: Record<string, unknown>) {
  const replies = h.run({ id, job: { key: "file.tail", args: { poll: "20ms", ...args } } });
  const mine = () => h.frames.filter((f) => f.id === id);
  return {
    lines: () => stdout(mine()),
    logs: (pattern: RegExp) => logs(mine(), pattern),
    started: () => waitFor(() => logs(mine(), /^following /).length > 0, "the tail to start"),
    async stop(): Promise<Output> {
      await h.runner.close();
      const done = (await replies).at(-1) as Output;
      assert.equal(done.done, true);
      return done;
    },
  };
}

Deno.test("file.tail sends the lines appended after it starts, one output each", async () => {
  await withDir(async (dir) => {
    const path = `${dir}/app.log`;
    await Deno.writeTextFile(path, "old 1\nold 2\n");
    await using h = harness(dir);
    const tail = startTail(h, "t1", { path });
    await tail.started();
    await append(path, "new 1\nnew 2 with CRLF\r\nnew 3 ünïcödé ✓\n");
    await waitFor(() => tail.lines().length === 3, "three lines");
    assert.deepEqual(tail.lines(), ["new 1", "new 2 with CRLF", "new 3 ünïcödé ✓"]);
    await append(path, "new 4\n");
    await waitFor(() => tail.lines().length === 4, "the fourth line");
    const done = await tail.stop();
    assert.equal(done.error, null);
    assert.deepEqual(done.data, { lines: 4 });
    assert.deepEqual(tail.lines(), ["new 1", "new 2 with CRLF", "new 3 ünïcödé ✓", "new 4"]);
  });
});

Deno.test("file.tail from start sends the whole file; lines: N sends the last N first", async (t) => {
  await withDir(async (dir) => {
    const path = `${dir}/app.log`;
    await Deno.writeTextFile(path, "a\nb\nc\nd\n");
    await t.step("from: start", async () => {
      await using h = harness(dir);
      const tail = startTail(h, "s", { path, from: "start" });
      await waitFor(() => tail.lines().length === 4, "four lines");
      await append(path, "e\n");
      await waitFor(() => tail.lines().length === 5, "the new line");
      await tail.stop();
      assert.deepEqual(tail.lines(), ["a", "b", "c", "d", "e"]);
    });
    const cases = [
      { lines: 2, want: ["d", "e"] },
      { lines: 1, want: ["e"] },
      { lines: 0, want: [] },
      { lines: 50, want: ["a", "b", "c", "d", "e"] },
    ];
    for (const c of cases) {
      await t.step(`lines: ${c.lines}`, async () => {
        await Deno.writeTextFile(path, "a\nb\nc\nd\ne\n");
        await using h = harness(dir);
        const tail = startTail(h, `n${c.lines}`, { path, lines: c.lines });
        await tail.started();
        await waitFor(() => tail.lines().length === c.want.length, `${c.want.length} lines`);
        await append(path, `after ${c.lines}\n`);
        await waitFor(() => tail.lines().length === c.want.length + 1, "the appended line");
        await tail.stop();
        assert.deepEqual(tail.lines(), [...c.want, `after ${c.lines}`]);
      });
    }
  });
});

Deno.test("file.tail lines: N with an unfinished last line holds it until its newline", async () => {
  await withDir(async (dir) => {
    const path = `${dir}/app.log`;
    await Deno.writeTextFile(path, "one\ntwo\nthr");
    await using h = harness(dir);
    const tail = startTail(h, "p", { path, lines: 1 });
    await tail.started();
    await waitFor(() => tail.lines().length === 1, "the last complete line");
    await append(path, "ee\n");
    await waitFor(() => tail.lines().length === 2, "the finished line");
    await tail.stop();
    assert.deepEqual(tail.lines(), ["two", "three"]);
  });
});

Deno.test("file.tail sends a line longer than 64 KiB in pieces, never splitting a character", async () => {
  await withDir(async (dir) => {
    const path = `${dir}/app.log`;
    await Deno.writeTextFile(path, "");
    await using h = harness(dir);
    const tail = startTail(h, "long", { path });
    await tail.started();
    const ascii = "a".repeat(MAX_LINE_BYTES + 100);
    const wide = "é".repeat(MAX_LINE_BYTES / 2 + 7); // 2 bytes each; a piece ends mid-way
    await append(path, `${ascii}\n${wide}\nshort\n`);
    await waitFor(() => tail.lines().at(-1) === "short", "the short line");
    await tail.stop();
    const lines = tail.lines();
    assert.deepEqual(lines.map((l) => l.length), [MAX_LINE_BYTES, 100, MAX_LINE_BYTES / 2, 7, 5]);
    assert.equal(lines[0] + lines[1], ascii);
    assert.equal(lines[2] + lines[3], wide);
    assert.ok(lines.every((l) => !l.includes("\ufffd")), "no broken characters");
  });
});

Deno.test("file.tail holds an unfinished line (kept in the job state) until its newline", async () => {
  await withDir(async (dir) => {
    const path = `${dir}/app.log`;
    await Deno.writeTextFile(path, "");
    await using h = harness(dir);
    // A persistent job without a schedule runs once now, with its state in agent.db.
    await h.run({
      id: "env-p",
      job: { id: "p", key: "file.tail", args: { path, poll: "20ms" }, persistent: true },
    });
    const saved = () => {
      const row = h.db.prepare("SELECT state FROM job_state WHERE job_id = 'p'").get() as
        | { state: string }
        | undefined;
      return row ? JSON.parse(row.state) as Record<string, unknown> : undefined;
    };
    await waitFor(() => saved() !== undefined, "the first saved position");
    await append(path, "done\npart");
    await waitFor(() => saved()?.partial !== undefined, "the held partial line");
    assert.deepEqual(stdout(h.frames), ["done"]);
    assert.equal(saved()!.offset, 9);
    assert.equal(atob(saved()!.partial as string), "part");
    await append(path, "ial\n");
    await waitFor(() => stdout(h.frames).length === 2, "the finished line");
    assert.deepEqual(stdout(h.frames), ["done", "partial"]);
    assert.equal(saved()!.partial, undefined);
    await h.call("job.delete", { id: "p" });
    await waitFor(() => h.doneRuns("p").length === 1, "the run to end");
    const done = h.doneRuns("p")[0];
    assert.equal(done.error, null);
    assert.deepEqual(done.data, { lines: 2 });
  });
});

Deno.test("file.tail follows a rename + new file: the old file's last lines, then the new file", async () => {
  await withDir(async (dir) => {
    const path = `${dir}/app.log`;
    await Deno.writeTextFile(path, "first\n");
    await using h = harness(dir);
    const tail = startTail(h, "r", { path, from: "start" });
    await waitFor(() => tail.lines().length === 1, "the first line");
    // The writer still holds the old file: what it writes just before and after the rename,
    // and an unfinished last line, all come before the new file's lines.
    using writer = await Deno.open(path, { append: true });
    await writer.write(new TextEncoder().encode("before rename\n"));
    await Deno.rename(path, `${path}.1`);
    await writer.write(new TextEncoder().encode("after rename\nno newline"));
    await Deno.writeTextFile(path, "new 1\n");
    await waitFor(() => tail.lines().includes("new 1"), "the new file's line");
    await append(path, "new 2\n");
    await waitFor(() => tail.lines().length === 6, "all lines");
    await tail.stop();
    assert.deepEqual(tail.lines(), [
      "first",
      "before rename",
      "after rename",
      "no newline",
      "new 1",
      "new 2",
    ]);
    assert.equal(tail.logs(/was replaced \(rotated\)/).length, 1);
  });
});

Deno.test("file.tail follows copy-truncate: after the truncation it reads from the start", async () => {
  await withDir(async (dir) => {
    const path = `${dir}/app.log`;
    await Deno.writeTextFile(path, "line one\nline two\n");
    await using h = harness(dir);
    const tail = startTail(h, "ct", { path, from: "start" });
    await waitFor(() => tail.lines().length === 2, "the first lines");
    await Deno.copyFile(path, `${path}.1`);
    await Deno.truncate(path, 0);
    await append(path, "c\n");
    await waitFor(() => tail.lines().length === 3, "the line after the truncation");
    await append(path, "d\n");
    await waitFor(() => tail.lines().length === 4, "one more line");
    await tail.stop();
    assert.deepEqual(tail.lines(), ["line one", "line two", "c", "d"]);
    assert.equal(tail.logs(/was truncated/).length, 1);
  });
});

Deno.test("file.tail waits for a path that does not exist yet, then reads it from its start", async () => {
  await withDir(async (dir) => {
    const path = `${dir}/later.log`;
    await using h = harness(dir);
    const tail = startTail(h, "later", { path });
    await waitFor(() => tail.logs(/does not exist yet/).length === 1, "the waiting log");
    await Deno.writeTextFile(path, "hello\nthere\n");
    await waitFor(() => tail.lines().length === 2, "the new file's lines");
    await append(path, "more\n");
    await waitFor(() => tail.lines().length === 3, "one more line");
    const done = await tail.stop();
    assert.deepEqual(tail.lines(), ["hello", "there", "more"]);
    assert.deepEqual(done.data, { lines: 3 });
    assert.equal(tail.logs(/does not exist yet/).length, 1, "said once");
    assert.equal(tail.logs(/appeared/).length, 1);
  });
});

Deno.test("file.tail is woken by file system events before its next poll", async () => {
  await withDir(async (dir) => {
    const path = `${dir}/app.log`;
    await Deno.writeTextFile(path, "");
    await using h = harness(dir);
    const tail = startTail(h, "w", { path, poll: "10s" });
    await tail.started();
    await append(path, "quick\n");
    // Well before the 10 s poll.
    await waitFor(() => tail.lines().length === 1, "the line, through the watcher", 5_000);
    await tail.stop();
    assert.deepEqual(tail.lines(), ["quick"]);
  });
});

Deno.test("file.tail ends by itself after `for`", async () => {
  await withDir(async (dir) => {
    const path = `${dir}/app.log`;
    await Deno.writeTextFile(path, "x\n");
    await using h = harness(dir);
    const replies = await h.run({
      id: "for",
      job: { key: "file.tail", args: { path, from: "start", for: "300ms", poll: "20ms" } },
    });
    const done = replies.at(-1) as Output;
    assert.equal(done.error, null);
    assert.deepEqual(done.data, { lines: 1 });
    assert.deepEqual(stdout(replies), ["x"]);
  });
});

Deno.test("file.tail refuses paths outside the allowed ones, directories and bad args", async (t) => {
  await withDir(async (dir) => {
    await Deno.mkdir(`${dir}/allowed`);
    await Deno.writeTextFile(`${dir}/secret.log`, "s\n");
    await using h = jobHarness({
      executor,
      paths: { read: [`${dir}/allowed`], write: [] },
    });
    const cases: { name: string; args: Record<string, unknown>; code: string; msg: RegExp }[] = [
      {
        name: "outside",
        args: { path: `${dir}/secret.log` },
        code: "forbidden",
        msg: /outside the paths this agent allows \(--allow-read/,
      },
      {
        name: "dot-dot",
        args: { path: `${dir}/allowed/../secret.log` },
        code: "forbidden",
        msg: /outside the paths/,
      },
      { name: "directory", args: { path: `${dir}/allowed` }, code: "invalid_args", msg: /regular/ },
      { name: "relative", args: { path: "app.log" }, code: "invalid_args", msg: /absolute/ },
      {
        name: "poll too short",
        args: { path: `${dir}/allowed/a`, poll: "5ms" },
        code: "invalid_args",
        msg: /poll: expected a duration .* from 10ms to 10s/,
      },
      {
        name: "unknown key",
        args: { path: `${dir}/allowed/a`, follow: true },
        code: "invalid_args",
        msg: /follow/,
      },
      {
        name: "lines too many",
        args: { path: `${dir}/allowed/a`, lines: 10_001 },
        code: "invalid_args",
        msg: /lines/,
      },
    ];
    for (const c of cases) {
      await t.step(c.name, async () => {
        const replies = await h.run({ id: c.name, job: { key: "file.tail", args: c.args } });
        const done = replies.at(-1) as Output;
        assert.equal(done.error?.code, c.code, JSON.stringify(done.error));
        assert.match(done.error!.message, c.msg);
        assert.deepEqual(stdout(replies), []);
      });
    }
  });
});

/** Installs a persistent onStart tail (it runs at the next start) and closes the runner. */
async function installOnStart(dir: string, db: DatabaseSync, args: Record<string, unknown>) {
  await using h = harness(dir, db);
  const replies = await h.run({
    id: "env-tail",
    job: {
      id: "tail",
      key: "file.tail",
      args: { poll: "20ms", ...args },
      schedule: { trigger: "onStart" },
      persistent: true,
    },
  });
  assert.equal((replies.at(-1) as Output).error, null);
}

Deno.test("file.tail resumes after an agent restart: every line once, in order", async () => {
  await withDir(async (dir) => {
    const path = `${dir}/app.log`;
    await Deno.writeTextFile(path, "before 1\nbefore 2\n");
    const db = openAgentDatabase(`${dir}/db`);
    try {
      await installOnStart(dir, db, { path });
      const seen: string[] = [];
      {
        await using h = harness(dir, db);
        await waitFor(() => logs(h.frames, /^following /).length > 0, "the tail to start");
        await append(path, "one\ntwo\npart");
        await waitFor(() => stdout(h.frames).length === 2, "two lines");
        // It reads the unfinished line too, and saves it with its position.
        await waitFor(() => {
          const row = db.prepare("SELECT state FROM job_state WHERE job_id = 'tail'").get() as
            | { state: string }
            | undefined;
          return row !== undefined && JSON.parse(row.state).partial !== undefined;
        }, "the held line in the saved state");
        await h.runner.close();
        seen.push(...stdout(h.frames));
      }
      await append(path, "ial\nwhile down\n");
      {
        await using h = harness(dir, db);
        await waitFor(() => stdout(h.frames).length === 2, "the lines written while down");
        await append(path, "after\n");
        await waitFor(() => stdout(h.frames).length === 3, "a new line");
        assert.equal(logs(h.frames, /resumed/).length, 1);
        await h.runner.close();
        seen.push(...stdout(h.frames));
      }
      assert.deepEqual(seen, ["one", "two", "partial", "while down", "after"]);
    } finally {
      db.close();
    }
  });
});

Deno.test("file.tail after a restart finishes a file rotated while it was down, then the new one", async () => {
  await withDir(async (dir) => {
    const path = `${dir}/app.log`;
    await Deno.writeTextFile(path, "");
    const db = openAgentDatabase(`${dir}/db`);
    try {
      await installOnStart(dir, db, { path });
      const seen: string[] = [];
      {
        await using h = harness(dir, db);
        await waitFor(() => logs(h.frames, /^following /).length > 0, "the tail to start");
        await append(path, "a\nb\n");
        await waitFor(() => stdout(h.frames).length === 2, "two lines");
        await h.runner.close();
        seen.push(...stdout(h.frames));
      }
      // While the agent is down: more lines, a rotation, lines to the old file, a new file.
      await append(path, "c\n");
      await Deno.rename(path, `${path}.1`);
      await append(`${path}.1`, "d\n");
      await Deno.writeTextFile(path, "e\n");
      {
        await using h = harness(dir, db);
        await waitFor(() => stdout(h.frames).length === 3, "the lines written while down");
        await append(path, "f\n");
        await waitFor(() => stdout(h.frames).length === 4, "a new line");
        assert.equal(logs(h.frames, /rotated while the agent was stopped/).length, 1);
        await h.runner.close();
        seen.push(...stdout(h.frames));
      }
      assert.deepEqual(seen, ["a", "b", "c", "d", "e", "f"]);

      // Down again; this time the old file is deleted: the new file is read from its start.
      // (The new file is made before the old one is deleted, so it cannot reuse its inode.)
      await append(path, "lost\n");
      await Deno.rename(path, `${dir}/elsewhere.log`);
      await Deno.writeTextFile(path, "g\n");
      await Deno.remove(`${dir}/elsewhere.log`);
      await Deno.remove(`${path}.1`);
      {
        await using h = harness(dir, db);
        await waitFor(() => stdout(h.frames).length === 1, "the new file's line");
        await h.runner.close();
        assert.deepEqual(stdout(h.frames), ["g"]);
        assert.equal(logs(h.frames, /is gone/).length, 1);
      }
    } finally {
      db.close();
    }
  });
});
