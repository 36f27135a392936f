import assert from "node:assert/strict";
import { FakeClock } from "../../shared/clock.ts";
import { createScheduler } from "./scheduler.ts";
import { compileTrigger } from "./triggers.ts";

function recorder(clock: FakeClock) {
  const fired: [string, string][] = [];
  const scheduler = createScheduler({
    clock,
    due: (id) => fired.push([id, new Date(clock.now()).toISOString()]),
  });
  return { fired, scheduler };
}

Deno.test("Scheduler fires an interval job every period over several hours", async () => {
  const clock = new FakeClock(Date.UTC(2026, 0, 1));
  const { fired, scheduler } = recorder(clock);
  scheduler.arm("j", compileTrigger({ trigger: "interval", every: "45m" }, clock.now()));
  assert.equal(scheduler.next("j"), Date.UTC(2026, 0, 1, 0, 45));
  await clock.advance(44 * 60_000);
  assert.equal(fired.length, 0);
  await clock.advance(5 * 3_600_000);
  assert.deepEqual(fired.map(([, at]) => at), [
    "2026-01-01T00:45:00.000Z",
    "2026-01-01T01:30:00.000Z",
    "2026-01-01T02:15:00.000Z",
    "2026-01-01T03:00:00.000Z",
    "2026-01-01T03:45:00.000Z",
    "2026-01-01T04:30:00.000Z",
    "2026-01-01T05:15:00.000Z",
  ]);
  assert.equal(scheduler.next("j"), Date.UTC(2026, 0, 1, 6, 0));
  assert.equal(clock.pending, 1);
  scheduler.close();
  assert.equal(clock.pending, 0);
});

Deno.test("Scheduler fires a cron job at exact times across the Berlin DST change", async () => {
  const clock = new FakeClock(Date.UTC(2026, 2, 28, 22, 30));
  const { fired, scheduler } = recorder(clock);
  scheduler.arm(
    "c",
    compileTrigger({ trigger: "cron", cron: "0 * * * *", tz: "Europe/Berlin" }, clock.now()),
  );
  scheduler.arm(
    "d",
    compileTrigger({ trigger: "cron", cron: "30 2 * * *", tz: "Europe/Berlin" }, clock.now()),
  );
  await clock.advance(5 * 3_600_000);
  assert.deepEqual(fired, [
    ["c", "2026-03-28T23:00:00.000Z"],
    ["c", "2026-03-29T00:00:00.000Z"],
    ["d", "2026-03-29T01:00:00.000Z"],
    ["c", "2026-03-29T01:00:00.000Z"],
    ["c", "2026-03-29T02:00:00.000Z"],
    ["c", "2026-03-29T03:00:00.000Z"],
  ]);
  assert.equal(scheduler.next("d"), Date.UTC(2026, 2, 30, 0, 30));
  scheduler.close();
});

Deno.test("Scheduler chains timers for due times beyond what one timer holds", async () => {
  const clock = new FakeClock(Date.UTC(2026, 0, 1, 12));
  const { fired, scheduler } = recorder(clock);
  // Once a year, on 1 January at midnight UTC.
  scheduler.arm(
    "y",
    compileTrigger({ trigger: "cron", cron: "0 0 1 1 *", tz: "UTC" }, clock.now()),
  );
  assert.equal(scheduler.next("y"), Date.UTC(2027, 0, 1));
  await clock.advance(Date.UTC(2026, 11, 31, 23, 59) - clock.now());
  assert.equal(fired.length, 0);
  await clock.advance(60_000);
  assert.deepEqual(fired, [["y", "2027-01-01T00:00:00.000Z"]]);
  scheduler.close();
});

Deno.test("Scheduler.arm() replaces and disarm() cancels a job's timer", async () => {
  const clock = new FakeClock();
  const { fired, scheduler } = recorder(clock);
  scheduler.arm("j", compileTrigger({ trigger: "interval", every: "10s" }, clock.now()));
  await clock.advance(5000);
  scheduler.arm("j", compileTrigger({ trigger: "interval", every: "1m" }, clock.now()));
  assert.equal(clock.pending, 1);
  await clock.advance(60_000);
  assert.equal(fired.length, 1, "only the new trigger fires, once");
  scheduler.disarm("j");
  assert.equal(clock.pending, 0);
  assert.equal(scheduler.next("j"), null);
  await clock.advance(600_000);
  assert.equal(fired.length, 1);
});

Deno.test("Scheduler.fire() calls every job armed on an event, each time", () => {
  const clock = new FakeClock();
  const { fired, scheduler } = recorder(clock);
  scheduler.arm("a", compileTrigger({ trigger: "onConnect" }, clock.now()));
  scheduler.arm("b", compileTrigger({ trigger: "onDisconnect" }, clock.now()));
  scheduler.arm("c", compileTrigger({ trigger: "onConnect" }, clock.now()));
  scheduler.arm("n", compileTrigger({ trigger: "now" }, clock.now()));
  assert.deepEqual(scheduler.fire("onConnect"), ["a", "c"]);
  assert.deepEqual(scheduler.fire("onConnect"), ["a", "c"]);
  assert.deepEqual(scheduler.armedOn("onDisconnect"), ["b"]);
  assert.deepEqual(scheduler.fire("onStart"), []);
  assert.deepEqual(fired.map(([id]) => id), ["a", "c", "a", "c"]);
  assert.equal(scheduler.next("a"), null);
  scheduler.close();
  assert.deepEqual(scheduler.fire("onConnect"), []);
  scheduler.arm("a", compileTrigger({ trigger: "onConnect" }, clock.now()));
  assert.deepEqual(scheduler.fire("onConnect"), [], "arming after close does nothing");
});
