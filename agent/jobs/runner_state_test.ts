import assert from "node:assert/strict";
import { z } from "zod";
import { FakeClock } from "../../shared/clock.ts";
import { openAgentDatabase } from "../db.ts";
import { defineCommand } from "../payload/commands.ts";
import { FakeExecutor } from "../_fake_executor.ts";
import { jobHarness } from "../_job_harness.ts";

/** Counts its runs in the job's state and reports the count. */
const counter = defineCommand({
  key: "test.count",
  description: "counts its runs in the job state",
  args: z.object({ label: z.string().default("n") }).strict(),
  run(ctx, args) {
    const n = Number(ctx.state.get()?.[args.label] ?? 0) + 1;
    ctx.state.set({ [args.label]: n });
    return Promise.resolve({ error: null, data: { n } });
  },
});

const executor = new FakeExecutor((p) => p.exit(0));

const HOUR = 3_600_000;

/** Lets the hourly job run once more and returns the count it reported. */
async function nextCount(h: ReturnType<typeof jobHarness>, clock: FakeClock): Promise<number> {
  const before = h.frames.length;
  await clock.advance(HOUR);
  const done = h.frames.slice(before).find((f) => f.type === "output" && f.done);
  assert.ok(done && done.type === "output", JSON.stringify(h.frames.slice(before)));
  return (done.data as { n: number }).n;
}

Deno.test("job state: a persistent job's state outlives an agent restart; other arguments start afresh", async () => {
  const path = await Deno.makeTempDir({ prefix: "jw-state-" });
  try {
    const install = (h: ReturnType<typeof jobHarness>, label: string) =>
      h.run({
        id: `env-${label}`,
        job: {
          id: "c",
          key: "test.count",
          args: { label },
          schedule: { trigger: "interval", every: "1h" },
          persistent: true,
        },
      });
    {
      const db = openAgentDatabase(path);
      const clock = new FakeClock(0);
      await using h = jobHarness({ executor, db, clock, commands: [counter] });
      await install(h, "n");
      assert.equal(await nextCount(h, clock), 1);
      assert.equal(await nextCount(h, clock), 2);
      db.close();
    }
    {
      const db = openAgentDatabase(path);
      const clock = new FakeClock(0);
      await using h = jobHarness({ executor, db, clock, commands: [counter] });
      assert.equal(await nextCount(h, clock), 3, "the count survived the restart");
      // Replaced by the same job with other arguments: its state starts afresh.
      await install(h, "m");
      assert.equal(await nextCount(h, clock), 1);
      assert.equal(await nextCount(h, clock), 2);
      // Deleted and installed again: afresh too.
      await h.call("job.delete", { id: "c" });
      await install(h, "m");
      assert.equal(await nextCount(h, clock), 1);
      db.close();
    }
  } finally {
    await Deno.remove(path, { recursive: true });
  }
});

Deno.test("job state: a job that is not persistent keeps it in memory between its runs", async () => {
  const clock = new FakeClock(0);
  await using h = jobHarness({ executor, clock, commands: [counter] });
  await h.run({
    id: "env-1",
    job: { id: "m", key: "test.count", args: {}, schedule: { trigger: "interval", every: "1h" } },
  });
  assert.equal(await nextCount(h, clock), 1);
  assert.equal(await nextCount(h, clock), 2);
  const saved = h.db.prepare("SELECT count(*) AS n FROM job_state").get() as { n: number };
  assert.equal(saved.n, 0, "nothing written to disk");
});
