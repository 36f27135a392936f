/**
 * End to end: a real server and two real agents driven through `jw client --json`.
 */
import assert from "node:assert/strict";
import { startAgent, startServer } from "../helpers/mod.ts";

// deno-lint-ignore no-explicit-any
type Msg = Record<string, any>;

/** Running (not zombie) processes whose command line matches `re`, from `ps`. */
async function liveProcesses(re: RegExp): Promise<string[]> {
  const out = await new Deno.Command("ps", { args: ["-eo", "pid=,stat=,args="] }).output();
  return new TextDecoder().decode(out.stdout).split("\n")
    .map((line) => /^\s*(\d+)\s+(\S+)\s+(.*)$/.exec(line))
    .filter((m): m is RegExpExecArray =>
      m !== null && !m[2].startsWith("Z") && re.test(m[3].trim())
    )
    .map((m) => m[0].trim());
}

function done(lines: Msg[], agent: string): Msg {
  const d = lines.filter((l) => l.agent === agent && l.done === true);
  assert.equal(d.length, 1, `exactly one done output from ${agent}: ${JSON.stringify(lines)}`);
  return d[0];
}

Deno.test("jw client run against real agents", async (t) => {
  await using server = await startServer();
  await using _a1 = await startAgent(server, "a1", { tags: { zone: "a" } });
  await using _a2 = await startAgent(server, "a2", { tags: { zone: "b" } });

  await t.step("agents lists both, connected, with tags and server", async () => {
    const r = await server.client("--json", "agents");
    assert.equal(r.code, 0, r.stderr);
    const agents = JSON.parse(r.stdout);
    assert.deepEqual(agents.map((a: Msg) => [a.id, a.connected, a.tags.zone]), [["a1", true, "a"], [
      "a2",
      true,
      "b",
    ]]);
    assert.ok(agents.every((a: Msg) => typeof a.server === "string" && a.lastSeen > 0));
  });

  await t.step("meta round-trips verbatim and a given job id is used", async () => {
    const meta = {
      ticket: 42,
      nested: { list: [1, "two", { three: null }], flag: true },
      "odd key": "é ✓",
    };
    const r = await server.client(
      "--json",
      "run",
      "all",
      "exec.run",
      JSON.stringify({ cmd: "/bin/echo", args: ["hello", "world"] }),
      "--id",
      "job-given-1",
      "--meta-json",
      JSON.stringify(meta),
      "--meta",
      "reply_to=queue.x",
    );
    assert.equal(r.code, 0, r.stderr);
    assert.ok(r.json.length >= 4, r.stdout);
    for (const line of r.json) {
      assert.deepEqual(line.meta, { ...meta, reply_to: "queue.x" });
      assert.deepEqual(line.job, { id: "job-given-1", key: "exec.run" });
      assert.equal(typeof line.id, "string");
    }
    assert.equal(new Set(r.json.map((l) => l.id)).size, 1, "one envelope id for the whole run");
    for (const agent of ["a1", "a2"]) {
      const out = r.json.filter((l) => l.agent === agent && l.text !== undefined);
      assert.deepEqual(out.map((l) => [l.stream, l.text]), [["stdout", "hello world"]]);
    }
  });

  await t.step("without --id the agent makes a job id up", async () => {
    const r = await server.client(
      "--json",
      "run",
      "agent:a1",
      "exec.run",
      '{"cmd":"/bin/echo","args":["x"]}',
    );
    assert.equal(r.code, 0, r.stderr);
    const ids = new Set(r.json.map((l) => l.job.id));
    assert.equal(ids.size, 1);
    const [id] = ids;
    assert.match(id as string, /^[A-Za-z0-9][A-Za-z0-9._:@-]+$/);
    assert.ok(
      r.json.every((l) => l.agent === "a1" && !("meta" in l)),
      "no meta given → no meta field",
    );
  });

  await t.step(
    "output streams in seq order with stdout and stderr, done last with its fields",
    async () => {
      const script = "for i in 1 2 3 4 5; do echo out$i; echo err$i >&2; done; exit 0";
      const r = await server.client(
        "--json",
        "run",
        "agent:a2",
        "exec.run",
        JSON.stringify({ cmd: "/bin/sh", args: ["-c", script] }),
      );
      assert.equal(r.code, 0, r.stderr);
      const seqs = r.json.map((l) => l.seq);
      assert.deepEqual(seqs, seqs.map((_, i) => i), "seq counts 0,1,2,… in arrival order");
      const stdout = r.json.filter((l) => l.stream === "stdout").map((l) => l.text);
      const stderr = r.json.filter((l) => l.stream === "stderr").map((l) => l.text);
      assert.deepEqual(stdout, ["out1", "out2", "out3", "out4", "out5"]);
      assert.deepEqual(stderr, ["err1", "err2", "err3", "err4", "err5"]);
      const last = r.json[r.json.length - 1];
      assert.equal(last, done(r.json, "a2"));
      assert.equal(last.type, "output");
      assert.equal(last.exitCode, 0);
      assert.equal(last.error, null);
      assert.ok(last.start <= last.finish, "start ≤ finish");
      assert.equal(last.durationMs, last.finish - last.start);
      assert.ok(typeof last.ts === "number");
    },
  );

  await t.step("a non-zero exit code is reported and makes the client exit 1", async () => {
    const r = await server.client(
      "--json",
      "run",
      "agent:a1",
      "exec.run",
      '{"cmd":"/bin/sh","args":["-c","echo bye; exit 3"]}',
    );
    assert.equal(r.code, 1);
    const d = done(r.json, "a1");
    assert.equal(d.exitCode, 3);
    assert.equal(d.error, null);
  });

  await t.step("timeout kills the process tree", async () => {
    const t0 = Date.now();
    const r = await server.client(
      "--json",
      "run",
      "agent:a1",
      "exec.run",
      JSON.stringify({
        cmd: "/bin/sh",
        args: ["-c", "/bin/sleep 30 & /bin/sleep 31; echo never"],
        timeout: "500ms",
      }),
    );
    assert.equal(r.code, 1);
    const d = done(r.json, "a1");
    assert.equal(d.error?.code, "timeout");
    assert.ok(Date.now() - t0 < 20_000, "did not wait for sleep 30");
    assert.ok(!r.json.some((l) => l.text === "never"));
    assert.deepEqual(await liveProcesses(/^\/bin\/sleep\s3[01]$/), [], "no sleep survives");
  });

  await t.step("a program off the whitelist is denied with a clear error", async () => {
    for (const cmd of ["/bin/rm", "echo", "/bin/../bin/rm"]) {
      const r = await server.client(
        "--json",
        "run",
        "agent:a2",
        "exec.run",
        JSON.stringify({ cmd, args: ["-rf", "/tmp/nothing"] }),
      );
      assert.equal(r.code, 1, cmd);
      const d = done(r.json, "a2");
      assert.equal(d.error?.code, "not_whitelisted", cmd);
      assert.ok(d.error.message.length > 10, d.error.message);
    }
    const audit = await server.api.audit({ limit: 1000 });
    assert.ok(audit.some((e) => e.action === "command.sent" && e.key === "exec.run"));
  });

  await t.step("setTag from an agent retargets tag commands", async () => {
    const set = await server.client(
      "--json",
      "run",
      "agent:a1",
      "tags.set",
      '{"tags":{"role":"web","zone":null}}',
    );
    assert.equal(set.code, 0, set.stderr);
    const setTag = set.json.find((l) => l.type === "setTag");
    assert.equal(setTag?.tags.role, "web");
    assert.equal(setTag?.job.key, "tags.set");
    assert.equal(typeof setTag?.run, "string", "setTag carries the run id like every reply");
    const a1 = await server.waitForAgent("a1", (a) => a.tags.role === "web");
    assert.equal(a1.tags.zone, undefined, "null deletes a tag");
    const r = await server.client(
      "--json",
      "run",
      "tag:role=web",
      "exec.run",
      '{"cmd":"/bin/echo","args":["web"]}',
    );
    assert.equal(r.code, 0, r.stderr);
    assert.deepEqual([...new Set(r.json.map((l) => l.agent))], ["a1"]);
  });

  await t.step("human output names each agent and the summary", async () => {
    const r = await server.client("run", "all", "exec.run", '{"cmd":"/bin/echo","args":["hi"]}');
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /\[a1\] stdout +hi/);
    assert.match(r.stdout, /\[a2\] done/);
    assert.match(r.stdout, /2 agents: 2 ok, 0 failed/);
  });

  await t.step("a target that matches nothing exits 1; an offline agent exits 1", async () => {
    const none = await server.client("run", "tag:role=nothing", "exec.run", '{"cmd":"/bin/echo"}');
    assert.equal(none.code, 1);
    assert.match(none.stderr, /no agent matched/);
    const offline = await server.client("run", "agent:ghost", "exec.run", '{"cmd":"/bin/echo"}');
    assert.equal(offline.code, 1);
    assert.match(offline.stdout + offline.stderr, /not_connected/);
  });
});

Deno.test("jw client usage and auth errors", async (t) => {
  await using server = await startServer();
  const cases: [string, string[], number, RegExp][] = [
    ["bad target", ["run", "agents:x", "exec.run"], 2, /bad target/],
    ["bad key", ["run", "all", "nodots"], 2, /category\.name/],
    ["args not JSON", ["run", "all", "exec.run", "{nope"], 2, /not valid JSON/],
    ["args an array", ["run", "all", "exec.run", "[1]"], 2, /must be a JSON object/],
    ["unknown flag", ["agents", "--frobnicate"], 2, /frobnicate/],
    ["flag of another command", ["agents", "--timeout", "5s"], 2, /does not apply/],
    ["bad timeout", ["run", "all", "exec.run", "--timeout", "soon"], 2, /duration/],
    ["unknown command", ["launch"], 2, /unknown client command/],
  ];
  for (const [name, args, code, pattern] of cases) {
    await t.step(name, async () => {
      const r = await server.client(...args);
      assert.equal(r.code, code, r.stderr);
      assert.match(r.stderr, pattern);
      assert.doesNotMatch(r.stderr, /\n\s+at /, "no stack trace");
    });
  }
  await t.step("wrong password → exit 1 and an audit entry", async () => {
    const { runJw } = await import("../helpers/process.ts");
    const r = await runJw(["client", "--server", server.url, "--user", "admin", "agents"], {
      JW_PASSWORD: "wrong",
    });
    assert.equal(r.code, 1);
    assert.match(r.stderr, /unauthorized/);
    await server.waitForAudit((e) => e.action === "auth.failed");
  });
});
