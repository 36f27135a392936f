import assert from "node:assert/strict";
import { chunk, readLines } from "./_lines.ts";

function streamOf(...pieces: string[]): ReadableStream<Uint8Array> {
  const encoder = new TextEncoder();
  return ReadableStream.from(pieces.map((p) => encoder.encode(p)));
}

async function collect(stream: ReadableStream<Uint8Array>, max: number): Promise<string[]> {
  const lines: string[] = [];
  for await (const line of readLines(stream, max)) lines.push(line);
  return lines;
}

Deno.test("readLines() joins pieces, drops \\r before \\n and keeps a final partial line", async () => {
  const lines = await collect(streamOf("one\r\ntw", "o\n\nthr", "ee"), 100);
  assert.deepEqual(lines, ["one", "two", "", "three"]);
});

Deno.test("readLines() yields a run longer than maxChars in pieces", async () => {
  const lines = await collect(streamOf("abcdefg", "h\nij\n"), 3);
  assert.deepEqual(lines, ["abc", "def", "gh", "ij"]);
});

Deno.test("readLines() decodes a UTF-8 character split across pieces", async () => {
  const bytes = new TextEncoder().encode("é\n");
  const stream = ReadableStream.from([bytes.subarray(0, 1), bytes.subarray(1)]);
  assert.deepEqual(await collect(stream, 10), ["é"]);
});

Deno.test("chunk() splits long text and keeps short text whole", () => {
  assert.deepEqual(chunk("", 2), [""]);
  assert.deepEqual(chunk("ab", 2), ["ab"]);
  assert.deepEqual(chunk("abcde", 2), ["ab", "cd", "e"]);
});
