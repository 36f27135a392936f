import assert from "node:assert/strict";
import { FakeClock } from "../../shared/clock.ts";
import { generateKeyPair } from "../../shared/crypto/keys.ts";
import { signScript } from "../../shared/crypto/script.ts";
import type { Output, Reply } from "../../shared/protocol/mod.ts";
import type { SandboxResult, SandboxRun } from "../../shared/sandbox/mod.ts";
import { createDenoExecutor } from "../deno_executor.ts";
import { jobHarness } from "../_job_harness.ts";
import type { ScriptPolicy } from "../scripts/policy.ts";
import type { TrustedSigners } from "../scripts/trust.ts";

const signer = await generateKeyPair();
const stranger = await generateKeyPair();
const trusted: TrustedSigners = {
  kids: [signer.kid],
  lookup: (kid) => (kid === signer.kid ? signer.publicJwk : undefined),
};
const policy: ScriptPolicy = {
  run: ["/bin/echo"],
  read: ["/proc"],
  write: [],
  net: ["127.0.0.1"],
};

function source(
  options: { version?: number; read?: string[]; run?: string[]; body?: string } = {},
): string {
  return [
    "/*---",
    "name: report",
    `version: ${options.version ?? 1}`,
    "permissions:",
    `  read: ${JSON.stringify(options.read ?? ["/proc/mounts"])}`,
    `  run: ${JSON.stringify(options.run ?? ["/bin/echo"])}`,
    "timeout: 5s",
    "---*/",
    options.body ?? "emit({ ok: true });",
    "",
  ].join("\n");
}

/** A sandbox that records each run and lets the test play the script's part. */
type Play = (
  run: SandboxRun,
) => Promise<SandboxResult["error"] | void> | SandboxResult["error"] | void;

function fakeSandbox(play: Play) {
  const runs: SandboxRun[] = [];
  const sandbox = async (run: SandboxRun): Promise<SandboxResult> => {
    runs.push(run);
    const error = (await play(run)) ?? null;
    return { error, durationMs: 1 };
  };
  return { runs, sandbox };
}

function harness(play: Play = () => {}, clock?: FakeClock) {
  const fake = fakeSandbox(play);
  const h = jobHarness({
    clock,
    executor: createDenoExecutor(),
    allowRun: ["/bin/echo", "/bin/true"],
    scripts: { trusted, policy, sandbox: fake.sandbox },
  });
  return Object.assign(h, { runs: fake.runs });
}

function done(frames: Reply[]): Output {
  const last = frames.at(-1) as Output;
  assert.equal(last.done, true);
  return last;
}

let ids = 0;
const nextId = () => `s${++ids}`;

Deno.test("script.register stores a script signed by a trusted key, once per content", async () => {
  await using h = harness();
  const text = await signScript(source(), signer);
  const first = await h.call("script.register", { script: text });
  assert.equal(first.name, "report");
  assert.equal(first.version, 1);
  assert.equal(first.signer, signer.kid);
  assert.equal(first.created, true);
  assert.equal((await h.call("script.register", { script: text })).created, false);
  const listed = await h.call("script.list");
  assert.deepEqual(
    (listed.scripts as { name: string; version: number }[]).map((s) => [s.name, s.version]),
    [["report", 1]],
  );
  const audited = h.audit.list({ action: "script.register" });
  assert.equal(audited.length, 2);
  assert.ok(audited.every((r) => r.outcome === "ok" && r.actor === "server:s1"));
});

Deno.test("script.register refuses unsigned, untrusted and tampered scripts, audited", async (t) => {
  await using h = harness();
  const signed = await signScript(source(), signer);
  const cases: [string, string, string, RegExp][] = [
    ["unsigned", source(), "untrusted", /not signed/],
    ["untrusted key", await signScript(source(), stranger), "untrusted", /not a trusted signer/],
    [
      "one byte of body changed",
      signed.replace("ok: true", "ok: fals"),
      "bad_signature",
      /changed after it was signed/,
    ],
    [
      "permission widened after signing",
      signed.replace('["/proc/mounts"]', '["/proc"]'),
      "bad_signature",
      /does not verify/,
    ],
    [
      "version bumped after signing",
      signed.replace("version: 1", "version: 2"),
      "bad_signature",
      /does not verify/,
    ],
    ["no header", "emit({});\n", "invalid_script", /must start with/],
  ];
  for (const [label, text, code, message] of cases) {
    await t.step(label, async () => {
      const before = h.audit.list({ action: "script.verify" }).length;
      const frames = await h.run({
        id: nextId(),
        job: { key: "script.register", args: { script: text } },
      });
      const error = done(frames).error!;
      assert.equal(error.code, code);
      assert.match(error.message, message);
      const audited = h.audit.list({ action: "script.verify" });
      assert.equal(audited.length, before + 1);
      assert.equal(audited[0].outcome, "denied");
      assert.match(audited[0].reason!, new RegExp(code));
    });
  }
  assert.deepEqual((await h.call("script.list")).scripts, []);
});

Deno.test("script.register refuses a script asking for more than the policy allows", async () => {
  await using h = harness();
  const cases: [{ read?: string[]; run?: string[] }, RegExp][] = [
    [{ read: ["/etc/shadow"] }, /asks for read \/etc\/shadow.*--allow-read \/etc\/shadow/],
    [{ run: ["/bin/sh"] }, /asks for run \/bin\/sh.*--allow-run \/bin\/sh/],
  ];
  for (const [options, want] of cases) {
    const text = await signScript(source(options), signer);
    const frames = await h.run({
      id: nextId(),
      job: { key: "script.register", args: { script: text } },
    });
    const error = done(frames).error!;
    assert.equal(error.code, "forbidden");
    assert.match(error.message, want);
  }
  const denied = h.audit.list({ action: "script.register" });
  assert.equal(denied.length, 2);
  assert.ok(denied.every((r) => r.outcome === "denied"));
  assert.deepEqual((await h.call("script.list")).scripts, []);
});

Deno.test("script.register refuses other content under a registered version", async () => {
  await using h = harness();
  await h.call("script.register", { script: await signScript(source(), signer) });
  const other = await signScript(source({ body: "emit({ other: 1 });" }), signer);
  const frames = await h.run({
    id: nextId(),
    job: { key: "script.register", args: { script: other } },
  });
  assert.equal(done(frames).error?.code, "conflict");
  assert.match(done(frames).error!.message, /higher version/);
  const v2 = await signScript(source({ version: 2, body: "emit({ other: 1 });" }), signer);
  assert.equal((await h.call("script.register", { script: v2 })).version, 2);
});

Deno.test("script.register checks the name and version an operator expects", async () => {
  await using h = harness();
  const text = await signScript(source(), signer);
  const frames = await h.run({
    id: nextId(),
    job: { key: "script.register", args: { script: text, name: "report", version: 2 } },
  });
  assert.equal(done(frames).error?.code, "invalid_args");
  assert.match(done(frames).error!.message, /report version 1, not report version 2/);
});

Deno.test("script.run hands the sandbox the signed permissions and turns its events into replies", async () => {
  await using h = harness(async (run) => {
    run.host.emit({ full: ["/"] });
    run.host.log("warn", "almost full", { mount: "/" });
    run.host.print("stdout", "plain line");
    const echoed = await run.host.call("exec.run", { cmd: "/bin/echo", args: ["hi"] }) as {
      stdout: string;
      exitCode: number;
    };
    run.host.emit({ echoed: echoed.stdout, code: echoed.exitCode });
  });
  await h.call("script.register", { script: await signScript(source(), signer) });
  const frames = await h.run({
    id: "run-1",
    job: { id: "job-1", key: "script.run", args: { name: "report", args: { limit: 90 } } },
    meta: { ticket: 7 },
  });
  assert.equal(done(frames).error, null);
  const run = h.runs[0];
  assert.deepEqual(run.permissions, { read: ["/proc/mounts"], write: [], net: [] });
  assert.equal(run.timeoutMs, 5000);
  assert.equal(run.memoryMb, 64);
  assert.deepEqual(run.globals.args, { limit: 90 });
  assert.deepEqual(run.globals.meta, { ticket: 7 });
  assert.deepEqual((run.globals.job as { id: string; key: string }).id, "job-1");
  assert.equal((run.globals.job as { key: string }).key, "script.run");
  assert.ok(run.commands.includes("exec.run"));
  assert.ok(!run.commands.some((k) => k.startsWith("script.")));
  const outputs = frames.filter((f): f is Output => f.type === "output" && !f.done);
  assert.deepEqual(outputs.filter((f) => f.data).map((f) => f.data), [
    { full: ["/"] },
    { echoed: "hi", code: 0 },
  ]);
  assert.deepEqual(outputs.filter((f) => f.text).map((f) => f.text), ["plain line"]);
  assert.ok(
    frames.every((f) => f.type !== "output" || (f.meta as { ticket: number }).ticket === 7),
  );
  const log = frames.find((f) => f.type === "log");
  assert.equal(log?.type === "log" && log.message, "almost full");
  assert.equal(h.audit.list({ action: "script.run" })[0].outcome, "ok");
});

Deno.test("builtin calls from a script keep to its permissions.run, the whitelist and the ACL", async () => {
  const seen: string[] = [];
  await using h = harness(async (run) => {
    for (
      const [key, args] of [
        ["exec.run", { cmd: "/bin/true" }], // whitelisted, not in permissions.run
        ["exec.run", { cmd: "/bin/sh" }], // in neither
        ["script.delete", { name: "report" }], // never from a script
        ["exec.run", { cmd: 5 }], // bad args
        ["nope.nothing", {}],
      ] as const
    ) {
      try {
        await run.host.call(key, args);
        seen.push("no error");
      } catch (err) {
        seen.push((err as { code: string }).code);
      }
    }
  });
  await h.call("script.register", { script: await signScript(source(), signer) });
  const frames = await h.run({
    id: nextId(),
    job: { key: "script.run", args: { name: "report" } },
  });
  assert.equal(done(frames).error, null);
  assert.deepEqual(seen, [
    "not_whitelisted",
    "not_whitelisted",
    "forbidden",
    "invalid_args",
    "unknown_command",
  ]);
});

Deno.test("script.run verifies again before every run", async () => {
  await using h = harness();
  await h.call("script.register", { script: await signScript(source(), signer) });
  h.db.exec("UPDATE scripts SET text = replace(text, 'ok: true', 'ok: 1')");
  const frames = await h.run({
    id: nextId(),
    job: { key: "script.run", args: { name: "report" } },
  });
  assert.equal(done(frames).error?.code, "bad_signature");
  assert.equal(h.runs.length, 0);
  assert.equal(h.audit.list({ action: "script.verify" })[0].outcome, "denied");
});

Deno.test("script.run passes the sandbox's error on and refuses unknown scripts", async () => {
  await using h = harness(() => ({ code: "timeout", message: "script stopped after 5s" }));
  await h.call("script.register", { script: await signScript(source(), signer) });
  const frames = await h.run({
    id: nextId(),
    job: { key: "script.run", args: { name: "report" } },
  });
  assert.deepEqual(done(frames).error, { code: "timeout", message: "script stopped after 5s" });
  const ended = h.audit.list({ action: "script.run" })[0];
  assert.equal(ended.outcome, "error");
  assert.match(ended.reason!, /report@1: timeout: script stopped after 5s/);
  const missing = await h.run({
    id: nextId(),
    job: { key: "script.run", args: { name: "other" } },
  });
  assert.equal(done(missing).error?.code, "not_found");
  const old = await h.run({
    id: nextId(),
    job: { key: "script.run", args: { name: "report", version: 9 } },
  });
  assert.match(done(old).error!.message, /report" version 9 is not registered/);
});

Deno.test("script.delete removes every version, or one; an unknown name is not an error", async () => {
  await using h = harness();
  await h.call("script.register", { script: await signScript(source(), signer) });
  await h.call("script.register", { script: await signScript(source({ version: 2 }), signer) });
  assert.deepEqual(await h.call("script.delete", { name: "report", version: 1 }), {
    deleted: 1,
    versions: [1],
  });
  assert.deepEqual(await h.call("script.delete", { name: "report" }), {
    deleted: 1,
    versions: [2],
  });
  assert.deepEqual(await h.call("script.delete", { name: "report" }), { deleted: 0, versions: [] });
  assert.equal(h.audit.list({ action: "script.delete" }).length, 3);
});

/** Lets the event loop turn (signature checks finish in WebCrypto) until `cond` holds. */
async function turnsUntil(cond: () => boolean, what: string): Promise<void> {
  for (let i = 0; i < 1000; i++) {
    if (cond()) return;
    await new Promise((resolve) => setTimeout(resolve, 0));
  }
  throw new Error(`still waiting for ${what}`);
}

Deno.test("a job runs a script on its schedule, with the job's meta on every run", async () => {
  const clock = new FakeClock(Date.UTC(2026, 0, 1));
  await using h = harness((run) => {
    run.host.emit({ tick: (run.globals.job as { run: string }).run });
  }, clock);
  await h.call("script.register", { script: await signScript(source(), signer) });
  const installed = await h.run({
    id: "env-j",
    job: {
      id: "disk",
      key: "script.run",
      args: { name: "report" },
      schedule: { trigger: "interval", every: "10m" },
    },
    meta: { team: "ops" },
  });
  assert.equal(done(installed).error, null);
  for (let n = 1; n <= 3; n++) {
    await clock.advance(10 * 60_000);
    await turnsUntil(() => h.doneRuns("disk").length === n, `run ${n}`);
  }
  const runs = h.doneRuns("disk");
  assert.ok(runs.every((r) => r.error === null && (r.meta as { team: string }).team === "ops"));
  assert.equal(h.runs.length, 3);
  assert.equal(new Set(h.runs.map((r) => (r.globals.job as { run: string }).run)).size, 3);
});
