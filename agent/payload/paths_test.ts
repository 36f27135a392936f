import assert from "node:assert/strict";
import { type ErrorCode, isJwError } from "../../shared/errors.ts";
import { checkPath } from "./paths.ts";

Deno.test("checkPath: inside the roots, after `..` and symlinks; refused otherwise", async () => {
  const base = await Deno.realPath(await Deno.makeTempDir({ prefix: "jw-paths-" }));
  try {
    await Deno.mkdir(`${base}/logs/app`, { recursive: true });
    await Deno.mkdir(`${base}/secret`);
    await Deno.writeTextFile(`${base}/logs/app/a.log`, "x");
    await Deno.writeTextFile(`${base}/secret/key`, "k");
    await Deno.symlink(`${base}/secret/key`, `${base}/logs/app/escape`);
    const paths = { read: [`${base}/logs`], write: [`${base}/logs/app`] };

    assert.equal(
      await checkPath(paths, "read", `${base}/logs/app/a.log`),
      `${base}/logs/app/a.log`,
    );
    // Not there yet (a file to create): its real parent counts.
    assert.equal(
      await checkPath(paths, "write", `${base}/logs/app/new/b.txt`),
      `${base}/logs/app/new/b.txt`,
    );

    const refused = async (
      kind: "read" | "write",
      path: string,
      why: RegExp,
      code: ErrorCode = "forbidden",
    ) =>
      await assert.rejects(
        checkPath(paths, kind, path),
        (err: unknown) => isJwError(err, code) && why.test(err.message),
      );
    await refused("read", `${base}/logs/../secret/key`, /outside the paths this agent allows/);
    await refused("read", `${base}/logs/app/escape`, /really .*secret\/key/);
    await refused("write", `${base}/logs/other.txt`, /--allow-write/);
    await refused("read", "logs/app/a.log", /must be absolute/, "invalid_args");
    await assert.rejects(
      checkPath({ read: [], write: [] }, "read", `${base}/logs/app/a.log`),
      /allows no read paths \(--allow-read PATH would\)/,
    );
  } finally {
    await Deno.remove(base, { recursive: true });
  }
});
