import assert from "node:assert/strict";
import { silentLogger } from "../../shared/log.ts";
import { openAgentDatabase } from "../db.ts";
import type { Job, RunRecord } from "./job.ts";
import { createJobStore, createMemoryRunHistory } from "./store.ts";

function job(id: string, over: Partial<Job> = {}): Job {
  return {
    id,
    key: "exec.run",
    args: { cmd: "/bin/echo", args: ["hi"] },
    meta: { ticket: { n: 1 }, tags: ["a", null] },
    trigger: { trigger: "cron", cron: "0 * * * *", tz: "Europe/Berlin" },
    persistent: true,
    overlap: "skip",
    createdAt: 1000,
    createdBy: "s1",
    envelopeId: `env-${id}`,
    ...over,
  };
}

function run(n: number): RunRecord {
  return {
    run: `r-${n}`,
    start: n * 1000,
    finish: n * 1000 + 5,
    durationMs: 5,
    exitCode: n % 2 === 0 ? 0 : null,
    error: n % 2 === 0 ? null : { code: "timeout", message: "killed after 5s" },
  };
}

Deno.test("JobStore keeps jobs verbatim, replaces by id and deletes with their runs", () => {
  using db = disposable(openAgentDatabase(":memory:"));
  const store = createJobStore(db.value, 5, silentLogger);
  store.upsert(job("b", { createdAt: 2000 }));
  store.upsert(job("a"));
  const noMeta: Job = { ...job("c", { createdAt: 3000, overlap: "allow" }) };
  delete (noMeta as { meta?: unknown }).meta;
  store.upsert(noMeta);
  assert.deepEqual(store.load(), {
    jobs: [job("a"), job("b", { createdAt: 2000 }), noMeta],
    unreadable: [],
  });

  store.upsert(job("a", { key: "tags.set", args: { tags: {} }, envelopeId: "env-new" }));
  assert.equal(store.load().jobs.length, 3);
  assert.equal(store.load().jobs[0].envelopeId, "env-new");

  store.record("a", run(1));
  store.record("b", run(2));
  assert.equal(store.delete("a"), true);
  assert.equal(store.delete("a"), false);
  assert.deepEqual(store.list("a", 10), []);
  assert.deepEqual(store.list("b", 10), [run(2)]);
  assert.deepEqual(store.load().jobs.map((j) => j.id), ["b", "c"]);
});

Deno.test("JobStore.record() keeps the newest keepRuns runs per job, newest first", () => {
  using db = disposable(openAgentDatabase(":memory:"));
  const store = createJobStore(db.value, 3, silentLogger);
  for (let n = 1; n <= 10; n++) {
    store.record("a", run(n));
    store.record("b", run(100 + n));
  }
  assert.deepEqual(store.list("a", 100), [run(10), run(9), run(8)]);
  assert.deepEqual(store.list("a", 1), [run(10)]);
  assert.deepEqual(store.list("b", 100).map((r) => r.run), ["r-110", "r-109", "r-108"]);
  const rows = db.value.prepare("SELECT COUNT(*) AS n FROM runs").get() as { n: number };
  assert.equal(rows.n, 6, "older runs are deleted, not hidden");
  store.clear("a");
  assert.deepEqual(store.list("a", 100), []);
});

Deno.test("JobStore.load() returns rows that no longer parse apart, naming the bad column", async (t) => {
  const cases: [string, string, string | null, RegExp, boolean][] = [
    // [name, column, value, message, key readable]
    ["unknown trigger", "trigger", '{"trigger":"sometimes"}', /^stored job column trigger: /, true],
    ["trigger not JSON", "trigger", "{", /^stored job column trigger: .*JSON/, true],
    ["args an array", "args", "[1]", /^stored job column args: /, true],
    ["bad overlap", "overlap", "never", /^stored job column overlap: /, true],
    ["meta not an object", "meta", '"x"', /^stored job column meta: /, true],
    ["bad key", "key", "Not A Key", /^stored job column key: .*category\.name/, false],
  ];
  for (const [name, col, value, message, keyReadable] of cases) {
    await t.step(name, () => {
      using db = disposable(openAgentDatabase(":memory:"));
      const store = createJobStore(db.value, 3, silentLogger);
      store.upsert(job("good"));
      store.upsert(job("bad"));
      db.value.prepare(`UPDATE jobs SET ${col} = ? WHERE id = 'bad'`).run(value);
      const { jobs, unreadable } = store.load();
      assert.deepEqual(jobs.map((j) => j.id), ["good"]);
      assert.equal(unreadable.length, 1);
      const [bad] = unreadable;
      assert.equal(bad.id, "bad");
      assert.equal(bad.key, keyReadable ? "exec.run" : undefined);
      assert.equal("key" in bad, keyReadable);
      assert.match(bad.error, message);
      assert.doesNotMatch(bad.error, /\n/, "one line");
      assert.equal(store.delete("bad"), true, "it can be deleted");
      assert.deepEqual(store.load().unreadable, []);
    });
  }
});

Deno.test("MemoryRunHistory keeps the newest keepRuns runs per job", () => {
  const history = createMemoryRunHistory(2);
  for (let n = 1; n <= 5; n++) history.record("a", run(n));
  assert.deepEqual(history.list("a", 10), [run(5), run(4)]);
  assert.deepEqual(history.list("a", 1), [run(5)]);
  assert.deepEqual(history.list("b", 1), []);
  history.clear("a");
  assert.deepEqual(history.list("a", 10), []);
});

/** `using` for a database handle. */
function disposable<T extends { close(): void }>(value: T): { value: T } & Disposable {
  return { value, [Symbol.dispose]: () => value.close() };
}
