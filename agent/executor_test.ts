import assert from "node:assert/strict";
import { isJwError } from "../shared/errors.ts";
import { createLogger } from "../shared/log.ts";
import { createWhitelistExecutor } from "./executor.ts";
import { FakeExecutor } from "./_fake_executor.ts";

Deno.test("createWhitelistExecutor() starts only absolute, listed programs", async (t) => {
  const cases: [string, string, string | null][] = [
    // [name, cmd, path started or null when refused]
    ["listed", "/bin/echo", "/bin/echo"],
    ["relative", "echo", null],
    ["relative with dot", "./bin/echo", null],
    ["not listed", "/bin/cat", null],
    ["dot-dot into a listed path", "/usr/../bin/echo", "/bin/echo"],
    ["dot-dot out of a listed path", "/bin/echo/../sh", null],
    ["double slashes", "//bin///echo", "/bin/echo"],
    ["list entry normalised", "/opt/tool", "/opt/tool"],
    ["trailing slash is another path", "/bin/echo/", null],
    ["prefix of a listed path", "/bin/ech", null],
  ];
  for (const [name, cmd, started] of cases) {
    await t.step(name, () => {
      const inner = new FakeExecutor((p) => p.exit(0));
      const exec = createWhitelistExecutor(inner, ["/bin/echo", "/opt/./x/../tool", "relative"]);
      if (started === null) {
        assert.throws(() => exec.spawn({ cmd, args: [] }), (err) => {
          assert.ok(isJwError(err, "not_whitelisted"));
          if (!cmd.startsWith("/")) assert.match(err.message, /absolute/);
          return true;
        });
        assert.equal(inner.spawned.length, 0);
      } else {
        exec.spawn({ cmd, args: ["x"], cwd: "/tmp", env: { A: "1" } });
        assert.deepEqual(inner.spawned[0].spec, {
          cmd: started,
          args: ["x"],
          cwd: "/tmp",
          env: { A: "1" },
        });
      }
    });
  }
});

Deno.test("createWhitelistExecutor() with an empty list refuses everything", () => {
  const exec = createWhitelistExecutor(new FakeExecutor(), []);
  assert.throws(
    () => exec.spawn({ cmd: "/bin/true", args: [] }),
    (e) => isJwError(e, "not_whitelisted"),
  );
});

Deno.test("createWhitelistExecutor() logs each start at debug and each refusal at warn", () => {
  const lines: string[] = [];
  const logger = createLogger("exec", { level: "debug", sink: (l) => lines.push(l), now: () => 0 });
  const inner = new FakeExecutor((p) => p.exit(0));
  const exec = createWhitelistExecutor(inner, ["/bin/echo"], logger);
  exec.spawn({ cmd: "//bin/echo", args: ["secret"], env: { TOKEN: "t" } });
  for (const cmd of ["/bin/cat", "echo"]) {
    assert.throws(
      () => exec.spawn({ cmd, args: ["secret"] }),
      (e) => isJwError(e, "not_whitelisted"),
    );
  }
  const pid = inner.spawned[0].pid;
  assert.deepEqual(lines.map((l) => l.slice(25)), [
    `DEBUG exec: started a program cmd=/bin/echo pid=${pid}`,
    'WARN  exec: refused to start a program cmd=/bin/cat reason="not on allowRun"',
    'WARN  exec: refused to start a program cmd=echo reason="not an absolute path"',
  ]);
  assert.ok(lines.every((l) => !l.includes("secret") && !l.includes("TOKEN")));
});
