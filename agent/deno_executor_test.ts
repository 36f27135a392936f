import assert from "node:assert/strict";
import { isJwError } from "../shared/errors.ts";
import { createDenoExecutor } from "./deno_executor.ts";
import type { Process } from "./executor.ts";
import { isAlive, liveGroupMembers } from "./_proc.ts";

async function collect(proc: Process) {
  const out: string[] = [];
  const err: string[] = [];
  const pump = async (it: AsyncIterable<string>, into: string[]) => {
    for await (const line of it) into.push(line);
  };
  const [status] = await Promise.all([proc.status, pump(proc.stdout, out), pump(proc.stderr, err)]);
  return { status, out, err };
}

Deno.test("DenoExecutor.spawn() streams stdout and stderr lines, final partial line included", async () => {
  const exec = createDenoExecutor();
  const proc = exec.spawn({
    cmd: "/bin/sh",
    args: ["-c", "echo one; echo two >&2; printf 'three\\nfour'; exit 3"],
  });
  const { status, out, err } = await collect(proc);
  assert.deepEqual(out, ["one", "three", "four"]);
  assert.deepEqual(err, ["two"]);
  assert.deepEqual(status, { code: 3, signal: null });
});

Deno.test("DenoExecutor.spawn() passes args verbatim with no shell, plus cwd and env", async () => {
  const exec = createDenoExecutor();
  const proc = exec.spawn({
    cmd: "/bin/sh",
    args: ["-c", 'pwd; echo "$JW_TEST_VAR"; echo "$1"', "sh", "$(id) ; *"],
    cwd: "/tmp",
    env: { JW_TEST_VAR: "from env" },
  });
  const { out } = await collect(proc);
  assert.deepEqual(out, ["/tmp", "from env", "$(id) ; *"]);
});

Deno.test("DenoExecutor.spawn() throws spawn_failed for a missing program or cwd", () => {
  const exec = createDenoExecutor();
  assert.throws(() => exec.spawn({ cmd: "/nonexistent/jw-test", args: [] }), (err) => {
    assert.ok(isJwError(err, "spawn_failed"));
    assert.match(err.message, /\/nonexistent\/jw-test/);
    return true;
  });
  assert.throws(
    () => exec.spawn({ cmd: "/bin/echo", args: [], cwd: "/nonexistent-dir" }),
    (e) => isJwError(e, "spawn_failed"),
  );
});

Deno.test("DenoExecutor Process.kill() signals the whole process group", async () => {
  const exec = createDenoExecutor();
  const proc = exec.spawn({ cmd: "/bin/sh", args: ["-c", "sleep 30 & echo $!; sleep 30"] });
  const it = proc.stdout[Symbol.asyncIterator]();
  const first = await it.next();
  const child = Number(first.value);
  assert.ok(await isAlive(child), "background sleep runs");
  assert.ok((await liveGroupMembers(proc.pid)).length >= 2, "sh and its children share the group");
  proc.kill("SIGKILL");
  const rest: string[] = [];
  const drainOut = async () => {
    for (let r = await it.next(); !r.done; r = await it.next()) rest.push(r.value);
  };
  const drainErr = async () => {
    for await (const line of proc.stderr) rest.push(line);
  };
  const [status] = await Promise.all([proc.status, drainOut(), drainErr()]);
  assert.deepEqual(rest, []);
  assert.deepEqual(status, { code: null, signal: "SIGKILL" });
  assert.equal(await isAlive(child), false);
  assert.deepEqual(await liveGroupMembers(proc.pid), []);
  proc.kill("SIGKILL"); // no-op once gone
});

Deno.test("DenoExecutor stops reading pipes held open by a leftover child after the drain grace", async () => {
  const exec = createDenoExecutor({ drainGraceMs: 100 });
  const proc = exec.spawn({ cmd: "/bin/sh", args: ["-c", "sleep 30 & echo $!"] });
  const { status, out } = await collect(proc);
  const child = Number(out[0]);
  try {
    assert.deepEqual(status, { code: 0, signal: null });
    assert.ok(await isAlive(child), "the leftover child is left running");
  } finally {
    Deno.kill(child, "SIGKILL");
  }
});
