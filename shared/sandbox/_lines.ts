/**
 * Lines of a byte stream, for both ends of the sandbox pipes. Relative imports only: the
 * sandbox child process loads this file without an import map or npm packages.
 *
 * @module
 */

/**
 * Yields the UTF-8 lines of `stream` without their "\n" (a "\r" before it is dropped). A run
 * longer than `maxChars` without a newline is yielded in pieces of `maxChars`, so memory stays
 * bounded whatever the other side writes. A last line without a newline is yielded at the end.
 * Stopping the iteration early cancels the stream.
 */
export async function* readLines(
  stream: ReadableStream<Uint8Array>,
  maxChars: number,
): AsyncGenerator<string, void, undefined> {
  const decoder = new TextDecoder();
  const reader = stream.getReader();
  let buffer = "";
  let finished = false;
  try {
    for (;;) {
      const { value, done } = await reader.read();
      buffer += done ? decoder.decode() : decoder.decode(value, { stream: true });
      let start = 0;
      for (;;) {
        const nl = buffer.indexOf("\n", start);
        const end = nl === -1 ? buffer.length : nl;
        if (end - start > maxChars) {
          yield buffer.slice(start, start + maxChars);
          start += maxChars;
          continue;
        }
        if (nl === -1) break;
        yield stripCr(buffer.slice(start, nl));
        start = nl + 1;
      }
      buffer = buffer.slice(start);
      if (done) break;
    }
    finished = true;
    if (buffer !== "") yield stripCr(buffer);
  } finally {
    if (!finished) await reader.cancel().catch(() => {});
    reader.releaseLock();
  }
}

function stripCr(line: string): string {
  return line.endsWith("\r") ? line.slice(0, -1) : line;
}

/** Splits `text` into pieces of at most `maxChars` characters (one empty piece for ""). */
export function chunk(text: string, maxChars: number): string[] {
  if (text.length <= maxChars) return [text];
  const pieces: string[] = [];
  for (let i = 0; i < text.length; i += maxChars) pieces.push(text.slice(i, i + maxChars));
  return pieces;
}
