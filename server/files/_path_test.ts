import assert from "node:assert/strict";
import { isInside, parseFilesPath } from "./_path.ts";

Deno.test("parseFilesPath() decodes once and splits into segments", () => {
  assert.deepEqual(parseFilesPath("a/b%20c/d.txt"), {
    segments: ["a", "b c", "d.txt"],
    directory: false,
    key: "a/b c/d.txt",
    encoded: "a/b%20c/d.txt",
  });
  assert.deepEqual(parseFilesPath(""), { segments: [], directory: true, key: "", encoded: "" });
  assert.deepEqual(parseFilesPath("dir/"), {
    segments: ["dir"],
    directory: true,
    key: "dir",
    encoded: "dir",
  });
  const twice = parseFilesPath("%252e%252e/x");
  assert.ok(!("refused" in twice));
  assert.deepEqual(twice.segments, ["%2e%2e", "x"]);
  assert.equal(twice.encoded, "%252e%252e/x");
  const unicode = parseFilesPath("caf%C3%A9/%E2%9C%93.txt");
  assert.ok(!("refused" in unicode));
  assert.deepEqual(unicode.segments, ["café", "✓.txt"]);
});

Deno.test("parseFilesPath() refuses what could leave the root, with a reason", async (t) => {
  const cases: [string, string][] = [
    ["..", "dot segment in path"],
    ["../x", "dot segment in path"],
    ["a/..", "dot segment in path"],
    ["./a", "dot segment in path"],
    ["%2e%2e/x", "dot segment in path"],
    ["a/%2E%2e/%2e%2e/x", "dot segment in path"],
    ["%2e/x", "dot segment in path"],
    ["a%2f..%2fx", "encoded slash in path"],
    ["a%2Fb", "encoded slash in path"],
    ["..%5cx", "backslash in path"],
    ["a\\b", "backslash in path"],
    ["/etc/passwd", "absolute path"],
    ["%2Fetc%2Fpasswd", "absolute path"],
    ["%5Cwindows", "absolute path"],
    ["%00", "NUL in path"],
    ["a%00b", "NUL in path"],
    ["a%0Ab", "control character in path"],
    ["a%7F", "control character in path"],
    ["a//b", "empty path segment"],
    ["a/b//", "empty path segment"],
    ["%", "bad percent-encoding"],
    ["%zz", "bad percent-encoding"],
    ["%C3", "bad percent-encoding"],
    ["x".repeat(256), "path segment too long"],
    ["a/".repeat(2100), "path too long"],
  ];
  for (const [raw, reason] of cases) {
    await t.step(JSON.stringify(raw.slice(0, 40)), () => {
      assert.deepEqual(parseFilesPath(raw), { refused: reason });
    });
  }
});

Deno.test("isInside() compares whole path segments", () => {
  assert.equal(isInside("/srv/files", "/srv/files"), true);
  assert.equal(isInside("/srv/files/a", "/srv/files"), true);
  assert.equal(isInside("/srv/files-other/a", "/srv/files"), false);
  assert.equal(isInside("/srv", "/srv/files"), false);
  assert.equal(isInside("/anything", "/"), true);
});
