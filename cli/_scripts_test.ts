import assert from "node:assert/strict";
import { isJwError } from "../shared/errors.ts";
import type { ScriptDeleted, ScriptInfo } from "../shared/protocol/operator.ts";
import type { ApiClient } from "./_api.ts";
import { parseFlags } from "./_flags.ts";
import {
  formatBytes,
  renderOutcome,
  renderScriptInfo,
  renderScripts,
  summarisePermissions,
} from "./_render.ts";
import { buildPushRequest, scriptsCommand, versionFlag } from "./_scripts.ts";

const OPTIONS = {
  version: { type: "string" },
  id: { type: "string" },
  meta: { type: "string", multiple: true },
  "meta-json": { type: "string" },
  timeout: { type: "string" },
  agent: { type: "string" },
} as const;

const INFO: ScriptInfo = {
  name: "disk-report",
  version: 3,
  description: "disk usage",
  sha256: "sha256:" + "ab".repeat(32),
  signer: "Zq3xTnV5r1bYc0p7kW2mLh9sEaUgDfJoQ4iN8yXvBtM",
  signedAt: "2026-01-02T03:04:05.678Z",
  permissions: { run: ["/bin/df"], read: ["/proc/mounts", "/etc/fstab"], write: [], net: [] },
  size: 1536,
  uploadedBy: "alice",
  uploadedAt: Date.UTC(2026, 0, 3),
};

function usage(fn: () => unknown, pattern: RegExp): void {
  assert.throws(fn, (e) => isJwError(e, "usage") && pattern.test(e.message));
}

/** Runs `fn` with console.log and console.error captured. */
async function captured(fn: () => Promise<number>) {
  const out: string[] = [];
  const err: string[] = [];
  const { log, error } = console;
  console.log = (...a: unknown[]) => out.push(a.join(" "));
  console.error = (...a: unknown[]) => err.push(a.join(" "));
  try {
    const code = await fn();
    return { code, out, err };
  } finally {
    console.log = log;
    console.error = error;
  }
}

/** An ApiClient stand-in answering only the calls a test makes. */
function fakeApi(calls: Partial<ApiClient>): ApiClient {
  return calls as ApiClient;
}

function command(api: ApiClient, ...argv: string[]) {
  const p = parseFlags(argv, OPTIONS);
  return scriptsCommand(api, p, p.positionals, false);
}

Deno.test("versionFlag() accepts positive whole numbers only", () => {
  assert.equal(versionFlag(parseFlags([], OPTIONS)), undefined);
  assert.equal(versionFlag(parseFlags(["--version", "12"], OPTIONS)), 12);
  for (const bad of ["0", "-1", "1.5", "x", "99999999999"]) {
    usage(() => versionFlag(parseFlags([`--version=${bad}`], OPTIONS)), /positive whole number/);
  }
});

Deno.test("buildPushRequest() is a script.register run by name", () => {
  const p = parseFlags(
    ["disk-report", "tag:role=web", "--version", "3", "--timeout", "5s", "--meta", "t=1"],
    OPTIONS,
  );
  assert.deepEqual(JSON.parse(JSON.stringify(buildPushRequest(p, p.positionals))), {
    target: "tag:role=web",
    job: { key: "script.register", args: { name: "disk-report", version: 3 } },
    meta: { t: "1" },
    timeoutMs: 5000,
  });
  const newest = parseFlags(["a", "all"], OPTIONS);
  assert.deepEqual(buildPushRequest(newest, newest.positionals).job.args, { name: "a" });
  usage(() => buildPushRequest(newest, ["a"]), /NAME TARGET/);
  usage(() => buildPushRequest(newest, ["Bad Name", "all"]), /bad script name/);
  usage(() => buildPushRequest(newest, ["a", "everyone"]), /bad target/);
});

Deno.test("scriptsCommand() refuses bad subcommands, arguments and flags", async (t) => {
  const api = fakeApi({});
  const cases: [string, string[], RegExp][] = [
    ["no subcommand", [], /list, show, delete or push/],
    ["unknown subcommand", ["upload"], /got "upload"/],
    ["list with an argument", ["list", "x"], /no arguments/],
    ["show without a name", ["show"], /needs NAME/],
    ["show with a bad name", ["show", "../x"], /bad script name/],
    ["delete with two names", ["delete", "a", "b"], /one NAME/],
    ["a flag of another subcommand", ["list", "--version", "1"], /does not apply/],
    ["run flags on delete", ["delete", "a", "--timeout", "5s"], /does not apply/],
  ];
  for (const [name, argv, pattern] of cases) {
    await t.step(name, async () => {
      await assert.rejects(
        command(api, ...argv),
        (e) => isJwError(e, "usage") && pattern.test(e.message),
      );
    });
  }
});

Deno.test("scripts list prints a table, or says there is nothing", async () => {
  const listed = await captured(() =>
    command(fakeApi({ scripts: () => Promise.resolve([INFO]) }), "list")
  );
  assert.equal(listed.code, 0);
  const [header, row] = listed.out[0].split("\n");
  assert.match(header, /^NAME +VERSION +SIGNER +SIGNED AT +SIZE +PERMISSIONS +UPLOADED$/);
  assert.match(
    row,
    /^disk-report +3 +Zq3xTnV5r1bY… +2026-01-02T03:04:05Z +1\.5 KiB +run=1 read=2 +alice at 2026-01-03T00:00:00Z$/,
  );
  const empty = await captured(() =>
    command(fakeApi({ scripts: () => Promise.resolve([]) }), "list")
  );
  assert.deepEqual(empty.out, ["no scripts stored"]);
});

Deno.test("scripts show asks for the version and describes the script on stderr", async () => {
  const asked: unknown[] = [];
  const api = fakeApi({
    script: (name: string, version?: number) => {
      asked.push([name, version]);
      return Promise.resolve({ script: INFO, text: "" });
    },
  });
  const r = await captured(() => command(api, "show", "disk-report", "--version", "3"));
  assert.equal(r.code, 0);
  assert.deepEqual(asked, [["disk-report", 3]]);
  assert.deepEqual(r.out, [], "stdout carries only the file text");
  assert.match(r.err.join("\n"), /^disk-report version 3 \(1\.5 KiB, sha256:abab/);
  assert.match(r.err.join("\n"), /permissions: run: \/bin\/df; read: \/proc\/mounts, \/etc\/fstab/);
});

Deno.test("scripts delete prints versions and each agent; exits 1 when one failed", async () => {
  const deleted: ScriptDeleted = {
    name: "a",
    versions: [1, 2],
    run: {
      id: "r1",
      agents: {
        a1: { status: "ok", error: null },
        a2: { status: "timeout", error: { code: "timeout", message: "no final output" } },
      },
    },
  };
  const asked: unknown[] = [];
  const api = fakeApi({
    deleteScript: (name: string, version?: number) => {
      asked.push([name, version]);
      return Promise.resolve(deleted);
    },
  });
  const r = await captured(() => command(api, "delete", "a"));
  assert.deepEqual(asked, [["a", undefined]]);
  assert.equal(r.code, 1);
  assert.deepEqual(r.out, [
    "deleted a versions 1, 2 from the server",
    "[a1] ok",
    "[a2] timeout: no final output",
  ]);
  const none = await captured(() =>
    command(
      fakeApi({
        deleteScript: () =>
          Promise.resolve({ ...deleted, versions: [2], run: { id: "r", agents: {} } }),
      }),
      "delete",
      "a",
    )
  );
  assert.equal(none.code, 0);
  assert.deepEqual(none.out, ["deleted a version 2 from the server", "no agents connected"]);
});

Deno.test("script rendering helpers", () => {
  assert.equal(formatBytes(0), "0 B");
  assert.equal(formatBytes(1023), "1023 B");
  assert.equal(formatBytes(1536), "1.5 KiB");
  assert.equal(formatBytes(512 * 1024), "512 KiB");
  assert.equal(formatBytes(3 * 1024 * 1024), "3.0 MiB");
  assert.equal(summarisePermissions({ run: [], read: [], write: [], net: [] }), "none");
  assert.equal(summarisePermissions({ ...INFO.permissions, net: ["x:1"] }), "run=1 read=2 net=1");
  assert.equal(renderOutcome("a", { status: "ok", error: null, exitCode: 0 }), "[a] ok");
  assert.equal(
    renderOutcome("a", { status: "error", error: { code: "invalid_args", message: "bad" } }),
    "[a] error: invalid_args: bad",
  );
  assert.equal(
    renderOutcome("a", { status: "ok", error: null, exitCode: 2 }),
    "[a] ok exit 2",
  );
  const bare = {
    ...INFO,
    description: undefined,
    signedAt: undefined,
    permissions: { run: [], read: [], write: [], net: [] },
  };
  assert.match(renderScriptInfo(bare), /signed by \S+ at -\npermissions: none\n/);
  assert.match(renderScripts([{ ...INFO, signer: "short" }]), / {2}short {2}/);
});
