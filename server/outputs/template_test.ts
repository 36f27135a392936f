import assert from "node:assert/strict";
import { isJwError } from "../../shared/errors.ts";
import { checkTemplate, renderTemplate } from "./template.ts";

const item = { type: "output" as const, agent: "web-1", key: "exec.run", tags: { role: "web" } };

Deno.test("renderTemplate fills fields; missing values become _; unsafe characters _", () => {
  assert.equal(renderTemplate("jw.{type}.{agent}", item, "s1"), "jw.output.web-1");
  assert.equal(
    renderTemplate("{server}/{key}/{tag.role}/{tag.zone}", item, "s1"),
    "s1/exec.run/web/_",
  );
  assert.equal(renderTemplate("jw/{agent}", { ...item, agent: "a/b#c+d" }, "s1"), "jw/a_b_c_d");
  assert.equal(renderTemplate("jw_{key}", item, "s1", /[A-Za-z0-9_-]/), "jw_exec_run");
  assert.equal(renderTemplate("jw.{agent}", { ...item, agent: null }, "s1"), "jw._");
});

Deno.test("checkTemplate refuses unknown fields", () => {
  checkTemplate("jw.{type}.{tag.role}", "topic");
  assert.throws(
    () => checkTemplate("jw.{typo}", "outputs[0].topic"),
    (e) => isJwError(e, "config") && /\{typo\}/.test((e as Error).message),
  );
});
