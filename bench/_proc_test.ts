import assert from "node:assert/strict";
import { Lines, parseCpuTicks, parseVmRss } from "./_proc.ts";

Deno.test("parseVmRss() reads the VmRSS line in bytes", () => {
  const status = "Name:\tdeno\nVmPeak:\t  900 kB\nVmRSS:\t   73512 kB\nThreads:\t9\n";
  assert.equal(parseVmRss(status), 73512 * 1024);
  assert.throws(() => parseVmRss("Name:\tdeno\n"), /VmRSS/);
});

Deno.test("parseCpuTicks() adds utime and stime, even with spaces in the name", () => {
  // Fields: pid (comm) state ppid pgrp session tty tpgid flags minflt cminflt majflt cmajflt
  // utime stime ...
  const stat = "4242 (deno run x) S 1 4242 4242 0 -1 4194560 100 0 0 0 1234 567 0 0 20 0 9";
  assert.equal(parseCpuTicks(stat), 1234 + 567);
  assert.throws(() => parseCpuTicks("4242 (x) S"), /utime/);
});

Deno.test("Lines.waitFor() finds past and future lines from an index", async () => {
  const lines = new Lines();
  lines.push("ready 10 5");
  assert.equal((await lines.waitFor(/^ready (\d+)/, 100))[1], "10");
  const later = lines.waitFor(/^stats (\d+)$/, 1000, lines.lines.length);
  lines.push("noise");
  lines.push("stats 7");
  assert.equal((await later)[1], "7");
  // A wait from an index past the only match only sees new lines.
  const fresh = lines.waitFor(/^stats (\d+)$/, 1000, lines.lines.length);
  lines.push("stats 8");
  assert.equal((await fresh)[1], "8");
});

Deno.test("Lines.waitFor() fails when the stream ends or times out", async () => {
  const lines = new Lines();
  const pending = lines.waitFor(/^connected/, 1000);
  lines.push("error boom");
  lines.end();
  await assert.rejects(pending, /stream ended/);
  await assert.rejects(new Lines().waitFor(/x/, 10), /none within 10 ms/);
});
