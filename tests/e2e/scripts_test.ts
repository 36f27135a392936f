/**
 * End to end: signed scripts from `jw sign keygen` to structured output, on a real server and two
 * real agents, and every refusal an operator can run into — each with its error, an audit entry
 * on the agent, and the agent still answering afterwards.
 */
import assert from "node:assert/strict";
import { importKeyPair, type PrivateJwk } from "../../shared/crypto/keys.ts";
import { generateKeyPair } from "../../shared/crypto/keys.ts";
import { signScript } from "../../shared/crypto/script.ts";
import type { RunEvent } from "../../shared/protocol/mod.ts";
import {
  ADMIN,
  agentAudit,
  runJw,
  scratchDir,
  startAgent,
  startServer,
  type TestServer,
} from "../helpers/mod.ts";

// deno-lint-ignore no-explicit-any
type Msg = Record<string, any>;

function script(name: string, body: string, header: Record<string, unknown> = {}): string {
  const lines = ["/*---", `name: ${name}`, "version: 1"];
  for (const [k, v] of Object.entries(header)) lines.push(`${k}: ${JSON.stringify(v)}`);
  return [...lines, "---*/", body, ""].join("\n");
}

/** Runs a command on `target` through the API and returns every event. */
async function run(
  server: TestServer,
  target: string,
  key: string,
  args: Record<string, unknown>,
) {
  const events: Msg[] = [];
  for await (const e of server.api.run({ target, job: { key, args }, timeoutMs: 20_000 })) {
    events.push(e as RunEvent as Msg);
  }
  return events;
}

function doneOf(events: Msg[], agent: string): Msg {
  const d = events.filter((e) => e.agent === agent && e.done === true);
  assert.equal(d.length, 1, `one done output from ${agent}: ${JSON.stringify(events)}`);
  return d[0];
}

Deno.test("signed scripts: keygen, sign, upload, register on two agents, run", async (t) => {
  const dir = await scratchDir("scripts-");
  const keyFile = `${dir}/ops.key`;
  const keygen = await runJw(["sign", "keygen", "--out", keyFile]);
  assert.equal(keygen.code, 0, keygen.stderr);
  const key = await importKeyPair(JSON.parse(await Deno.readTextFile(keyFile)) as PrivateJwk);
  assert.match(keygen.stdout + keygen.stderr, new RegExp(key.kid));

  const dataFile = `${dir}/inventory.txt`;
  await Deno.writeTextFile(dataFile, "rack-7 row-2\n");

  await using server = await startServer();
  const agentFlags = ["--trust-signer", `${keyFile}.pub`, "--allow-read", dir];
  await using a1 = await startAgent(server, "a1", { flags: agentFlags });
  await using a2 = await startAgent(server, "a2", { flags: agentFlags });

  const file = `${dir}/report.js`;
  await Deno.writeTextFile(
    file,
    script(
      "report",
      [
        `const rack = (await Deno.readTextFile(${JSON.stringify(dataFile)})).split(" ")[0];`,
        'const echoed = await exec.run({ cmd: "/bin/echo", args: ["from", "script"] });',
        'log.info("measured", { rack });',
        'console.log("plain text");',
        "emit({ rack, echoed: echoed.stdout, code: echoed.exitCode, args, job: job.key });",
      ].join("\n"),
      {
        description: "a file and an echo",
        permissions: { run: ["/bin/echo"], read: [dataFile] },
        timeout: "10s",
      },
    ),
  );

  await t.step("jw sign --upload signs the file in place and stores it on the server", async () => {
    const r = await runJw(
      ["sign", file, "--key", keyFile, "--upload", "--server", server.url, "--user", ADMIN.user],
      { JW_PASSWORD: ADMIN.password },
    );
    assert.equal(r.code, 0, r.stderr);
    assert.match(await Deno.readTextFile(file), new RegExp(`signer: "${key.kid}"`));
    const verify = await runJw(["sign", "verify", file, "--pub", `${keyFile}.pub`]);
    assert.equal(verify.code, 0, verify.stderr);
    const listed = await server.api.scripts();
    assert.deepEqual(listed.map((s) => [s.name, s.version, s.signer]), [["report", 1, key.kid]]);
    assert.ok(
      (await server.waitForAudit((e) => e.action === "script.upload")).outcome === "ok",
    );
  });

  await t.step("jw client scripts push registers it on both agents", async () => {
    const r = await server.client("--json", "scripts", "push", "report", "all");
    assert.equal(r.code, 0, r.stderr + r.stdout);
    for (const agent of ["a1", "a2"]) {
      const done = r.json.find((l) => l.agent === agent && l.done === true);
      assert.equal(done?.error, null, JSON.stringify(r.json));
      assert.equal(done?.data?.name, "report");
    }
    for (const a of [a1, a2]) {
      assert.ok(
        agentAudit(a.dataDir).some((e) => e.action === "script.register" && e.outcome === "ok"),
      );
    }
  });

  await t.step("script.run: structured output with the command's meta on every reply", async () => {
    const r = await server.client(
      "--json",
      "run",
      "all",
      "script.run",
      JSON.stringify({ name: "report", args: { limit: 80 } }),
      "--meta",
      "ticket=OPS-7",
    );
    assert.equal(r.code, 0, r.stderr + r.stdout);
    for (const agent of ["a1", "a2"]) {
      const mine = r.json.filter((l) => l.agent === agent);
      assert.ok(mine.length >= 4, JSON.stringify(mine));
      assert.ok(mine.every((l) => l.meta?.ticket === "OPS-7"), JSON.stringify(mine));
      const data = mine.find((l) => l.data && !l.done)?.data;
      assert.equal(data?.rack, "rack-7");
      assert.equal(data?.echoed, "from script");
      assert.equal(data?.code, 0);
      assert.deepEqual(data?.args, { limit: 80 });
      assert.equal(data?.job, "script.run");
      assert.ok(mine.some((l) => l.text === "plain text" && l.stream === "stdout"));
      assert.ok(mine.some((l) => l.type === "log" && l.message === "measured"));
      assert.equal(mine.find((l) => l.done)?.error, null);
    }
  });

  await t.step("scripts delete removes it from the server and from both agents", async () => {
    const r = await server.client("--json", "scripts", "delete", "report");
    assert.equal(r.code, 0, r.stderr + r.stdout);
    assert.deepEqual(await server.api.scripts(), []);
    const after = await run(server, "all", "script.run", { name: "report" });
    for (const agent of ["a1", "a2"]) {
      assert.equal(doneOf(after, agent).error?.code, "not_found");
    }
  });
});

Deno.test("signed scripts: every refusal is clear, audited, and leaves the agent healthy", async (t) => {
  const dir = await scratchDir("scripts-refused-");
  const keyFile = `${dir}/ops.key`;
  assert.equal((await runJw(["sign", "keygen", "--out", keyFile])).code, 0);
  const key = await importKeyPair(JSON.parse(await Deno.readTextFile(keyFile)) as PrivateJwk);
  const stranger = await generateKeyPair();

  await using server = await startServer();
  await using a1 = await startAgent(server, "a1", {
    flags: ["--trust-signer", `${keyFile}.pub`, "--allow-read", "/proc/loadavg"],
    config: { scripts: { memory: "48MiB" } },
  });

  let checks = 0;
  /** The agent still runs a plain command. */
  const healthy = async () => {
    const events = await run(server, "agent:a1", "exec.run", { cmd: "/bin/echo", args: ["ok"] });
    assert.equal(doneOf(events, "a1").exitCode, 0);
    checks++;
  };
  /** Registers `text` directly (no server-side checks) and returns the done output. */
  const register = async (text: string) =>
    doneOf(await run(server, "agent:a1", "script.register", { script: text }), "a1");
  const newAudit = (since: number) => agentAudit(a1.dataDir).filter((e) => e.seq > since);
  const lastSeq = () => agentAudit(a1.dataDir)[0]?.seq ?? 0;

  const good = await signScript(
    script("good", "emit({ ok: true });", { permissions: { read: ["/proc/loadavg"] } }),
    key,
  );

  const registerRefusals: [string, string, string, RegExp][] = [
    ["unsigned", script("good", "emit({ ok: true });"), "untrusted", /not signed/],
    [
      "signed by an untrusted key",
      await signScript(script("good", "emit({ ok: true });"), stranger),
      "untrusted",
      /not a trusted signer/,
    ],
    ["one byte of body changed", good.replace("ok: true", "ok: fals"), "bad_signature", /changed/],
    [
      "permission widened after signing",
      good.replace('["/proc/loadavg"]', '["/proc"]'),
      "bad_signature",
      /does not verify/,
    ],
    [
      "version bumped after signing",
      good.replace("version: 1", "version: 2"),
      "bad_signature",
      /does not verify/,
    ],
    [
      "a program not on the whitelist",
      await signScript(
        script("shell", "emit({});", { permissions: { run: ["/usr/bin/id"] } }),
        key,
      ),
      "forbidden",
      /asks for run \/usr\/bin\/id/,
    ],
  ];
  for (const [label, text, code, message] of registerRefusals) {
    await t.step(`register refused: ${label}`, async () => {
      const since = lastSeq();
      const done = await register(text);
      assert.equal(done.error?.code, code, JSON.stringify(done));
      assert.match(done.error.message, message);
      const audited = newAudit(since).filter((e) => e.outcome === "denied");
      assert.ok(
        audited.some((e) => e.action === "script.verify" || e.action === "script.register"),
        JSON.stringify(newAudit(since)),
      );
      await healthy();
    });
  }

  const runRefusals: [string, string, Record<string, unknown>, string, RegExp][] = [
    [
      "reads /etc/shadow",
      'await Deno.readTextFile("/etc/shadow");',
      {},
      "script_failed",
      /read access/,
    ],
    [
      "starts /bin/sh with Deno.Command",
      'await new Deno.Command("/bin/sh", { args: ["-c", "id"] }).output();',
      {},
      "script_failed",
      /run access/,
    ],
    [
      "fetches a host it did not declare",
      `await fetch(${JSON.stringify(`${server.url}/healthz`)});`,
      {},
      "script_failed",
      /net access/,
    ],
    [
      "imports code from the network",
      'await import("https://example.com/x.js");',
      {},
      "script_failed",
      /import|net/i,
    ],
    ["loops forever", "while (true) {}", { timeout: "2s" }, "timeout", /2s/],
    [
      "allocates 100 MB",
      'const big = "x".repeat(100 * 1024 * 1024).toUpperCase(); emit({ n: big.length });',
      {},
      "resource_limit",
      /memory/,
    ],
  ];
  let n = 0;
  for (const [label, body, header, code, message] of runRefusals) {
    await t.step(`run refused: script that ${label}`, async () => {
      const name = `bad${++n}`;
      const signed = await signScript(script(name, body, header), key);
      assert.equal((await register(signed)).error, null);
      const since = lastSeq();
      const done = doneOf(await run(server, "agent:a1", "script.run", { name }), "a1");
      assert.equal(done.error?.code, code, JSON.stringify(done));
      assert.match(done.error.message, message);
      const audited = newAudit(since).filter((e) => e.action === "script.run");
      assert.ok(audited.some((e) => e.outcome === "error"), JSON.stringify(audited));
      await healthy();
    });
  }
  assert.equal(checks, registerRefusals.length + runRefusals.length);

  await t.step("after all that, a good script still registers and runs", async () => {
    assert.equal((await register(good)).error, null);
    const events = await run(server, "agent:a1", "script.run", { name: "good" });
    assert.equal(doneOf(events, "a1").error, null);
    assert.deepEqual(events.find((e) => e.data && !e.done)?.data, { ok: true });
  });
});
