import assert from "node:assert/strict";
import { isJwError } from "../shared/errors.ts";
import { parseFlags } from "./_flags.ts";
import { buildRunRequest } from "./_run.ts";
import { describeTrigger, scheduleFromFlags } from "./_jobs.ts";
import { renderReply, renderSummary, succeeded } from "./_render.ts";

const OPTIONS = {
  id: { type: "string" },
  meta: { type: "string", multiple: true },
  "meta-json": { type: "string" },
  timeout: { type: "string" },
} as const;

function build(...argv: string[]) {
  const p = parseFlags(argv, OPTIONS);
  return buildRunRequest(p, p.positionals);
}

function usage(fn: () => unknown, pattern: RegExp): void {
  assert.throws(fn, (e) => isJwError(e, "usage") && pattern.test(e.message));
}

Deno.test("buildRunRequest() assembles target, job, meta and timeout", () => {
  const req = build(
    "tag:role=web",
    "exec.run",
    '{"cmd":"/bin/echo"}',
    "--id",
    "j1",
    "--meta-json",
    '{"a":{"b":1}}',
    "--meta",
    "c=2",
    "--timeout",
    "5s",
  );
  assert.deepEqual(req, {
    target: "tag:role=web",
    job: { id: "j1", key: "exec.run", args: { cmd: "/bin/echo" } },
    meta: { a: { b: 1 }, c: "2" },
    timeoutMs: 5000,
  });
});

Deno.test("buildRunRequest() refuses bad input with usage errors", async (t) => {
  await t.step("too few args", () => usage(() => build("all"), /TARGET KEY/));
  await t.step("bad target", () => usage(() => build("everyone", "exec.run"), /bad target/));
  await t.step("bad key", () => usage(() => build("all", "exec"), /category\.name/));
  await t.step("args array", () => usage(() => build("all", "exec.run", "[]"), /JSON object/));
  await t.step(
    "meta without =",
    () => usage(() => build("all", "exec.run", "--meta", "x"), /KEY=VALUE/),
  );
  await t.step("bad job id", () => usage(() => build("all", "exec.run", "--id", "-x"), /id/));
  await t.step("unknown flag", () => usage(() => build("all", "exec.run", "--shell"), /shell/));
});

Deno.test("renderReply() and renderSummary() show agent, stream and outcome", () => {
  const base = {
    v: 1 as const,
    id: "e",
    job: { id: "j", key: "exec.run" },
    seq: 0,
    ts: 0,
    agent: "a1",
  };
  assert.equal(
    renderReply({ ...base, type: "output", stream: "stdout", text: "hi" }),
    "[a1] stdout hi",
  );
  assert.match(
    renderReply({ ...base, type: "output", done: true, exitCode: 0, error: null, durationMs: 12 })!,
    /^\[a1\] done +exit 0 in 12ms \(job j\)$/,
  );
  assert.match(
    renderReply({
      ...base,
      type: "output",
      done: true,
      error: { code: "timeout", message: "killed after 1s" },
    })!,
    /failed timeout: killed after 1s/,
  );
  const summary = renderSummary({
    type: "summary",
    id: "e",
    agents: {
      a1: { status: "ok", error: null, exitCode: 0 },
      a2: { status: "timeout", error: null },
      a3: { status: "ok", error: null, exitCode: 2 },
    },
  });
  assert.deepEqual(summary, [
    "[a2] timeout: no answer before the timeout",
    "3 agents: 1 ok, 2 failed",
  ]);
  assert.equal(succeeded({ status: "ok", error: null, exitCode: 2 }), false);
});

Deno.test("scheduleFromFlags() turns --every/--cron/--on into a schedule and refuses the rest", async (t) => {
  const JOB_OPTIONS = {
    every: { type: "string" },
    cron: { type: "string" },
    tz: { type: "string" },
    on: { type: "string" },
  } as const;
  const schedule = (...argv: string[]) => scheduleFromFlags(parseFlags(argv, JOB_OPTIONS));
  assert.deepEqual(schedule("--every", "30s"), { trigger: "interval", every: "30s" });
  assert.deepEqual(schedule("--cron", "0 3 * * *", "--tz", "Europe/Berlin"), {
    trigger: "cron",
    cron: "0 3 * * *",
    tz: "Europe/Berlin",
  });
  assert.deepEqual(schedule("--on", "disconnect"), { trigger: "onDisconnect" });
  await t.step("none", () => usage(() => schedule(), /exactly one/));
  await t.step("two", () => usage(() => schedule("--every", "1s", "--on", "start"), /exactly one/));
  await t.step("sub-second", () => usage(() => schedule("--every", "500ms"), /at least 1s/));
  await t.step("negative", () => usage(() => schedule("--every=-5s"), /at least 1s/));
  await t.step("bad event", () => usage(() => schedule("--on", "reboot"), /start, connect/));
  await t.step(
    "tz without cron",
    () => usage(() => schedule("--every", "1s", "--tz", "UTC"), /--tz/),
  );
  assert.equal(describeTrigger({ trigger: "onStop" }), "on stop");
  assert.equal(
    describeTrigger({ trigger: "cron", cron: "* * * * *", tz: "UTC" }),
    'cron "* * * * *" UTC',
  );
});
