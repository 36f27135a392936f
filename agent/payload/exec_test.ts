import assert from "node:assert/strict";
import type { Output, Reply } from "../../shared/protocol/mod.ts";
import { createDenoExecutor } from "../deno_executor.ts";
import type { CommandExecutor } from "../executor.ts";
import { jobHarness } from "../_job_harness.ts";
import { isAlive, liveGroupMembers } from "../_proc.ts";

const ALLOW = ["/bin/echo", "/bin/sh", "/nonexistent/jw-test"];

/** The real executor, remembering each started pid. */
function spyExecutor(): CommandExecutor & { pids: number[] } {
  const inner = createDenoExecutor();
  const pids: number[] = [];
  return {
    pids,
    spawn(spec) {
      const proc = inner.spawn(spec);
      pids.push(proc.pid);
      return proc;
    },
  };
}

function lines(frames: Reply[], stream: "stdout" | "stderr"): string[] {
  return frames
    .filter((f): f is Output => f.type === "output" && f.stream === stream)
    .map((f) => f.text!);
}

function done(frames: Reply[]): Output {
  const last = frames.at(-1) as Output;
  assert.equal(last.done, true);
  return last;
}

Deno.test("exec.run runs /bin/echo and reports its output and exit code 0", async () => {
  await using h = jobHarness({ executor: createDenoExecutor(), allowRun: ALLOW });
  const frames = await h.run({
    id: "e1",
    job: { key: "exec.run", args: { cmd: "/bin/echo", args: ["hello", "world"] } },
  });
  assert.deepEqual(lines(frames, "stdout"), ["hello world"]);
  assert.deepEqual(lines(frames, "stderr"), []);
  const last = done(frames);
  assert.equal(last.exitCode, 0);
  assert.equal(last.error, null);
  assert.deepEqual(frames.map((f) => f.seq), [0, 1]);
});

Deno.test("exec.run keeps line order per stream and tags each line with its stream", async () => {
  await using h = jobHarness({ executor: createDenoExecutor(), allowRun: ALLOW });
  const script = "echo out1; echo err1 >&2; echo out2; echo err2 >&2; printf out3";
  const frames = await h.run({
    id: "e2",
    job: { key: "exec.run", args: { cmd: "/bin/sh", args: ["-c", script] } },
  });
  assert.deepEqual(lines(frames, "stdout"), ["out1", "out2", "out3"]);
  assert.deepEqual(lines(frames, "stderr"), ["err1", "err2"]);
  assert.deepEqual(frames.map((f) => f.seq), frames.map((_, i) => i));
  assert.equal(done(frames).exitCode, 0);
});

Deno.test("exec.run reports a non-zero exit code without an error", async () => {
  await using h = jobHarness({ executor: createDenoExecutor(), allowRun: ALLOW });
  const frames = await h.run({
    id: "e3",
    job: { key: "exec.run", args: { cmd: "/bin/sh", args: ["-c", "echo failing >&2; exit 7"] } },
  });
  assert.deepEqual(lines(frames, "stderr"), ["failing"]);
  const last = done(frames);
  assert.equal(last.exitCode, 7);
  assert.equal(last.error, null);
});

Deno.test("exec.run timeout kills the whole process tree", async () => {
  const executor = spyExecutor();
  await using h = jobHarness({ executor, allowRun: ALLOW });
  const frames = await h.run({
    id: "e4",
    job: {
      key: "exec.run",
      args: { cmd: "/bin/sh", args: ["-c", "sleep 30 & echo $!; sleep 30"], timeout: "300ms" },
    },
  });
  const last = done(frames);
  assert.deepEqual(last.error, { code: "timeout", message: "killed after 300ms" });
  assert.equal(last.exitCode, null);
  assert.ok(last.durationMs! >= 300 && last.durationMs! < 5000, `took ${last.durationMs}ms`);
  const [sh] = executor.pids;
  const [background] = lines(frames, "stdout").map(Number);
  assert.ok(background > 0);
  assert.equal(await isAlive(sh), false, "sh is gone");
  assert.equal(await isAlive(background), false, "the background sleep is gone");
  assert.deepEqual(await liveGroupMembers(sh), [], "nothing of the group is left");
});

Deno.test("exec.run timeout kills `sleep 30 & sleep 30` with no pid printed", async () => {
  const executor = spyExecutor();
  await using h = jobHarness({ executor, allowRun: ALLOW });
  const frames = await h.run({
    id: "e5",
    job: {
      key: "exec.run",
      args: { cmd: "/bin/sh", args: ["-c", "sleep 30 & sleep 30"], timeout: 300 },
    },
  });
  assert.equal(done(frames).error?.code, "timeout");
  assert.deepEqual(await liveGroupMembers(executor.pids[0]), []);
});

Deno.test("exec.run reports spawn_failed for a whitelisted program that does not exist", async () => {
  await using h = jobHarness({ executor: createDenoExecutor(), allowRun: ALLOW });
  const frames = await h.run({
    id: "e6",
    job: { key: "exec.run", args: { cmd: "/nonexistent/jw-test" } },
  });
  assert.equal(frames.length, 1);
  assert.equal(done(frames).error?.code, "spawn_failed");
  assert.equal("exitCode" in frames[0], false);
});

Deno.test("exec.run refuses a program off the whitelist without starting it", async () => {
  const executor = spyExecutor();
  await using h = jobHarness({ executor, allowRun: ["/bin/echo"] });
  const frames = await h.run({
    id: "e7",
    job: {
      key: "exec.run",
      args: { cmd: "/bin/sh", args: ["-c", "touch /tmp/jw-should-not-exist"] },
    },
  });
  assert.equal(done(frames).error?.code, "not_whitelisted");
  assert.deepEqual(executor.pids, []);
});

Deno.test("exec.run runs in the given cwd with the given env", async () => {
  await using h = jobHarness({
    executor: createDenoExecutor(),
    allowRun: ALLOW,
    allowEnv: ["GREETING"],
  });
  const frames = await h.run({
    id: "e8",
    job: {
      key: "exec.run",
      args: {
        cmd: "/bin/sh",
        args: ["-c", 'pwd; echo "$GREETING"'],
        cwd: "/tmp",
        env: { GREETING: "hi there" },
      },
    },
  });
  assert.deepEqual(lines(frames, "stdout"), ["/tmp", "hi there"]);
});

Deno.test("exec.run starts programs in a clean environment and refuses unlisted variables", async (t) => {
  Deno.env.set("JW_TEST_SECRET", "agent-only");
  try {
    await using h = jobHarness({
      executor: createDenoExecutor(),
      allowRun: ALLOW,
      allowEnv: ["GREETING"],
    });
    await t.step("the agent's own variables do not leak", async () => {
      const frames = await h.run({
        id: "env1",
        job: {
          key: "exec.run",
          args: { cmd: "/bin/sh", args: ["-c", 'echo "[$JW_TEST_SECRET]"; echo "$PATH"'] },
        },
      });
      const out = lines(frames, "stdout");
      assert.equal(out[0], "[]");
      assert.ok(out[1].length > 0, "PATH is set");
    });
    for (const name of ["BASH_ENV", "PYTHONSTARTUP", "ENV"]) {
      await t.step(`${name} is refused`, async () => {
        const frames = await h.run({
          id: `env-${name}`,
          job: {
            key: "exec.run",
            args: { cmd: "/bin/sh", args: ["-c", "true"], env: { [name]: "/tmp/evil" } },
          },
        });
        assert.equal(done(frames).error?.code, "not_whitelisted");
        assert.match(
          done(frames).error!.message,
          new RegExp(`${name} is not on this agent's allowEnv`),
        );
      });
    }
    await t.step("timeouts beyond what a timer holds are refused", async () => {
      const frames = await h.run({
        id: "env-t",
        job: { key: "exec.run", args: { cmd: "/bin/echo", timeout: "30d" } },
      });
      assert.equal(done(frames).error?.code, "invalid_args");
    });
  } finally {
    Deno.env.delete("JW_TEST_SECRET");
  }
});
