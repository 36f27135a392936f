import assert from "node:assert/strict";
import {
  bodyLength,
  dueNow,
  outputsVerdicts,
  spreadOf,
  stampedText,
  stampOf,
  textLength,
  type ThroughputRow,
} from "./outputs.ts";

Deno.test("dueNow() paces a fixed rate and never goes negative", () => {
  assert.equal(dueNow(0, 2000, 0), 0);
  assert.equal(dueNow(10, 2000, 0), 20);
  assert.equal(dueNow(10, 2000, 15), 5);
  assert.equal(dueNow(10, 2000, 30), 0);
  assert.equal(dueNow(1000, 2000, 1999), 1);
});

Deno.test("stampOf() reads back the stamp stampedText() wrote inside a body", () => {
  const text = stampedText(1234.5678, 40);
  assert.equal(text.length, 40);
  const body = JSON.stringify({ mid: "m-1", message: { type: "output", text } });
  assert.equal(stampOf(body), 1234.568);
  assert.ok(Number.isNaN(stampOf('{"message":{"text":"xxxx"}}')));
});

Deno.test("textLength() sizes the body, but keeps room for a stamp", () => {
  assert.equal(bodyLength("x".repeat(textLength(400))), 400);
  assert.equal(textLength(10), 16);
});

Deno.test("spreadOf() gives start, max and end", () => {
  assert.deepEqual(spreadOf([3, 9, 4]), { start: 3, max: 9, end: 4 });
  assert.ok(Number.isNaN(spreadOf([]).max));
});

Deno.test("outputsVerdicts() compares each output with its raw client and the budgets", () => {
  const row = (path: string, backend: ThroughputRow["backend"], raw: boolean, perS: number) => ({
    path,
    backend,
    raw,
    messages: 1000,
    bytes: 200,
    confirmedPerS: perS,
    receivedPerS: perS,
  });
  const throughput = [
    row("file", "file", false, 60_000),
    row("amqplib", "amqp", true, 10_000),
    row("amqp", "amqp", false, 8_500),
    row("mqtt.js", "mqtt", true, 10_000),
    row("mqtt", "mqtt", false, 7_000),
  ];
  const mib = 2 ** 20;
  const samples = [100, 130, 110].map((m, s) => ({ s, rss: m * mib, heapUsed: 50 * mib }));
  const stall = { backend: "mqtt" as const, rate: 10, ms: 3000, messages: 30, queuedAtEnd: 30 };
  const met = outputsVerdicts({ throughput, stall: { ...stall, samples } }).map((v) => v.met);
  // amqp 0.85× met, mqtt 0.7× missed, file met, RSS grew 30 MiB: missed
  assert.deepEqual(met, [true, false, true, false]);
});
