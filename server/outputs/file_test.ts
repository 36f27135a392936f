import assert from "node:assert/strict";
import { type Clock, FakeClock, realClock } from "../../shared/clock.ts";
import { FileOutput } from "../../shared/config/outputs.ts";
import { isJwError } from "../../shared/errors.ts";
import { silentLogger } from "../../shared/log.ts";
import type { BackendDeps, OutboxItem } from "./backend.ts";
import { createFileBackend } from "./file.ts";

let nextSeq = 1;

/** Items whose body is a JSON object padded to about `size` bytes. */
function items(n: number, size = 60): OutboxItem[] {
  const out: OutboxItem[] = [];
  for (let i = 0; i < n; i++) {
    const seq = nextSeq++;
    const mid = `s1-${seq}`;
    const head = JSON.stringify({ mid, type: "output", agent: "a1", data: "" });
    const body = JSON.stringify({
      mid,
      type: "output",
      agent: "a1",
      data: "x".repeat(Math.max(0, size - head.length)),
    });
    out.push({ seq, mid, type: "output", agent: "a1", key: null, tags: {}, body });
  }
  return out;
}

function deps(clock: Clock = new FakeClock()): BackendDeps {
  return { serverId: "s1", clock, logger: silentLogger };
}

function config(path: string, extra: Record<string, unknown> = {}) {
  return FileOutput.parse({ name: "f", type: "file", path, ...extra });
}

async function withTempDir(fn: (dir: string) => Promise<void>): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix: "jw-file-output-" });
  try {
    await fn(dir);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

async function readLines(path: string): Promise<string[]> {
  const text = await Deno.readTextFile(path);
  assert.ok(text === "" || text.endsWith("\n"), `${path} ends mid-line`);
  return text === "" ? [] : text.slice(0, -1).split("\n");
}

async function exists(path: string): Promise<boolean> {
  try {
    await Deno.stat(path);
    return true;
  } catch (err) {
    if (err instanceof Deno.errors.NotFound) return false;
    throw err;
  }
}

/** Every line of `path.N` … `path.1`, `path`, oldest first. */
async function allLines(path: string, keep: number): Promise<string[]> {
  const out: string[] = [];
  for (let n = keep; n >= 1; n--) {
    if (await exists(`${path}.${n}`)) out.push(...await readLines(`${path}.${n}`));
  }
  out.push(...await readLines(path));
  return out;
}

Deno.test("file backend appends each body as one JSON line, in order, creating dirs (0640)", async () => {
  await withTempDir(async (dir) => {
    const path = `${dir}/a/b/out.jsonl`;
    await using backend = createFileBackend(config(path), deps());
    assert.equal(backend.name, "f");
    const first = items(3);
    const second = items(2);
    await backend.send(first);
    await backend.send(second);
    const lines = await readLines(path);
    assert.deepEqual(lines, [...first, ...second].map((i) => i.body));
    assert.deepEqual(lines.map((l) => JSON.parse(l).mid), [...first, ...second].map((i) => i.mid));
    assert.equal((await Deno.stat(path)).mode! & 0o777, 0o640);
  });
});

Deno.test("file backend appends to an existing file and keeps its mode", async () => {
  await withTempDir(async (dir) => {
    const path = `${dir}/out.jsonl`;
    await Deno.writeTextFile(path, '{"old":1}\n', { mode: 0o600 });
    await Deno.chmod(path, 0o600);
    await using backend = createFileBackend(config(path), deps());
    const batch = items(2);
    await backend.send(batch);
    assert.deepEqual(await readLines(path), ['{"old":1}', ...batch.map((i) => i.body)]);
    assert.equal((await Deno.stat(path)).mode! & 0o777, 0o600);
  });
});

Deno.test("file backend rotates by size; content intact and in order across files", async () => {
  await withTempDir(async (dir) => {
    const path = `${dir}/out.jsonl`;
    // 100-byte bodies → 101-byte lines; 5 lines per batch = 505 bytes; limit 1200 bytes.
    await using backend = createFileBackend(
      config(path, { rotate: { size: 1200, keep: 10 } }),
      deps(),
    );
    const sent: OutboxItem[] = [];
    for (let i = 0; i < 7; i++) {
      const batch = items(5, 100);
      assert.equal(batch[0].body.length, 100);
      sent.push(...batch);
      await backend.send(batch);
    }
    // Two batches fit (1010 ≤ 1200), a third would not: files of 2, 2, 2 and 1 batches.
    assert.equal((await Deno.stat(`${path}.3`)).size, 1010);
    assert.equal((await Deno.stat(`${path}.2`)).size, 1010);
    assert.equal((await Deno.stat(`${path}.1`)).size, 1010);
    assert.equal((await Deno.stat(path)).size, 505);
    assert.equal(await exists(`${path}.4`), false);
    assert.deepEqual(await allLines(path, 10), sent.map((i) => i.body));
  });
});

Deno.test("file backend writes a batch bigger than rotate.size whole into one file", async () => {
  await withTempDir(async (dir) => {
    const path = `${dir}/out.jsonl`;
    await using backend = createFileBackend(
      config(path, { rotate: { size: 300, keep: 3 } }),
      deps(),
    );
    const a = items(10, 100);
    const b = items(1, 100);
    await backend.send(a);
    await backend.send(b);
    assert.deepEqual(await readLines(`${path}.1`), a.map((i) => i.body));
    assert.deepEqual(await readLines(path), b.map((i) => i.body));
  });
});

Deno.test("file backend rotates when rotate.every has passed on the clock", async () => {
  await withTempDir(async (dir) => {
    const path = `${dir}/out.jsonl`;
    const clock = new FakeClock();
    await using backend = createFileBackend(
      config(path, { rotate: { every: "1h" }, fsync: "never" }),
      deps(clock),
    );
    const a = items(2);
    await backend.send(a);
    await clock.advance(59 * 60_000);
    const b = items(2);
    await backend.send(b);
    assert.equal(await exists(`${path}.1`), false, "rotated before the hour");
    await clock.advance(60_000);
    const c = items(2);
    await backend.send(c);
    assert.deepEqual(await readLines(`${path}.1`), [...a, ...b].map((i) => i.body));
    assert.deepEqual(await readLines(path), c.map((i) => i.body));
    // The hour counts from when the new file was opened.
    await clock.advance(30 * 60_000);
    await backend.send(items(1));
    assert.equal(await exists(`${path}.2`), false);
    await clock.advance(30 * 60_000);
    await backend.send(items(1));
    assert.deepEqual(await readLines(`${path}.2`), [...a, ...b].map((i) => i.body));
  });
});

Deno.test("file backend: an empty file is not rotated by time; its period starts with data", async () => {
  await withTempDir(async (dir) => {
    const path = `${dir}/out.jsonl`;
    await Deno.writeTextFile(path, "");
    const clock = new FakeClock();
    await using backend = createFileBackend(
      config(path, { rotate: { every: "1h" }, fsync: "never" }),
      deps(clock),
    );
    await backend.send([]); // nothing: the file is not even opened
    const a = items(1);
    await backend.send(a); // opens the file
    await Deno.truncate(path, 0); // emptied by someone else
    await clock.advance(2 * 3600_000);
    const b = items(1);
    await backend.send(b); // aged but empty: no rotation, a new period
    await clock.advance(1000);
    const c = items(1);
    await backend.send(c);
    assert.equal(await exists(`${path}.1`), false);
    assert.deepEqual(await readLines(path), [...b, ...c].map((i) => i.body));
  });
});

Deno.test("file backend keeps at most rotate.keep rotated files, the newest", async (t) => {
  await t.step("keep 2", async () => {
    await withTempDir(async (dir) => {
      const path = `${dir}/out.jsonl`;
      await using backend = createFileBackend(
        config(path, { rotate: { size: 10, keep: 2 } }),
        deps(),
      );
      const batches = [items(1), items(1), items(1), items(1), items(1)];
      for (const b of batches) await backend.send(b);
      assert.deepEqual(await readLines(`${path}.2`), [batches[2][0].body]);
      assert.deepEqual(await readLines(`${path}.1`), [batches[3][0].body]);
      assert.deepEqual(await readLines(path), [batches[4][0].body]);
      assert.equal(await exists(`${path}.3`), false);
    });
  });
  await t.step("keep 0 drops the rotated file", async () => {
    await withTempDir(async (dir) => {
      const path = `${dir}/out.jsonl`;
      await using backend = createFileBackend(
        config(path, { rotate: { size: 10, keep: 0 } }),
        deps(),
      );
      await backend.send(items(1));
      const last = items(1);
      await backend.send(last);
      assert.deepEqual(await readLines(path), [last[0].body]);
      assert.equal(await exists(`${path}.1`), false);
    });
  });
  await t.step("files left from a larger keep are removed", async () => {
    await withTempDir(async (dir) => {
      const path = `${dir}/out.jsonl`;
      for (let n = 1; n <= 4; n++) await Deno.writeTextFile(`${path}.${n}`, `{"n":${n}}\n`);
      await Deno.writeTextFile(path, '{"n":0}\n');
      await using backend = createFileBackend(
        config(path, { rotate: { size: 10, keep: 1 } }),
        deps(),
      );
      const batch = items(1);
      await backend.send(batch);
      assert.deepEqual(await readLines(`${path}.1`), ['{"n":0}']);
      assert.deepEqual(await readLines(path), [batch[0].body]);
      for (let n = 2; n <= 4; n++) assert.equal(await exists(`${path}.${n}`), false, `.${n}`);
    });
  });
});

Deno.test("file backend fsync modes keep every line in order", async (t) => {
  for (const fsync of ["always", "interval", "never"] as const) {
    await t.step(fsync, async () => {
      await withTempDir(async (dir) => {
        const path = `${dir}/out.jsonl`;
        const clock = new FakeClock();
        const backend = createFileBackend(
          config(path, { fsync, rotate: { size: 2000, keep: 100 } }),
          deps(clock),
        );
        const sent: OutboxItem[] = [];
        for (let i = 0; i < 30; i++) {
          const batch = items(1 + (i % 4), 80);
          sent.push(...batch);
          await backend.send(batch);
          if (i % 3 === 0) await clock.advance(400);
        }
        await backend.close();
        assert.equal(clock.pending, 0, "close cancels the sync timer");
        assert.deepEqual(await allLines(path, 100), sent.map((i) => i.body));
      });
    });
  }
});

Deno.test("file backend fsync interval syncs later on the clock, at most once a second", async () => {
  await withTempDir(async (dir) => {
    const path = `${dir}/out.jsonl`;
    const clock = new FakeClock();
    await using backend = createFileBackend(config(path, { fsync: "interval" }), deps(clock));
    await clock.advance(5000);
    await backend.send(items(1)); // due: synced at once, no timer
    assert.equal(clock.pending, 0);
    await backend.send(items(1)); // within the second: one timer for the rest of it
    await backend.send(items(1));
    assert.equal(clock.pending, 1);
    await clock.advance(1000);
    assert.equal(clock.pending, 0, "the timer fired");
    assert.equal((await readLines(path)).length, 3);
  });
});

Deno.test("file backend: an unwritable path is unavailable, and it recovers", async (t) => {
  await t.step("parent is a file", async () => {
    await withTempDir(async (dir) => {
      await Deno.writeTextFile(`${dir}/blocker`, "");
      const path = `${dir}/blocker/out.jsonl`;
      await using backend = createFileBackend(config(path), deps());
      await assert.rejects(
        backend.send(items(1)),
        (e) =>
          isJwError(e, "unavailable") && e.message.includes(path) &&
          /not a directory|exists/i.test(e.message),
      );
      // Fixed by the operator: the next send writes.
      await Deno.remove(`${dir}/blocker`);
      const batch = items(2);
      await backend.send(batch);
      assert.deepEqual(await readLines(path), batch.map((i) => i.body));
    });
  });
  // Deno lets only --allow-all open /dev/full (the kernel's always-full device).
  await t.step({
    name: "disk full (ENOSPC)",
    ignore: !(await canOpen("/dev/full")),
    fn: async () => {
      await using backend = createFileBackend(config("/dev/full"), deps());
      await assert.rejects(
        backend.send(items(3)),
        (e) => isJwError(e, "unavailable") && /No space left on device/.test(e.message),
      );
      await assert.rejects(backend.send(items(1)), (e) => isJwError(e, "unavailable"));
    },
  });
});

async function canOpen(path: string): Promise<boolean> {
  try {
    (await Deno.open(path, { write: true })).close();
    return true;
  } catch {
    return false;
  }
}

Deno.test("file backend opens a new file when the old one was moved away", async () => {
  await withTempDir(async (dir) => {
    const path = `${dir}/out.jsonl`;
    await using backend = createFileBackend(config(path), deps());
    const a = items(2);
    await backend.send(a);
    await Deno.rename(path, `${path}.moved`);
    const b = items(2);
    await backend.send(b);
    assert.deepEqual(await readLines(`${path}.moved`), a.map((i) => i.body));
    assert.deepEqual(await readLines(path), b.map((i) => i.body));
  });
});

Deno.test("file backend close() is idempotent; send after close is refused", async () => {
  await withTempDir(async (dir) => {
    const path = `${dir}/out.jsonl`;
    const backend = createFileBackend(config(path), deps());
    await backend.send(items(1));
    await backend.close();
    await backend.close();
    await assert.rejects(backend.send(items(1)), (e) => isJwError(e, "closed"));
    assert.equal((await readLines(path)).length, 1);
  });
});

Deno.test("file backend throughput: 200-byte messages, batches of 500, fsync interval", async () => {
  await withTempDir(async (dir) => {
    const path = `${dir}/out.jsonl`;
    const backend = createFileBackend(config(path, { fsync: "interval" }), deps(realClock));
    const batches = Array.from({ length: 200 }, () => items(500, 200));
    const start = performance.now();
    for (const b of batches) await backend.send(b);
    await backend.close();
    const ms = performance.now() - start;
    const rate = Math.round(100_000 / (ms / 1000));
    console.log(`file output: 100000 messages in ${ms.toFixed(0)} ms = ${rate} msg/s`);
    assert.equal((await Deno.stat(path)).size, 100_000 * 201);
    assert.ok(rate >= 50_000, `${rate} msg/s is below 50k msg/s`);
  });
});
