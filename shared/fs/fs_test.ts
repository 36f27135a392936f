import assert from "node:assert/strict";
import { isJwError } from "../errors.ts";
import { type Fs, MemFs, realFs } from "./mod.ts";

/** Runs the same contract against both implementations, each in a fresh root. */
async function eachFs(t: Deno.TestContext, fn: (fs: Fs, root: string) => Promise<void>) {
  await t.step("MemFs", () => fn(new MemFs(), "/data"));
  await t.step("realFs", async () => {
    const root = await Deno.makeTempDir({ prefix: "jw-fs-test-" });
    try {
      await fn(realFs, `${root}/data`);
    } finally {
      await Deno.remove(root, { recursive: true });
    }
  });
}

Deno.test("Fs.writeTextFile() then readTextFile() returns the text", async (t) => {
  await eachFs(t, async (fs, root) => {
    await fs.mkdir(root);
    await fs.writeTextFile(`${root}/a.txt`, "héllo\n");
    assert.equal(await fs.readTextFile(`${root}/a.txt`), "héllo\n");
    const info = await fs.stat(`${root}/a.txt`);
    assert.equal(info.isFile, true);
    assert.equal(info.isDirectory, false);
    assert.equal(info.size, 7);
  });
});

Deno.test("Fs.writeTextFile() with mode sets exactly that mode, also on an existing file", async (t) => {
  await eachFs(t, async (fs, root) => {
    await fs.mkdir(root);
    await fs.writeTextFile(`${root}/k`, "secret", { mode: 0o600 });
    assert.equal((await fs.stat(`${root}/k`)).mode, 0o600);
    await fs.writeTextFile(`${root}/p`, "public");
    assert.equal((await fs.stat(`${root}/p`)).mode, 0o644);
    await fs.writeTextFile(`${root}/p`, "now secret", { mode: 0o600 });
    assert.equal((await fs.stat(`${root}/p`)).mode, 0o600);
    assert.equal(await fs.readTextFile(`${root}/p`), "now secret");
    await fs.writeTextFile(`${root}/p`, "keeps mode");
    assert.equal((await fs.stat(`${root}/p`)).mode, 0o600);
  });
});

Deno.test("Fs.chmod() changes the mode stat reports", async (t) => {
  await eachFs(t, async (fs, root) => {
    await fs.mkdir(root);
    await fs.writeTextFile(`${root}/f`, "x");
    await fs.chmod(`${root}/f`, 0o640);
    assert.equal((await fs.stat(`${root}/f`)).mode, 0o640);
  });
});

Deno.test("Fs.mkdir() needs recursive for missing parents and existing dirs", async (t) => {
  await eachFs(t, async (fs, root) => {
    await assert.rejects(fs.mkdir(`${root}/a/b`), (e) => isJwError(e, "not_found"));
    await fs.mkdir(`${root}/a/b`, { recursive: true });
    await fs.mkdir(`${root}/a/b`, { recursive: true });
    await assert.rejects(fs.mkdir(`${root}/a/b`), (e) => isJwError(e));
    assert.equal((await fs.stat(`${root}/a`)).isDirectory, true);
  });
});

Deno.test("Fs reports a missing path as not_found and exists() as false", async (t) => {
  await eachFs(t, async (fs, root) => {
    assert.equal(await fs.exists(`${root}/nope`), false);
    await assert.rejects(fs.readTextFile(`${root}/nope`), (e) => isJwError(e, "not_found"));
    await assert.rejects(fs.stat(`${root}/nope`), (e) => isJwError(e, "not_found"));
    await assert.rejects(fs.writeTextFile(`${root}/nope/f`, "x"), (e) => isJwError(e, "not_found"));
    await assert.rejects(fs.chmod(`${root}/nope`, 0o600), (e) => isJwError(e, "not_found"));
    await fs.mkdir(root);
    assert.equal(await fs.exists(root), true);
  });
});

Deno.test("MemFs seeds files with their parents and lists paths", async () => {
  const fs = new MemFs({ "/etc/jw/agent.yaml": "id: a1\n" });
  assert.equal(await fs.readTextFile("/etc/jw/agent.yaml"), "id: a1\n");
  assert.equal(await fs.readTextFile("etc/jw/../jw/agent.yaml"), "id: a1\n");
  assert.deepEqual(fs.paths(), ["/", "/etc", "/etc/jw", "/etc/jw/agent.yaml"]);
});
