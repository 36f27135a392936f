import assert from "node:assert/strict";
import { isJwError } from "../../shared/errors.ts";
import type { Schedule } from "../../shared/protocol/mod.ts";
import { compileTrigger, cronTrigger, intervalTrigger, type TimeTrigger } from "./triggers.ts";

const T0 = Date.UTC(2026, 0, 1);

/** The first `n` due times of `t` armed at `from`, each fired on time. */
function dueTimes(t: TimeTrigger, from: number, n: number): string[] {
  const out: string[] = [];
  let at = t.first(from);
  while (at !== null && out.length < n) {
    out.push(new Date(at).toISOString());
    at = t.after(at, at);
  }
  return out;
}

Deno.test("intervalTrigger() is due every period from arming time, skipping missed slots", () => {
  const t = intervalTrigger("90s");
  assert.equal(t.first(T0), T0 + 90_000);
  assert.equal(t.after(T0 + 90_000, T0 + 90_000), T0 + 180_000);
  // Fired 5 ms late: the grid does not drift.
  assert.equal(t.after(T0 + 90_000, T0 + 90_005), T0 + 180_000);
  // Fired 4 periods late (the host slept): the next slot after now, on the same grid.
  assert.equal(t.after(T0 + 90_000, T0 + 90_000 * 5 + 1), T0 + 90_000 * 6);
  assert.equal(intervalTrigger("1s").first(T0), T0 + 1000);
  assert.equal(intervalTrigger("1h30m").first(T0), T0 + 5_400_000);
});

Deno.test("intervalTrigger() refuses durations that are not positive and at least 1s", async (t) => {
  const cases: [string, RegExp][] = [
    ["0s", /at least 1s, got "0s"/],
    ["999ms", /at least 1s/],
    ["0", /at least 1s/],
    ["-5s", /bad interval "-5s": expected a duration/],
    ["soon", /bad interval "soon": expected a duration/],
    ["5 s", /bad interval/],
    ["", /bad interval/],
  ];
  for (const [every, message] of cases) {
    await t.step(JSON.stringify(every), () => {
      assert.throws(() => intervalTrigger(every), (err) => {
        assert.ok(isJwError(err, "invalid_args"));
        assert.match(err.message, message);
        return true;
      });
    });
  }
});

Deno.test("cronTrigger() follows wall time across hours and days in UTC", () => {
  const t = cronTrigger("15 */2 * * *", "UTC", T0);
  assert.deepEqual(dueTimes(t, T0, 4), [
    "2026-01-01T00:15:00.000Z",
    "2026-01-01T02:15:00.000Z",
    "2026-01-01T04:15:00.000Z",
    "2026-01-01T06:15:00.000Z",
  ]);
  const seconds = cronTrigger("*/20 * * * * *", "UTC", T0);
  assert.deepEqual(dueTimes(seconds, T0, 3), [
    "2026-01-01T00:00:20.000Z",
    "2026-01-01T00:00:40.000Z",
    "2026-01-01T00:01:00.000Z",
  ]);
  // A timer that fires late does not make the trigger fire twice for one slot.
  const due = Date.UTC(2026, 0, 1, 2, 15);
  assert.equal(t.after(due, due + 3000), Date.UTC(2026, 0, 1, 4, 15));
  assert.equal(t.after(due, Date.UTC(2026, 0, 1, 9)), Date.UTC(2026, 0, 1, 10, 15));
});

Deno.test("cronTrigger() in Europe/Berlin across the March 2026 DST change", async (t) => {
  // 2026-03-29 02:00 CET (01:00Z) jumps to 03:00 CEST.
  await t.step("hourly: one run per real hour, no 02:00 local", () => {
    const from = Date.UTC(2026, 2, 28, 22);
    assert.deepEqual(dueTimes(cronTrigger("0 * * * *", "Europe/Berlin", from), from, 5), [
      "2026-03-28T23:00:00.000Z", // 00:00 CET
      "2026-03-29T00:00:00.000Z", // 01:00 CET
      "2026-03-29T01:00:00.000Z", // 03:00 CEST
      "2026-03-29T02:00:00.000Z", // 04:00 CEST
      "2026-03-29T03:00:00.000Z", // 05:00 CEST
    ]);
  });
  await t.step("daily 09:00 local moves one hour earlier in UTC", () => {
    const from = Date.UTC(2026, 2, 27, 12);
    assert.deepEqual(dueTimes(cronTrigger("0 9 * * *", "Europe/Berlin", from), from, 3), [
      "2026-03-28T08:00:00.000Z",
      "2026-03-29T07:00:00.000Z",
      "2026-03-30T07:00:00.000Z",
    ]);
  });
  await t.step("daily 02:30 local: on the skipped day it runs at 03:00 CEST, once", () => {
    const from = Date.UTC(2026, 2, 27, 12);
    assert.deepEqual(dueTimes(cronTrigger("30 2 * * *", "Europe/Berlin", from), from, 3), [
      "2026-03-28T01:30:00.000Z", // 02:30 CET
      "2026-03-29T01:00:00.000Z", // 02:30 does not exist: 03:00 CEST
      "2026-03-30T00:30:00.000Z", // 02:30 CEST
    ]);
  });
  await t.step("daily 02:30 local on the October fall-back day runs once", () => {
    const from = Date.UTC(2026, 9, 24, 12);
    assert.deepEqual(dueTimes(cronTrigger("30 2 * * *", "Europe/Berlin", from), from, 2), [
      "2026-10-25T00:30:00.000Z", // the first 02:30 (CEST)
      "2026-10-26T01:30:00.000Z", // 02:30 CET
    ]);
  });
});

Deno.test("cronTrigger() in America/New_York across the March 2026 DST change", () => {
  // 2026-03-08 02:00 EST (07:00Z) jumps to 03:00 EDT.
  const from = Date.UTC(2026, 2, 7, 12);
  assert.deepEqual(dueTimes(cronTrigger("30 1 * * *", "America/New_York", from), from, 3), [
    "2026-03-08T06:30:00.000Z", // 01:30 EST
    "2026-03-09T05:30:00.000Z", // 01:30 EDT
    "2026-03-10T05:30:00.000Z",
  ]);
});

Deno.test("cronTrigger() refuses bad expressions and zones with invalid_args", async (t) => {
  const cases: [string, string | undefined, RegExp][] = [
    ["61 * * * *", undefined, /bad cron expression "61 \* \* \* \*": .*minute/],
    ["* * *", undefined, /expected 5 fields .* or 6/],
    ["nonsense", undefined, /expected 5 fields/],
    ["* * * * * * *", undefined, /expected 5 fields/],
    ["0 0 30 2 *", undefined, /never fires/],
    ["* * * * *", "Mars/Olympus", /unknown time zone "Mars\/Olympus"/],
  ];
  for (const [cron, tz, message] of cases) {
    await t.step(`${cron} ${tz ?? ""}`, () => {
      assert.throws(() => cronTrigger(cron, tz, T0), (err) => {
        assert.ok(isJwError(err, "invalid_args"));
        assert.match(err.message, message);
        return true;
      });
    });
  }
});

Deno.test("compileTrigger() sorts schedules into now, event and time triggers", () => {
  const kinds = (s: Schedule) => compileTrigger(s, T0).kind;
  assert.equal(kinds({ trigger: "now" }), "now");
  assert.equal(kinds({ trigger: "interval", every: "1m" }), "time");
  assert.equal(kinds({ trigger: "cron", cron: "@hourly" }), "time");
  for (const event of ["onStart", "onConnect", "onDisconnect", "onStop"] as const) {
    assert.deepEqual(compileTrigger({ trigger: event }, T0), { kind: "event", event });
  }
});
