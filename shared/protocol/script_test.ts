import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { isJwError } from "../errors.ts";
import {
  DEFAULT_SCRIPT_TIMEOUT_MS,
  MAX_SCRIPT_BYTES,
  MAX_SCRIPT_TIMEOUT_MS,
  parseScript,
} from "./script.ts";

/** A script file with `header` lines between the markers and `body` after them. */
function script(header: string, body = "emit({ ok: true });\n"): string {
  return `/*---\n${header}---*/\n${body}`;
}

function rejects(text: string, pattern: RegExp): void {
  assert.throws(
    () => parseScript(text),
    (e) => isJwError(e, "invalid_script") && pattern.test(e.message),
  );
}

Deno.test("parseScript() applies defaults and keeps the header as written", () => {
  const text = script("name: disk-report\nversion: 3\n");
  const parsed = parseScript(text);
  assert.deepEqual(parsed.header, {
    name: "disk-report",
    version: 3,
    permissions: { run: [], read: [], write: [], net: [] },
    timeout: DEFAULT_SCRIPT_TIMEOUT_MS,
  });
  assert.deepEqual(parsed.rawHeader, { name: "disk-report", version: 3 });
  assert.equal(parsed.headerYaml, "name: disk-report\nversion: 3\n");
  assert.equal(parsed.text, text);
  assert.equal(
    parsed.sha256,
    "sha256:" + createHash("sha256").update(new TextEncoder().encode(text)).digest("hex"),
  );
});

Deno.test("parseScript() parses every field, the timeout in ms, and the body byte for byte", () => {
  const body = "\n  const x = 1;\r\n/* a comment */\nemit({ x }); // ünïcödé ✓\n\n";
  const parsed = parseScript(script(
    [
      "name: net.check_2",
      "version: 2147483647",
      "description: checks the network",
      "permissions:",
      "  run: [/usr/bin/ping]",
      "  read: [/etc/hosts, /proc/net/dev]",
      "  write: [/var/tmp/out]",
      '  net: ["example.com:443", "10.0.0.1", "[::1]:8080", localhost]',
      "timeout: 1m30s",
      "",
    ].join("\n"),
    body,
  ));
  assert.deepEqual(parsed.header, {
    name: "net.check_2",
    version: 2147483647,
    description: "checks the network",
    permissions: {
      run: ["/usr/bin/ping"],
      read: ["/etc/hosts", "/proc/net/dev"],
      write: ["/var/tmp/out"],
      net: ["example.com:443", "10.0.0.1", "[::1]:8080", "localhost"],
    },
    timeout: 90_000,
  });
  assert.equal(parsed.body, body);
});

Deno.test("parseScript() accepts edge values: a 24h timeout, a number timeout, no body", () => {
  assert.equal(
    parseScript(script("name: a\nversion: 1\ntimeout: 24h\n")).header.timeout,
    MAX_SCRIPT_TIMEOUT_MS,
  );
  assert.equal(parseScript(script("name: a\nversion: 1\ntimeout: 2500\n")).header.timeout, 2500);
  const bare = parseScript("/*---\nname: a\nversion: 1\n---*/");
  assert.equal(bare.body, "");
  assert.equal(parseScript(script("name: a\nversion: 1\n", "")).body, "");
  // Spaces after the closing marker are allowed; they are not part of the body.
  assert.equal(parseScript("/*---\nname: a\nversion: 1\n---*/  \nx\n").body, "x\n");
});

Deno.test("parseScript() accepts a file of exactly the size limit", () => {
  const head = script("name: a\nversion: 1\n", "");
  const text = head + "/".repeat(MAX_SCRIPT_BYTES - head.length);
  assert.equal(parseScript(text).body.length, MAX_SCRIPT_BYTES - head.length);
});

Deno.test("parseScript() refuses malformed files with invalid_script", async (t) => {
  const ok = "name: a\nversion: 1\n";
  const cases: [string, string, RegExp][] = [
    ["no header", "emit({});\n", /must start with a "\/\*---" line/],
    ["empty file", "", /must start with/],
    ["a blank line first", "\n" + script(ok), /must start with/],
    ["CRLF line endings", script(ok).replaceAll("\n", "\r\n"), /\\n line endings, not \\r\\n/],
    ["a byte order mark", "\uFEFF" + script(ok), /must start with/],
    ["unclosed header", `/*---\n${ok}emit({});\n`, /no closing "---\*\/" line/],
    ["closing marker not on its own line", `/*---\n${ok}x ---*/\n`, /no closing/],
    ["closing marker after a carriage return", `/*---\n${ok}\r---*/\n`, /no closing/],
    ["closing marker after U+2028", `/*---\n${ok}#\u2028---*/\n`, /no closing/],
    ["closing marker followed by code", `/*---\n${ok}---*/ emit({});\n`, /no closing/],
    ["bad YAML", script("name: [a\nversion: 1\n"), /not valid YAML/],
    ["duplicate key", script("name: a\nname: b\nversion: 1\n"), /not valid YAML.*unique/],
    ["two YAML documents", script("name: a\n---\nversion: 1\n"), /not valid YAML/],
    ["an unknown tag", script("name: !shout a\nversion: 1\n"), /not valid YAML.*tag/],
    ["anchor and alias", script("name: &n a\nversion: 1\ndescription: *n\n"), /not valid YAML/],
    ["alias in a list", script(`${ok}permissions:\n  read: &r [/a]\n  write: *r\n`), /YAML/],
    ["empty header", "/*---\n---*/\nx\n", /must be a YAML mapping/],
    ["a list header", script("- name\n- a\n"), /must be a YAML mapping/],
    ["a scalar header", script("just text\n"), /must be a YAML mapping/],
    ["*/ inside the header", script(`${ok}description: "a */ b"\n`), /must not contain "\*\/"/],
    ["unknown field", script(`${ok}owner: me\n`), /owner/],
    ["unknown permission", script(`${ok}permissions:\n  env: [HOME]\n`), /permissions.*env/],
    ["no name", script("version: 1\n"), /name/],
    ["upper-case name", script("name: Disk\nversion: 1\n"), /name: must be 1-64/],
    ["name with a slash", script("name: a/b\nversion: 1\n"), /name: must be 1-64/],
    ["name starting with a dot", script("name: .a\nversion: 1\n"), /name: must be 1-64/],
    ["name too long", script(`name: ${"a".repeat(65)}\nversion: 1\n`), /name: must be 1-64/],
    ["number as name", script("name: 7\nversion: 1\n"), /name/],
    ["no version", script("name: a\n"), /version/],
    ["version 0", script("name: a\nversion: 0\n"), /version/],
    ["negative version", script("name: a\nversion: -1\n"), /version/],
    ["float version", script("name: a\nversion: 1.5\n"), /version/],
    ["version as text", script('name: a\nversion: "1"\n'), /version/],
    ["version past 2^31-1", script("name: a\nversion: 2147483648\n"), /version/],
    ["relative run path", script(`${ok}permissions:\n  run: [bin/sh]\n`), /permissions\.run/],
    ["relative read path", script(`${ok}permissions:\n  read: [./x]\n`), /absolute path/],
    ["'..' in a read path", script(`${ok}permissions:\n  read: [/etc/../root]\n`), /without \.\./],
    ["'..' at the end", script(`${ok}permissions:\n  write: [/tmp/..]\n`), /without \.\./],
    ["net with a path", script(`${ok}permissions:\n  net: [example.com/x]\n`), /host:port/],
    ["net with a scheme", script(`${ok}permissions:\n  net: ["https://a.b"]\n`), /host:port/],
    ["net with a long port", script(`${ok}permissions:\n  net: ["a.b:123456"]\n`), /host:port/],
    ["net as a string", script(`${ok}permissions:\n  net: example.com\n`), /permissions\.net/],
    ["timeout over 24h", script(`${ok}timeout: 24h1s\n`), /up to 24h/],
    ["timeout 0", script(`${ok}timeout: 0s\n`), /positive duration/],
    ["timeout gibberish", script(`${ok}timeout: soon\n`), /positive duration/],
    ["description too long", script(`${ok}description: ${"d".repeat(1025)}\n`), /description/],
  ];
  for (const [name, text, pattern] of cases) {
    await t.step(name, () => rejects(text, pattern));
  }
});

Deno.test("parseScript() refuses a file one byte over 512 KiB, counting UTF-8 bytes", () => {
  const head = script("name: a\nversion: 1\n", "");
  rejects(head + "/".repeat(MAX_SCRIPT_BYTES - head.length + 1), /524289 bytes, more than/);
  // Under the limit in UTF-16 code units, over it in UTF-8 bytes.
  const wide = head + "é".repeat(Math.floor((MAX_SCRIPT_BYTES - head.length) / 2) + 1);
  assert.ok(wide.length < MAX_SCRIPT_BYTES);
  rejects(wide, /more than the 524288-byte limit/);
});
