import assert from "node:assert/strict";
import { z } from "zod";
import { isJwError } from "../../shared/errors.ts";
import { createRegistry, defineCommand } from "./commands.ts";
import { createExecCommand } from "./exec.ts";
import { createTagsCommand } from "./tags.ts";

const echo = defineCommand({
  key: "test.echo",
  description: "echoes its text",
  args: z.object({
    text: z.string(),
    times: z.number().int().default(1),
    opts: z.object({ upper: z.boolean() }).optional(),
  })
    .strict(),
  run: () => Promise.resolve({ error: null }),
});

Deno.test("Registry.get() returns a registered command and throws unknown_command otherwise", () => {
  const registry = createRegistry();
  registry.register(echo);
  assert.equal(registry.get("test.echo"), echo);
  assert.throws(() => registry.get("test.nope"), (err) => {
    assert.ok(isJwError(err, "unknown_command"));
    assert.match(err.message, /test\.nope/);
    return true;
  });
});

Deno.test("Registry.prepare() applies defaults and names each failing path", async (t) => {
  const registry = createRegistry();
  registry.register(echo);
  await t.step("valid", () => {
    assert.deepEqual(registry.prepare("test.echo", { text: "hi" }).args, { text: "hi", times: 1 });
  });
  const cases: [string, unknown, RegExp][] = [
    ["wrong type", { text: 5 }, /^bad args for test\.echo: text: /],
    ["missing", {}, /text: /],
    ["nested", { text: "x", opts: { upper: "yes" } }, /opts\.upper: /],
    ["unknown key", { text: "x", extra: 1 }, /\(root\): .*extra/],
    ["not an object", "text", /\(root\): /],
  ];
  for (const [name, args, message] of cases) {
    await t.step(name, () => {
      assert.throws(() => registry.prepare("test.echo", args), (err) => {
        assert.ok(isJwError(err, "invalid_args"));
        assert.match(err.message, message);
        return true;
      });
    });
  }
  await t.step("unknown key wins over args", () => {
    assert.throws(
      () => registry.prepare("test.other", { x: 1 }),
      (e) => isJwError(e, "unknown_command"),
    );
  });
});

Deno.test("Registry.register() refuses duplicate and malformed keys", () => {
  const registry = createRegistry();
  registry.register(echo);
  assert.throws(() => registry.register(echo), (e) => isJwError(e, "internal"));
  assert.throws(() => registry.register({ ...echo, key: "Bad" }), (e) => isJwError(e, "internal"));
  registry.register(createExecCommand({ defaultTimeoutMs: 1000 }));
  registry.register(createTagsCommand());
  assert.deepEqual(registry.keys(), ["exec.run", "tags.set", "test.echo"]);
});

Deno.test("exec.run args: strict, absolute cwd, timeout as duration or ms", async (t) => {
  const registry = createRegistry();
  registry.register(createExecCommand({ defaultTimeoutMs: 1000 }));
  await t.step("defaults", () => {
    assert.deepEqual(registry.prepare("exec.run", { cmd: "/bin/echo" }).args, {
      cmd: "/bin/echo",
      args: [],
    });
  });
  await t.step("timeout forms", () => {
    assert.equal(
      (registry.prepare("exec.run", { cmd: "/x", timeout: "5s" }).args as { timeout: number })
        .timeout,
      5000,
    );
    assert.equal(
      (registry.prepare("exec.run", { cmd: "/x", timeout: 250 }).args as { timeout: number })
        .timeout,
      250,
    );
  });
  const bad: [string, unknown, RegExp][] = [
    ["zero timeout", { cmd: "/x", timeout: "0s" }, /timeout: /],
    ["junk timeout", { cmd: "/x", timeout: "soon" }, /timeout: .*soon/],
    ["relative cwd", { cmd: "/x", cwd: "tmp" }, /cwd: must be an absolute path/],
    ["shell key", { cmd: "/x", shell: "sh" }, /shell/],
    ["args not strings", { cmd: "/x", args: [1] }, /args\.0: /],
    ["bad env name", { cmd: "/x", env: { "A=B": "1" } }, /env\.A=B: bad variable name/],
    ["loader env", { cmd: "/x", env: { LD_PRELOAD: "/tmp/x.so" } }, /LD_\* and DYLD_\*/],
  ];
  for (const [name, args, message] of bad) {
    await t.step(name, () => {
      assert.throws(() => registry.prepare("exec.run", args), (err) => {
        assert.ok(isJwError(err, "invalid_args"));
        assert.match(err.message, message);
        return true;
      });
    });
  }
});
