/**
 * End to end: `jw demo --once` starts three servers as child processes and five agents that
 * placement spreads over them, runs its sample command on all five, and leaves nothing behind.
 */
import assert from "node:assert/strict";
import { owner } from "../../shared/lrw.ts";
import { isCompiled, jwArgv, planWalkthrough, shellQuote } from "../../cli/demo.ts";
import { runJw } from "../helpers/mod.ts";

/** The command line of a live process, or undefined when there is none with this pid. */
async function commandLine(pid: number): Promise<string | undefined> {
  try {
    return (await Deno.readTextFile(`/proc/${pid}/cmdline`)).replaceAll("\0", " ");
  } catch {
    return undefined;
  }
}

Deno.test("jw demo --once: three servers, five agents on their owners, sample on all, clean exit", async () => {
  const r = await runJw(["demo", "--once", "--http", "127.0.0.1:0"]);
  assert.equal(r.code, 0, r.stdout + r.stderr);

  const servers = [...r.stdout.matchAll(/^(s\d)\s+(http:\/\/127\.0\.0\.1:\d+)\s+(\d+)\s+(\S+)$/gm)]
    .map(([, id, url, pid, config]) => ({ id, url, pid: Number(pid), config }));
  assert.deepEqual(servers.map((s) => s.id), ["s1", "s2", "s3"], r.stdout);
  assert.equal(new Set(servers.map((s) => s.url)).size, 3, "each server has its own URL");
  for (const s of servers) {
    assert.match(
      r.stdout,
      new RegExp(`^  ${s.id}: .* server --config ${s.config.replaceAll(".", "\\.")}$`, "m"),
      `a restart command for ${s.id}`,
    );
  }

  const placed = new Map(
    [...r.stdout.matchAll(/^(demo-\d)\s+(s\d)\s+role=demo,zone=\w+$/gm)].map(([, a, s]) => [a, s]),
  );
  assert.deepEqual([...placed.keys()], ["demo-1", "demo-2", "demo-3", "demo-4", "demo-5"]);
  const healthy = servers.map((s) => ({ id: s.id, health: 0 }));
  for (const [agent, server] of placed) {
    assert.equal(server, owner(agent, healthy)?.id, `${agent} is on its owner`);
  }
  assert.match(r.stdout, new RegExp(`each was given ${servers[0].url} only`));

  for (const agent of placed.keys()) {
    assert.match(r.stdout, new RegExp(`^\\[${agent}\\] done`, "m"));
  }
  assert.match(r.stdout, /^5 agents: 5 ok, 0 failed$/m);
  assert.match(r.stdout, /^Login: admin \/ \S+$/m);
  assert.match(
    r.stdout,
    /^ {2}export JW_SERVER=http:\/\/127\.0\.0\.1:\d+ JW_USER=admin JW_PASSWORD='/m,
  );
  const kill = /^ {2}kill (\d+)$/m.exec(r.stdout);
  assert.ok(
    kill && servers.some((s) => s.pid === Number(kill[1])),
    "the walkthrough kills a server",
  );

  const dir = /data in (\S+)\)/.exec(r.stdout)?.[1];
  assert.ok(dir, "demo prints its data dir");
  await assert.rejects(Deno.stat(dir), Deno.errors.NotFound, "temp data removed on exit");
  for (const s of servers) {
    const cmd = await commandLine(s.pid);
    assert.ok(!cmd?.includes(s.config), `${s.id} (pid ${s.pid}) is still running: ${cmd}`);
  }
});

Deno.test("jw demo runs its servers with the same runtime", async (t) => {
  await t.step("from source: deno run, the jw permissions and main.ts", () => {
    const argv = jwArgv({ execPath: "/opt/deno", mainModule: "file:///src/jw/main.ts" });
    assert.equal(argv[0], "/opt/deno");
    assert.equal(argv[1], "run");
    assert.ok(argv.includes("--allow-net") && argv.includes("--unstable-net"));
    assert.match(argv.at(-1)!, /\/main\.ts$/);
  });
  await t.step("compiled: the binary itself", () => {
    const main = "file:///tmp/deno-compile-jw/main.ts";
    assert.equal(isCompiled(main), true);
    assert.deepEqual(jwArgv({ execPath: "/usr/local/bin/jw", mainModule: main }), [
      "/usr/local/bin/jw",
    ]);
    assert.equal(isCompiled("file:///home/me/jw/main.ts"), false);
  });
  await t.step("printed commands are shell-quoted", () => {
    assert.equal(shellQuote("/tmp/jw-demo-1/s1/server.yaml"), "/tmp/jw-demo-1/s1/server.yaml");
    assert.equal(shellQuote("/tmp/my dir/it's"), `'/tmp/my dir/it'\\''s'`);
  });
});

Deno.test("planWalkthrough stops the server whose agents spread the widest", () => {
  const ids = ["s1", "s2", "s3"];
  const healthy = ids.map((id) => ({ id, health: 0 }));
  const placed = new Map(
    ["demo-1", "demo-2", "demo-3", "demo-4", "demo-5"].map((a) => [a, owner(a, healthy)!.id]),
  );
  const plan = planWalkthrough(ids, placed);
  const theirs = [...placed].filter(([, s]) => s === plan.stop).map(([a]) => a);
  assert.deepEqual(plan.moves.map(([a]) => a), theirs);
  for (const [agent, to] of plan.moves) {
    assert.notEqual(to, plan.stop);
    assert.equal(to, owner(agent, healthy.filter((s) => s.id !== plan.stop))?.id);
  }
  const spread = (stop: string) =>
    new Set(
      [...placed].filter(([, s]) => s === stop).map(([a]) =>
        owner(a, healthy.filter((s) => s.id !== stop))?.id
      ),
    ).size;
  for (const id of ids) assert.ok(spread(plan.stop) >= spread(id), `${plan.stop} vs ${id}`);
});
