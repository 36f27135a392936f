/**
 * End to end: the watchers and the file service on a real server and a real agent — a
 * directory watch, a log tail that survives an agent restart without losing or repeating a
 * line, a journal read through journalctl, a signed script filtering a tail, and downloads
 * from the server's `/files/` checked by sha256.
 */
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { importKeyPair, type PrivateJwk } from "../../shared/crypto/keys.ts";
import { signScript } from "../../shared/crypto/script.ts";
import {
  ADMIN,
  eventually,
  type JsonLine,
  runJw,
  scratchDir,
  startAgent,
  startServer,
  startTail,
  type TestAgent,
} from "../helpers/mod.ts";
import { writeJournal } from "../helpers/journal.ts";

const JOURNALCTL = "/usr/bin/journalctl";

/** Text lines of job `job` seen by a tail, in order. */
const textsOf = (replies: JsonLine[], job: string): string[] =>
  replies.filter((r) => r.job?.id === job && typeof r.text === "string").map((r) => r.text);

const sha256 = (bytes: Uint8Array) => createHash("sha256").update(bytes).digest("hex");

/** A GET with the request target sent exactly as given; the whole response as text. */
async function rawGet(base: string, target: string, authorization: string): Promise<string> {
  const { hostname, port } = new URL(base);
  const conn = await Deno.connect({ hostname, port: Number(port) });
  try {
    const request = `GET ${target} HTTP/1.1\r\nHost: ${hostname}\r\n` +
      `Authorization: ${authorization}\r\nConnection: close\r\n\r\n`;
    await conn.write(new TextEncoder().encode(request));
    return await new Response(conn.readable).text();
  } catch (err) {
    conn.close();
    throw err;
  }
}

Deno.test("watchers and files on a real agent", async (t) => {
  const dir = await scratchDir("watchers-");
  const watched = `${dir}/watched`;
  const logs = `${dir}/logs`;
  const downloads = `${dir}/downloads`;
  const served = `${dir}/served`;
  for (const d of [watched, logs, downloads, `${served}/pkg`]) {
    await Deno.mkdir(d, { recursive: true });
  }
  const logFile = `${logs}/app.log`;
  await Deno.writeTextFile(logFile, "");

  await using server = await startServer({ config: { files: { root: served } } });
  const keygen = await runJw(["sign", "keygen", "--out", `${dir}/ops.key`]);
  assert.equal(keygen.code, 0, keygen.stderr);
  const flags = [
    "--allow-read",
    watched,
    "--allow-read",
    logs,
    "--allow-write",
    downloads,
    "--allow-run",
    JOURNALCTL,
    "--trust-signer",
    `${dir}/ops.key.pub`,
  ];
  const dataDir = `${dir}/agent-data`;
  let agent: TestAgent = await startAgent(server, "w1", { flags, dataDir });
  await using tail = await startTail(server, "w1");
  try {
    await t.step("fs.watch installed as a job reports a new file", async () => {
      const r = await server.client(
        "jobs",
        "install",
        "agent:w1",
        "fs.watch",
        JSON.stringify({ path: watched }),
        "--id",
        "watch",
        "--on",
        "start",
        "--now",
      );
      assert.equal(r.code, 0, r.stdout + r.stderr);
      await tail.waitFor((x) => x.job?.id === "watch" && /^watching /.test(x.message ?? ""));
      await Deno.writeTextFile(`${watched}/new.conf`, "x=1\n");
      const [change] = await tail.waitFor((x) => x.job?.id === "watch" && x.data?.event);
      assert.deepEqual(change.data, {
        event: "create",
        path: `${await Deno.realPath(watched)}/new.conf`,
        isDir: false,
      });
    });

    await t.step("file.tail keeps every line exactly once across an agent restart", async () => {
      const r = await server.client(
        "jobs",
        "install",
        "agent:w1",
        "file.tail",
        JSON.stringify({ path: logFile, poll: "50ms" }),
        "--id",
        "applog",
        "--on",
        "start",
        "--now",
      );
      assert.equal(r.code, 0, r.stdout + r.stderr);
      await tail.waitFor((x) => x.job?.id === "applog" && /^following /.test(x.message ?? ""));
      await Deno.writeTextFile(logFile, "one\ntwo\n", { append: true });
      await eventually(
        "one, two",
        () => Promise.resolve(textsOf(tail.replies, "applog").length === 2 || undefined),
      );

      await agent.process.stop("SIGTERM");
      await Deno.writeTextFile(logFile, "three (while the agent was down)\n", { append: true });
      agent = await startAgent(server, "w1", { flags, dataDir });
      await Deno.writeTextFile(logFile, "four\n", { append: true });
      const want = ["one", "two", "three (while the agent was down)", "four"];
      await eventually(
        "four lines",
        () => Promise.resolve(textsOf(tail.replies, "applog").length >= 4 || undefined),
      );
      // Give a repeated line the chance to show up before checking there is none.
      await Deno.writeTextFile(logFile, "five\n", { append: true });
      await eventually(
        "five lines",
        () => Promise.resolve(textsOf(tail.replies, "applog").length >= 5 || undefined),
      );
      assert.deepEqual(textsOf(tail.replies, "applog"), [...want, "five"]);
    });

    await t.step("journal.watch decodes entries of a real journal file", async () => {
      const journal = `${logs}/app.journal`;
      await writeJournal(journal, [
        {
          __REALTIME_TIMESTAMP: "1700000000000000",
          __MONOTONIC_TIMESTAMP: "1000000",
          _BOOT_ID: "0123456789abcdef0123456789abcdef",
          _SYSTEMD_UNIT: "app.service",
          PRIORITY: "3",
          // A message journald keeps as bytes: a newline and an invalid UTF-8 byte.
          MESSAGE: Uint8Array.of(...new TextEncoder().encode("disk full\nretrying "), 0xff),
        },
        {
          __REALTIME_TIMESTAMP: "1700000001000000",
          __MONOTONIC_TIMESTAMP: "2000000",
          _BOOT_ID: "0123456789abcdef0123456789abcdef",
          _SYSTEMD_UNIT: "other.service",
          PRIORITY: "6",
          MESSAGE: "not this unit",
        },
      ]);
      const r = await server.client(
        "--json",
        "run",
        "agent:w1",
        "journal.watch",
        JSON.stringify({ file: journal, unit: "app.service", follow: false }),
      );
      assert.equal(r.code, 0, r.stdout + r.stderr);
      const entries = r.json.filter((x) => x.data?.cursor);
      assert.equal(entries.length, 1, r.stdout);
      const e = entries[0].data;
      assert.equal(e.message, "disk full\nretrying \ufffd");
      assert.deepEqual([e.priority, e.level, e.unit], [3, "err", "app.service"]);
      assert.equal(e.ts, new Date(1_700_000_000_000).toISOString());
    });

    await t.step("a signed script filters a tail: only ERROR lines are sent", async () => {
      const key = await importKeyPair(
        JSON.parse(await Deno.readTextFile(`${dir}/ops.key`)) as PrivateJwk,
      );
      const source = [
        "/*---",
        "name: errors-only",
        "version: 1",
        `permissions: ${JSON.stringify({ read: [logs] })}`,
        "---*/",
        `await file.tail({ path: ${JSON.stringify(logFile)}, poll: "50ms", for: "3s" },`,
        "  (e) => /ERROR/.test(e.text) ? { error: e.text } : null);",
        "",
      ].join("\n");
      const registered = await server.client(
        "run",
        "agent:w1",
        "script.register",
        JSON.stringify({ script: await signScript(source, key) }),
      );
      assert.equal(registered.code, 0, registered.stdout + registered.stderr);
      const running = server.client(
        "--json",
        "run",
        "agent:w1",
        "script.run",
        JSON.stringify({ name: "errors-only" }),
        "--id",
        "filter",
      );
      await eventually("the script's tail is following", () =>
        Promise.resolve(
          tail.replies.some((x) => x.job?.id === "filter" && /^following /.test(x.message ?? "")) ||
            undefined,
        ));
      await Deno.writeTextFile(logFile, "INFO fine\nERROR broken\nINFO fine again\n", {
        append: true,
      });
      const r = await running;
      assert.equal(r.code, 0, r.stdout + r.stderr);
      const sent = r.json.filter((x) => x.data && !x.done).map((x) => x.data);
      assert.deepEqual(sent, [{ error: "ERROR broken" }]);
      assert.ok(!r.json.some((x) => x.text === "INFO fine"), "unmatched lines are not sent");
    });

    await t.step("file.fetch downloads from the server's /files/ and checks sha256", async () => {
      const content = new TextEncoder().encode("release 1.2.3\n".repeat(1000));
      await Deno.writeFile(`${served}/pkg/app.txt`, content);
      const dest = `${downloads}/app.txt`;
      const ok = await server.client(
        "--json",
        "run",
        "agent:w1",
        "file.fetch",
        JSON.stringify({ path: "pkg/app.txt", dest, sha256: sha256(content), mode: "0640" }),
      );
      assert.equal(ok.code, 0, ok.stdout + ok.stderr);
      const done = ok.json.find((x) => x.done);
      assert.equal(done?.data.bytes, content.length);
      assert.deepEqual(await Deno.readFile(dest), content);
      assert.equal((await Deno.stat(dest)).mode! & 0o777, 0o640);

      const wrong = await server.client(
        "--json",
        "run",
        "agent:w1",
        "file.fetch",
        JSON.stringify({
          path: "pkg/app.txt",
          dest: `${downloads}/bad.txt`,
          sha256: "0".repeat(64),
        }),
      );
      assert.equal(wrong.code, 1);
      assert.equal(wrong.json.find((x) => x.done)?.error.code, "checksum_mismatch");
      assert.deepEqual([...Deno.readDirSync(downloads)].map((e) => e.name), ["app.txt"]);

      // The service wants credentials: an agent's token or an operator's password.
      const anonymous = await fetch(`${server.url}/files/pkg/app.txt`);
      await anonymous.body?.cancel();
      assert.equal(anonymous.status, 401);
      const operator = await fetch(`${server.url}/files/pkg/app.txt`, {
        headers: { authorization: `Basic ${btoa(`${ADMIN.user}:${ADMIN.password}`)}` },
      });
      assert.equal(operator.status, 200);
      assert.equal((await operator.text()).length, content.length);
      const forged = await fetch(`${server.url}/files/pkg/app.txt`, {
        headers: { authorization: "Bearer not.a.token" },
      });
      await forged.body?.cancel();
      assert.equal(forged.status, 401);
      // A path the client did not normalise (fetch() would resolve %2e%2e itself).
      const sneaky = await rawGet(
        server.url,
        "/files/pkg/%2e%2e/%2e%2e/config.yaml",
        `Basic ${btoa(`${ADMIN.user}:${ADMIN.password}`)}`,
      );
      assert.match(sneaky, /^HTTP\/1\.1 400 /);
      assert.match(sneaky, /dot segment/);
    });
  } finally {
    await agent.process.stop("SIGTERM");
  }
});
