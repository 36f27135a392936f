import assert from "node:assert/strict";
import type { CpuProfile } from "./_inspector.ts";
import { shortUrl, sourceLine, summarizeProfile } from "./_profile.ts";

const root = new URL("../", import.meta.url).href;

function frame(functionName: string, url = "", lineNumber = 0) {
  return { functionName, url, lineNumber, columnNumber: 0 };
}

/**
 * (root) → start → append → run [native] (files that do not exist: no source lines)
 *        → (idle)
 *        → emit (inspector bridge)
 */
const profile: CpuProfile = {
  nodes: [
    { id: 1, callFrame: frame("(root)"), children: [2, 5, 6] },
    { id: 2, callFrame: frame("start", `${root}bench/_no_such_dispatch.ts`, 119), children: [3] },
    { id: 3, callFrame: frame("append", `${root}bench/_no_such_audit.ts`, 34), children: [4] },
    { id: 4, callFrame: frame("run") },
    { id: 5, callFrame: frame("(idle)") },
    { id: 6, callFrame: frame("emit", "ext:deno_node/inspector_network_bridge.js", 0) },
  ],
  startTime: 0,
  endTime: 10_000,
  // Each sample is charged the time until the next one (1 ms apart).
  samples: [4, 4, 4, 3, 3, 2, 5, 6, 4, 4],
  timeDeltas: [0, 1000, 1000, 1000, 1000, 1000, 1000, 1000, 1000, 1000],
};

Deno.test("summarizeProfile() splits self and inclusive time and names native callers", () => {
  const s = summarizeProfile(profile);
  assert.equal(s.totalMs, 9);
  assert.equal(s.idleMs, 1);
  assert.equal(s.inspectorMs, 1);
  assert.deepEqual(s.self.map((h) => [h.name, h.ms]), [
    ["run [native] ← append (bench/_no_such_audit.ts)", 4],
    ["append (bench/_no_such_audit.ts)", 2],
    ["start (bench/_no_such_dispatch.ts)", 1],
  ]);
  const inclusive = new Map(s.inclusive.map((h) => [h.name, h.ms]));
  assert.equal(inclusive.get("start (bench/_no_such_dispatch.ts)"), 7);
  assert.equal(inclusive.get("append (bench/_no_such_audit.ts)"), 6);
  assert.equal(inclusive.has("(root)"), false);
  // Shares are of the busy time (not idle, not the inspector's own work).
  assert.equal(s.self[0].share, 4 / 7);
});

Deno.test("shortUrl() shortens repository, npm and runtime paths", () => {
  assert.equal(shortUrl(`${root}server/http/app.ts`), "server/http/app.ts");
  assert.equal(
    shortUrl("file:///root/.cache/deno/npm/registry.npmjs.org/zod/4.6.7/v4/core/schemas.js"),
    "npm:zod@4.6.7/v4/core/schemas.js",
  );
  assert.equal(shortUrl("ext:deno_http/00_serve.ts"), "ext:deno_http/00_serve.ts");
  assert.equal(shortUrl(""), "(native)");
});

Deno.test("sourceLine() finds a definition in the TypeScript source, not a declaration", () => {
  const url = new URL("./_stats.ts", import.meta.url).href;
  const lines = Deno.readTextFileSync(new URL(url)).split("\n");
  assert.equal(
    sourceLine(url, "median"),
    lines.findIndex((l) => l.includes("function median(")) + 1,
  );
  assert.equal(sourceLine(url, "nope"), undefined);
  assert.equal(sourceLine(url, "(anonymous)"), undefined);
  assert.equal(sourceLine("ext:deno_http/00_serve.ts", "mapped"), undefined);
  // An interface member ends with ";": the class method with a body wins.
  const report = new URL("./_proc.ts", import.meta.url).href;
  const src = Deno.readTextFileSync(new URL(report)).split("\n");
  assert.equal(sourceLine(report, "stop"), src.findIndex((l) => /^ {2}stop\(/.test(l)) + 1);
});
