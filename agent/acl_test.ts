import assert from "node:assert/strict";
import { isJwError } from "../shared/errors.ts";
import { createCommandAcl, withAcl } from "./acl.ts";
import { createExecCommand, createRegistry, createTagsCommand } from "./payload/mod.ts";

Deno.test("CommandAcl.allows() matches exact keys, category.* and *", async (t) => {
  const cases: [string[], string, boolean][] = [
    [["*"], "exec.run", true],
    [["*"], "job.list", true],
    [["exec.run"], "exec.run", true],
    [["exec.run"], "exec.runner", false],
    [["exec.run"], "job.list", false],
    [["job.*"], "job.list", true],
    [["job.*"], "job.a.b", true],
    [["job.*"], "jobs.list", false],
    [["job.*"], "job", false],
    [["a.b.*"], "a.b.c", true],
    [["a.b.*"], "a.c", false],
    [[], "exec.run", false],
    [["tags.set", "job.*"], "tags.set", true],
  ];
  for (const [allow, key, expected] of cases) {
    await t.step(`${JSON.stringify(allow)} ${key}`, () => {
      assert.equal(createCommandAcl(allow).allows(key), expected);
    });
  }
});

Deno.test("CommandAcl.check() throws forbidden naming the key and allowCommands", () => {
  const acl = createCommandAcl(["tags.set"]);
  acl.check("tags.set");
  assert.throws(() => acl.check("exec.run"), (err) => {
    assert.ok(isJwError(err, "forbidden"));
    assert.equal(
      err.message,
      "command exec.run is not allowed on this agent: it is not on the agent's allowCommands list",
    );
    assert.deepEqual(err.detail, { key: "exec.run" });
    return true;
  });
});

Deno.test("withAcl() refuses forbidden keys before lookup or argument checks", () => {
  const inner = createRegistry();
  inner.register(createExecCommand({ defaultTimeoutMs: 1000 }));
  inner.register(createTagsCommand());
  const registry = withAcl(inner, createCommandAcl(["tags.*"]));
  assert.deepEqual(registry.keys(), ["tags.set"]);
  assert.equal(registry.prepare("tags.set", { tags: { a: "1" } }).command.key, "tags.set");
  for (const [key, args] of [["exec.run", { bad: true }], ["nope.run", {}]] as const) {
    assert.throws(() => registry.prepare(key, args), (e) => isJwError(e, "forbidden"));
    assert.throws(() => registry.get(key), (e) => isJwError(e, "forbidden"));
  }
  assert.throws(
    () => registry.prepare("tags.set", { tags: 1 }),
    (e) => isJwError(e, "invalid_args"),
  );
  assert.throws(() => registry.get("tags.nope"), (e) => isJwError(e, "unknown_command"));
});
