import assert from "node:assert/strict";
import { isJwError } from "../../shared/errors.ts";
import { loadFormatter } from "./format.ts";

async function script(text: string): Promise<string> {
  const dir = await Deno.makeTempDir({ prefix: "jw-format-" });
  await Deno.writeTextFile(`${dir}/f.js`, text);
  return `${dir}/f.js`;
}

Deno.test("a format script reshapes, drops (null) and fails per message", async () => {
  const f = await loadFormatter(
    await script(`
    export default function (m) {
      if (m.type === "alive") return null;
      if (m.text === "boom") throw new Error("bad line");
      return { who: m.agent, what: m.text ?? null };
    }
  `),
  );
  try {
    const out = await f.apply([
      JSON.stringify({ type: "output", agent: "a1", text: "hi" }),
      JSON.stringify({ type: "alive", agent: "a1" }),
      JSON.stringify({ type: "output", agent: "a2", text: "boom" }),
    ]);
    assert.deepEqual(out[0], { ok: true, value: JSON.stringify({ who: "a1", what: "hi" }) });
    assert.deepEqual(out[1], { ok: true, value: null });
    assert.equal(out[2].ok, false);
    assert.match((out[2] as { error: string }).error, /bad line/);
  } finally {
    f.close();
  }
});

Deno.test("a format script has no permissions, and an endless loop times out", async () => {
  const f = await loadFormatter(
    await script(`
      export default function (m) {
        if (m.loop) for (;;) {}
        return { read: (() => { try { Deno.readTextFileSync("/etc/hostname"); return "yes"; } catch (e) { return e.name; } })() };
      }
    `),
    300,
  );
  try {
    const [r] = await f.apply([JSON.stringify({})]);
    assert.deepEqual(r, { ok: true, value: JSON.stringify({ read: "NotCapable" }) });
    const [stuck] = await f.apply([JSON.stringify({ loop: true })]);
    assert.equal(stuck.ok, false);
    assert.match((stuck as { error: string }).error, /longer than 300 ms/);
    // A fresh Worker for the next batch.
    const [again] = await f.apply([JSON.stringify({})]);
    assert.equal(again.ok, true);
  } finally {
    f.close();
  }
});

Deno.test("a format script without a default function is a config error", async () => {
  await assert.rejects(
    loadFormatter(await script("export const x = 1;")),
    (e) => isJwError(e, "config") && /export default function/.test((e as Error).message),
  );
  await assert.rejects(loadFormatter("/nonexistent/f.js"), (e) => isJwError(e, "config"));
  await assert.rejects(
    loadFormatter(await script("export default (")),
    (e) => isJwError(e, "config"),
  );
});
