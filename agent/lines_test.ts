import assert from "node:assert/strict";
import { LineReader, LineSplitter } from "./lines.ts";

function splitAll(pieces: string[], max?: number): string[] {
  const s = new LineSplitter(max);
  return [...pieces.flatMap((p) => s.push(p)), ...s.end()];
}

Deno.test("LineSplitter.push() splits on newlines across pieces and keeps a final partial line", async (t) => {
  const cases: [string, string[], string[]][] = [
    ["one piece", ["a\nb\n"], ["a", "b"]],
    ["split mid-line", ["he", "llo\nwor", "ld"], ["hello", "world"]],
    ["CRLF", ["a\r\nb\r", "\nc\r"], ["a", "b", "c"]],
    ["empty lines", ["\n\nx\n"], ["", "", "x"]],
    ["nothing", [], []],
    ["no newline at all", ["partial"], ["partial"]],
  ];
  for (const [name, pieces, want] of cases) {
    await t.step(name, () => assert.deepEqual(splitAll(pieces), want));
  }
});

Deno.test("LineSplitter.push() cuts lines longer than the limit into chunks", () => {
  assert.deepEqual(splitAll(["abcdefgh\nxy\n"], 3), ["abc", "def", "gh", "xy"]);
  assert.deepEqual(splitAll(["abc\n"], 3), ["abc"]);
  assert.deepEqual(splitAll(["ab", "cd", "ef", "g"], 3), ["abc", "def", "g"]);
});

function streamOf(chunks: Uint8Array[]): ReadableStream<Uint8Array> {
  return new ReadableStream({
    start(controller) {
      for (const c of chunks) controller.enqueue(c);
      controller.close();
    },
  });
}

Deno.test("LineReader decodes UTF-8 split across chunks", async () => {
  const bytes = new TextEncoder().encode("zwölf €\nend");
  const reader = new LineReader(streamOf([bytes.slice(0, 3), bytes.slice(3, 9), bytes.slice(9)]));
  const lines: string[] = [];
  for await (const line of reader) lines.push(line);
  assert.deepEqual(lines, ["zwölf €", "end"]);
  await reader.done;
  assert.equal(reader.finished, true);
});

Deno.test("LineReader.cancel() ends a pending iteration and releases an unread stream", async () => {
  let pull = 0;
  const endless = () =>
    new ReadableStream<Uint8Array>({
      pull(controller) {
        if (pull++ === 0) controller.enqueue(new TextEncoder().encode("first\npart"));
        // then never more data
      },
    });
  const reader = new LineReader(endless());
  const lines: string[] = [];
  const iterating = (async () => {
    for await (const line of reader) {
      lines.push(line);
      if (line === "first") void reader.cancel();
    }
  })();
  await iterating;
  await reader.done;
  assert.deepEqual(lines, ["first", "part"]);

  pull = 0;
  const unread = new LineReader(endless());
  await unread.cancel();
  await unread.done;
  assert.equal(unread.finished, true);
});
