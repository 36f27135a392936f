/**
 * End to end: the CLI's own behaviour — help, config errors, hash-password, tail.
 */
import assert from "node:assert/strict";
import bcrypt from "bcryptjs";
import { ADMIN, JwProcess, runJw, scratchDir, startAgent, startServer } from "../helpers/mod.ts";

Deno.test("jw prints help and refuses unknown commands with exit code 2", async (t) => {
  await t.step("--help", async () => {
    const r = await runJw(["--help"]);
    assert.equal(r.code, 0);
    assert.match(r.stdout, /Usage: jw <command>/);
  });
  for (const sub of ["server", "agent", "client", "demo"]) {
    await t.step(`${sub} --help`, async () => {
      const r = await runJw([sub, "--help"]);
      assert.equal(r.code, 0, r.stderr);
      assert.match(r.stdout, /Usage: jw /);
    });
  }
  await t.step("unknown command", async () => {
    const r = await runJw(["launch"]);
    assert.equal(r.code, 2);
    assert.match(r.stderr, /unknown command "launch"/);
  });
  await t.step("sign without a key is a usage error", async () => {
    const r = await runJw(["sign", "x.js"]);
    assert.equal(r.code, 2);
    assert.match(r.stderr, /--key/);
  });
});

Deno.test("config errors name the key and exit 2 without a stack trace", async (t) => {
  const dir = await scratchDir("cfg-");
  await Deno.writeTextFile(`${dir}/bad.yaml`, "agents:\n  heartbeat: soon\n");
  await Deno.writeTextFile(`${dir}/unknown.yaml`, "htp: 127.0.0.1:1\n");
  const cases: [string, string[], Record<string, string>, RegExp][] = [
    [
      "bad listen address",
      ["server", "--http", "nowhere", "--data", dir],
      {},
      /config http: expected HOST:PORT/,
    ],
    [
      "bad duration in file",
      ["server", "--config", `${dir}/bad.yaml`, "--data", dir],
      {},
      /agents\.heartbeat: expected a duration/,
    ],
    [
      "unknown key in file",
      ["server", "--config", `${dir}/unknown.yaml`, "--data", dir],
      {},
      /unknown key "htp"/,
    ],
    [
      "missing config file",
      ["server", "--config", `${dir}/none.yaml`],
      {},
      /cannot read config file/,
    ],
    ["bad env value", ["server", "--data", dir], { JW_HTTP: "x:y" }, /config http:/],
    ["agent without id", ["agent", "--server", "http://127.0.0.1:1"], {}, /config id: is required/],
    [
      "agent relative whitelist",
      ["agent", "--id", "a", "--server", "http://127.0.0.1:1", "--allow-run", "sh"],
      {},
      /allowRun\.0: whitelisted programs must be absolute/,
    ],
    [
      "agent bad server URL",
      ["agent", "--id", "a", "--server", "ftp://x"],
      {},
      /config server: expected an http/,
    ],
    ["unknown flag", ["server", "--port", "1"], {}, /port/],
  ];
  for (const [name, args, env, pattern] of cases) {
    await t.step(name, async () => {
      const r = await runJw(args, env);
      assert.equal(r.code, 2, r.stderr);
      assert.match(r.stderr, pattern);
      assert.doesNotMatch(r.stderr, /\n\s+at /, "no stack trace");
    });
  }
});

Deno.test("jw server hash-password prints a bcrypt hash of stdin", async () => {
  const r = await runJw(["server", "hash-password", "--cost", "4"], {}, "s3cret\n");
  assert.equal(r.code, 0, r.stderr);
  const hash = r.stdout.trim();
  assert.match(hash, /^\$2[aby]\$04\$/);
  assert.ok(bcrypt.compareSync("s3cret", hash));
  const empty = await runJw(["server", "hash-password"], {}, "");
  assert.equal(empty.code, 2);
  assert.match(empty.stderr, /no password on stdin/);
});

Deno.test("jw client tail follows live replies, filtered by agent", async () => {
  await using server = await startServer();
  await using _t1 = await startAgent(server, "t1");
  await using _t2 = await startAgent(server, "t2");
  await using tail = new JwProcess(
    ["client", "--server", server.url, "--user", ADMIN.user, "--json", "tail", "--agent", "t1"],
    { JW_PASSWORD: ADMIN.password },
  );
  await tail.stderr.waitFor(/following live output from agent t1/);
  const r = await server.client(
    "run",
    "all",
    "exec.run",
    '{"cmd":"/bin/echo","args":["tailed"]}',
    "--meta",
    "k=v",
  );
  assert.equal(r.code, 0, r.stderr);
  await tail.stdout.waitFor(/"done":true/);
  const lines = tail.stdout.lines.map((l) => JSON.parse(l));
  assert.ok(lines.length >= 2);
  assert.ok(lines.every((l) => l.agent === "t1" && l.meta?.k === "v"), JSON.stringify(lines));
  assert.ok(lines.some((l) => l.text === "tailed"));
  const status = await tail.stop("SIGINT");
  assert.equal(status.code, 0, "Ctrl-C ends tail cleanly");
});

Deno.test("jw demo runs until Ctrl-C, then stops everything and removes its data", async () => {
  await using demo = new JwProcess(["demo", "--http", "127.0.0.1:0"]);
  await demo.stdout.waitFor(/Running\. Press Ctrl-C to stop\./, 30_000);
  const dir = (await demo.stdout.waitFor(/data in (\S+)\)/))[1];
  const status = await demo.stop("SIGINT");
  assert.equal(status.code, 0, demo.stderr.toString());
  assert.match(demo.stdout.toString(), /demo stopped; temporary data removed/);
  await assert.rejects(Deno.stat(dir), Deno.errors.NotFound);
});

Deno.test("operators with non-ASCII passwords can log in", async () => {
  const password = "pässwörd 密码";
  await using server = await startServer({
    config: {
      auth: {
        users: [
          { name: ADMIN.user, bcrypt: bcrypt.hashSync(ADMIN.password, 4) },
          { name: "zoe", bcrypt: bcrypt.hashSync(password, 4) },
        ],
      },
    },
  });
  const ok = await runJw(["client", "--server", server.url, "--user", "zoe", "agents"], {
    JW_PASSWORD: password,
  });
  assert.equal(ok.code, 0, ok.stderr);
  const bad = await runJw(["client", "--server", server.url, "--user", "zoe", "agents"], {
    JW_PASSWORD: "passwort",
  });
  assert.equal(bad.code, 1);
  assert.match(bad.stderr, /unauthorized/);
});
