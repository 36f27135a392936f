/**
 * End to end: jobs installed through `jw client jobs`, kept by real agents, run on their
 * triggers, and reported with their metadata — across agent restarts and outages.
 */
import assert from "node:assert/strict";
import {
  agentAudit,
  CuttableProxy,
  eventually,
  freeTcpPort,
  type JsonLine,
  scratchDir,
  startAgent,
  startServer,
  startTail,
  type TestServer,
  waitForAgentAudit,
} from "../helpers/mod.ts";

const ECHO = (word: string) => JSON.stringify({ cmd: "/bin/echo", args: [word] });
/** `jw client jobs install TARGET exec.run` of `/bin/echo WORD` as job `id`, plus `flags`. */
function installEcho(
  server: TestServer,
  target: string,
  word: string,
  id: string,
  ...flags: string[]
) {
  return server.client("jobs", "install", target, "exec.run", ECHO(word), "--id", id, ...flags);
}

/** The final reply of a run of `job` (the install answer has no `run` and is not a run). */
const isDone = (job: string) => (r: JsonLine) =>
  r.job?.id === job && r.done === true && r.run !== undefined;

Deno.test("jw client jobs install, list, runs and delete against a real agent", async (t) => {
  await using server = await startServer();
  await using a1 = await startAgent(server, "j1");
  await using tail = await startTail(server, "j1");

  let envelope = "";
  await t.step("install an interval job with meta; its runs carry that meta", async () => {
    const r = await server.client(
      "--json",
      "jobs",
      "install",
      "agent:j1",
      "exec.run",
      ECHO("tick"),
      "--id",
      "tick",
      "--every",
      "1s",
      "--meta",
      "ticket=7",
    );
    assert.equal(r.code, 0, r.stdout + r.stderr);
    const installed = r.json.find((l) => l.data?.installed);
    assert.ok(installed, r.stdout);
    assert.equal(installed.data.installed.id, "tick");
    assert.equal(installed.error, null);
    envelope = installed.id;
    const runs = await tail.waitFor(isDone("tick"), 2);
    for (const run of runs) {
      assert.deepEqual(run.meta, { ticket: "7" });
      assert.equal(run.id, envelope, "scheduled runs reply to the install envelope");
      assert.equal(run.exitCode, 0);
    }
    assert.equal(new Set(runs.map((r) => r.run)).size, runs.length, "each run has its own id");
    const lines = tail.replies.filter((r) => r.job?.id === "tick" && r.text === "tick");
    assert.ok(lines.length >= 2);
  });

  await t.step("jobs list shows the job, its trigger and last result", async () => {
    const r = await server.client("--json", "jobs", "list", "--agent", "j1");
    assert.equal(r.code, 0, r.stderr);
    const jobs = JSON.parse(r.stdout);
    const tick = jobs.find((j: JsonLine) => j.id === "tick");
    assert.ok(tick, r.stdout);
    assert.equal(tick.agent, "j1");
    assert.equal(tick.key, "exec.run");
    assert.deepEqual(tick.trigger, { trigger: "interval", every: "1s" });
    assert.equal(tick.persistent, true);
    assert.ok(tick.last && tick.last.error === null);
    const human = await server.client("jobs", "list");
    assert.match(human.stdout, /j1\s+tick\s+exec\.run\s+every 1s/);
  });

  await t.step("jobs runs lists runs newest first", async () => {
    const r = await server.client("--json", "jobs", "runs", "agent:j1", "tick", "--limit", "5");
    assert.equal(r.code, 0, r.stderr);
    const runs = JSON.parse(r.stdout);
    assert.ok(runs.length >= 2 && runs.length <= 5, r.stdout);
    assert.ok(runs[0].start >= runs[1].start);
  });

  await t.step("installing the same id replaces the job, audited", async () => {
    const r = await installEcho(server, "agent:j1", "tock", "tick", "--every", "1s");
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /installed job tick/);
    await tail.waitFor((x) => x.job?.id === "tick" && x.text === "tock");
    await waitForAgentAudit(a1.dataDir, (e) => e.action === "job.replaced");
    const list = JSON.parse(
      (await server.client("--json", "jobs", "list", "--agent", "j1")).stdout,
    );
    assert.equal(list.filter((j: JsonLine) => j.id === "tick").length, 1);
  });

  await t.step("jobs delete removes it; runs of a deleted job are not_found", async () => {
    const r = await server.client("jobs", "delete", "agent:j1", "tick");
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /deleted job tick/);
    const runs = await server.client("jobs", "runs", "agent:j1", "tick");
    assert.equal(runs.code, 1);
    assert.match(runs.stderr, /not_found/);
    const list = JSON.parse(
      (await server.client("--json", "jobs", "list", "--agent", "j1")).stdout,
    );
    assert.equal(list.length, 0);
  });
});

Deno.test("bad job input gets a clear error and an audit entry; the agent keeps working", async (t) => {
  await using server = await startServer();
  await using agent = await startAgent(server, "b1");
  await using narrow = await startAgent(server, "b2", { flags: ["--allow-command", "exec.run"] });

  const agentSide: [string, Record<string, unknown>, string][] = [
    ["bad cron expression", { trigger: "cron", cron: "not a cron" }, "invalid_args"],
    ["negative interval", { trigger: "interval", every: "-5s" }, "invalid_args"],
    ["zero interval", { trigger: "interval", every: "0s" }, "invalid_args"],
    [
      "unknown time zone",
      { trigger: "cron", cron: "* * * * *", tz: "Mars/Olympus" },
      "invalid_args",
    ],
  ];
  for (const [name, schedule, code] of agentSide) {
    await t.step(`${name} (sent straight to the API)`, async () => {
      const before = agentAudit(agent.dataDir)[0]?.seq ?? 0;
      let done: JsonLine | undefined;
      for await (
        const e of server.api.run({
          target: "agent:b1",
          job: {
            id: "bad",
            key: "exec.run",
            args: { cmd: "/bin/echo" },
            schedule: schedule as never,
            persistent: true,
          },
        })
      ) {
        if (e.type === "output" && e.done) done = e;
      }
      assert.equal(done?.error?.code, code, JSON.stringify(done));
      await waitForAgentAudit(
        agent.dataDir,
        (e) => e.seq > before && e.action === "command.denied" && (e.reason ?? "").startsWith(code),
      );
    });
  }
  await t.step("client-side checks exit 2 before anything is sent", async () => {
    for (
      const flags of [["--every", "-5s"], ["--every", "0s"], ["--on", "reboot"], [
        "--every",
        "1s",
        "--cron",
        "* * * * *",
      ], []]
    ) {
      const r = await installEcho(server, "agent:b1", "x", "x", ...flags);
      assert.equal(r.code, 2, `${flags}: ${r.stderr}`);
    }
    const noId = await server.client(
      "jobs",
      "install",
      "agent:b1",
      "exec.run",
      ECHO("x"),
      "--every",
      "1s",
    );
    assert.equal(noId.code, 2);
    assert.match(noId.stderr, /--id/);
  });
  await t.step("unknown command key and bad args for a job", async () => {
    const unknown = await server.client(
      "--json",
      "jobs",
      "install",
      "agent:b1",
      "nope.nothing",
      "{}",
      "--id",
      "u",
      "--every",
      "1s",
    );
    assert.equal(unknown.code, 1);
    assert.equal(unknown.json.find((l) => l.done)?.error?.code, "unknown_command");
    const badArgs = await server.client(
      "--json",
      "jobs",
      "install",
      "agent:b1",
      "exec.run",
      '{"cmd":1}',
      "--id",
      "u",
      "--every",
      "1s",
    );
    assert.equal(badArgs.code, 1);
    assert.equal(badArgs.json.find((l) => l.done)?.error?.code, "invalid_args");
  });
  await t.step("a command the agent's ACL forbids", async () => {
    const r = await server.client("--json", "jobs", "list", "--agent", "b2");
    assert.equal(r.code, 1);
    assert.match(r.stderr, /forbidden/);
    const run = await server.client("--json", "run", "agent:b2", "tags.set", '{"tags":{"a":"b"}}');
    assert.equal(run.code, 1);
    assert.equal(run.json.find((l) => l.done)?.error?.code, "forbidden");
    await waitForAgentAudit(
      narrow.dataDir,
      (e) =>
        e.action === "command.denied" && e.key === "tags.set" && /^forbidden:/.test(e.reason ?? ""),
    );
    const ok = await server.client("run", "agent:b2", "exec.run", ECHO("allowed"));
    assert.equal(ok.code, 0, ok.stderr);
  });
  await t.step("the agent still runs commands", async () => {
    const r = await server.client("run", "agent:b1", "exec.run", ECHO("fine"));
    assert.equal(r.code, 0, r.stderr);
    const list = JSON.parse(
      (await server.client("--json", "jobs", "list", "--agent", "b1")).stdout,
    );
    assert.deepEqual(list, [], "no bad job was stored");
  });
});

Deno.test("a persistent job survives kill -9 of its agent", async () => {
  await using server = await startServer();
  await using tail = await startTail(server, "p1");
  const first = await startAgent(server, "p1");
  const install = await installEcho(
    server,
    "agent:p1",
    "beat",
    "beat",
    "--every",
    "1s",
    "--meta",
    "k=v",
  );
  assert.equal(install.code, 0, install.stderr);
  const before = await tail.waitFor(isDone("beat"), 1);
  await first.process.stop("SIGKILL");
  await server.waitForAgent("p1", (a) => !a.connected);
  const seen = new Set(tail.replies.filter(isDone("beat")).map((r) => r.run));

  await using _second = await startAgent(server, "p1", { dataDir: first.dataDir });
  const after = await tail.waitFor((r) => isDone("beat")(r) && !seen.has(r.run), 1);
  assert.deepEqual(after[0].meta, { k: "v" });
  assert.equal(after[0].id, before[0].id, "same envelope id after the restart");
});

Deno.test("on-start/connect/disconnect/stop fire once each; output made while the server is down arrives after, in order, once", async (t) => {
  const port = freeTcpPort();
  const dataDir = await scratchDir("restart-server-");
  let server = await startServer({ http: `127.0.0.1:${port}`, dataDir });
  await using proxy = new CuttableProxy(server.url);
  const tails = [await startTail(server, "o1")];
  const replies = () => tails.flatMap((x) => x.replies);
  const count = (job: string) => replies().filter(isDone(job)).length;
  const waitFor = (pred: (r: JsonLine) => boolean, n: number) =>
    eventually(
      `${n} replies`,
      () => Promise.resolve(replies().filter(pred).length >= n || undefined),
    );
  const agentOptions = {
    serverUrl: proxy.url,
    config: { reconnect: { min: "100ms", max: "500ms" } },
  };
  const agent = await startAgent(server, "o1", agentOptions);
  try {
    for (const on of ["start", "connect", "disconnect", "stop"]) {
      const r = await installEcho(
        server,
        "agent:o1",
        on,
        `on-${on}`,
        "--on",
        on,
        "--meta",
        `event=${on}`,
      );
      assert.equal(r.code, 0, r.stderr);
    }
    const r = await installEcho(server, "agent:o1", "tick", "tick", "--every", "1s");
    assert.equal(r.code, 0, r.stderr);
    await waitFor(isDone("tick"), 1);

    await t.step("installing fires none of the event jobs", () => {
      for (const on of ["start", "connect", "disconnect", "stop"]) {
        assert.equal(count(`on-${on}`), 0, on);
      }
    });

    await t.step(
      "the server restarts: onDisconnect runs offline, and its output and the missed ticks arrive after, in order, once",
      async () => {
        // Cut the agent off, restart the server, and let an operator follow the new one
        // before the agent can reach it again.
        proxy.block();
        const stopped = await server.process.stop("SIGTERM");
        assert.equal(stopped.code, 0);
        const ticksBefore = count("tick");
        // The interval job keeps running while no server is reachable.
        await new Promise((resolve) => setTimeout(resolve, 3_000));
        server = await startServer({ http: `127.0.0.1:${port}`, dataDir });
        tails.push(await startTail(server, "o1"));
        proxy.unblock();
        await server.waitForAgent("o1");
        await waitFor(isDone("on-disconnect"), 1);
        const disconnected = replies().find(isDone("on-disconnect"))!;
        assert.deepEqual(disconnected.meta, { event: "disconnect" });
        await waitFor(isDone("on-connect"), 1);
        await waitFor(isDone("tick"), ticksBefore + 2);
        assertDeliveredOnce(replies(), "tick");
        assert.equal(count("on-disconnect"), 1);
        assert.equal(count("on-connect"), 1);
        await assertEveryRecordedRunDelivered(server, "o1", "tick", replies());
      },
    );

    await t.step(
      "SIGTERM runs onStop before the agent leaves; a restart runs onStart and onConnect",
      async () => {
        const status = await agent.process.stop("SIGTERM");
        assert.equal(status.code, 0);
        await waitFor(isDone("on-stop"), 1);
        assert.equal(replies().find(isDone("on-stop"))?.error, null);
        await using _again = await startAgent(server, "o1", {
          ...agentOptions,
          dataDir: agent.dataDir,
        });
        await waitFor(isDone("on-start"), 1);
        await waitFor(isDone("on-connect"), 2);
        assert.equal(count("on-stop"), 1);
        assert.equal(count("on-start"), 1);
        assert.equal(count("on-disconnect"), 1, "a clean stop is not a disconnect event");
      },
    );
  } finally {
    await agent.process.stop("SIGKILL");
    for (const tail of tails) await tail[Symbol.asyncDispose]();
    await server.process.stop("SIGTERM");
  }
});

Deno.test("a connection that goes silent is noticed, and replies sent into it are delivered again, once", async () => {
  await using server = await startServer({ config: { agents: { heartbeat: "1s" } } });
  await using proxy = new CuttableProxy(server.url);
  await using tail = await startTail(server, "s1");
  await using agent = await startAgent(server, "s1", {
    serverUrl: proxy.url,
    config: { reconnect: { min: "100ms", max: "500ms" } },
  });
  const r = await installEcho(server, "agent:s1", "tick", "tick", "--every", "1s");
  assert.equal(r.code, 0, r.stderr);
  await tail.waitFor(isDone("tick"), 1);
  const before = tail.replies.filter(isDone("tick")).length;
  // Every byte is dropped both ways, but no socket closes: only silence tells.
  proxy.blackhole();
  await agent.process.stderr.waitFor(/server went silent/, 15_000);
  proxy.unblock();
  await tail.waitFor(isDone("tick"), before + 4);
  assertDeliveredOnce(tail.replies, "tick");
  await assertEveryRecordedRunDelivered(server, "s1", "tick", tail.replies);
});

/** Each run of `job` arrived exactly once, in the order the runs started. */
function assertDeliveredOnce(replies: JsonLine[], job: string): void {
  const done = replies.filter(isDone(job));
  assert.equal(new Set(done.map((x) => x.run)).size, done.length, "no run delivered twice");
  const starts = done.map((x) => x.start);
  assert.deepEqual(starts, [...starts].sort((a, b) => a - b), "delivered in the order they ran");
}

/** Every run the agent recorded (after the first one seen) is one the operator saw. */
async function assertEveryRecordedRunDelivered(
  server: TestServer,
  agent: string,
  job: string,
  replies: JsonLine[],
): Promise<void> {
  const result = await server.client(
    "--json",
    "jobs",
    "runs",
    `agent:${agent}`,
    job,
    "--limit",
    "100",
  );
  assert.equal(result.code, 0, result.stderr);
  const recorded: JsonLine[] = JSON.parse(result.stdout);
  const done = replies.filter(isDone(job));
  const delivered = new Set(done.map((x) => x.run));
  const firstSeen = Math.min(...done.map((x) => x.start));
  const settled = recorded.filter((x) => x.start >= firstSeen && x.finish < Date.now() - 1500);
  assert.ok(settled.length >= 3, `enough runs to compare: ${settled.length}`);
  for (const run of settled) {
    assert.ok(delivered.has(run.run), `run ${run.run} was recorded but never delivered`);
  }
}
