/**
 * Line splitting of process output: bytes → UTF-8 text → lines without their terminator.
 *
 * @module
 */

/** Default longest line: longer runs are emitted in chunks of this many characters. */
export const DEFAULT_MAX_LINE_CHARS = 64 * 1024;

/**
 * Splits text fed in arbitrary pieces into lines. A line ends at "\n"; a "\r" right before
 * it is dropped. A run longer than `maxLineChars` without a newline is emitted in chunks,
 * so memory stays bounded whatever the process writes.
 */
export class LineSplitter {
  readonly #max: number;
  #buffer = "";

  /** @param maxLineChars longest line emitted (default {@link DEFAULT_MAX_LINE_CHARS}). */
  constructor(maxLineChars: number = DEFAULT_MAX_LINE_CHARS) {
    if (!(maxLineChars >= 1)) throw new RangeError("maxLineChars must be at least 1");
    this.#max = maxLineChars;
  }

  /** Feeds text; returns the lines it completed, in order. */
  push(text: string): string[] {
    const buffer = this.#buffer + text;
    const lines: string[] = [];
    let start = 0;
    for (;;) {
      const nl = buffer.indexOf("\n", start);
      const end = nl === -1 ? buffer.length : nl;
      if (end - start > this.#max) {
        lines.push(buffer.slice(start, start + this.#max));
        start += this.#max;
        continue;
      }
      if (nl === -1) break;
      lines.push(stripCr(buffer.slice(start, nl)));
      start = nl + 1;
    }
    this.#buffer = buffer.slice(start);
    return lines;
  }

  /** Ends the input; returns the final partial line, if there is one. */
  end(): string[] {
    const rest = this.#buffer;
    this.#buffer = "";
    return rest === "" ? [] : [stripCr(rest)];
  }
}

function stripCr(line: string): string {
  return line.endsWith("\r") ? line.slice(0, -1) : line;
}

/**
 * Reads a byte stream as lines. It locks the stream at construction and releases it when the
 * stream ends, when iteration stops early, or on {@link LineReader.cancel}. One consumer;
 * iterate at most once.
 */
export class LineReader implements AsyncIterable<string> {
  readonly #reader: ReadableStreamDefaultReader<Uint8Array>;
  readonly #max: number;
  readonly #done: Promise<void>;
  #finish!: () => void;
  #finished = false;
  #iterating = false;

  /**
   * @param stream the bytes (e.g. a child's stdout).
   * @param maxLineChars longest line emitted (default {@link DEFAULT_MAX_LINE_CHARS}).
   */
  constructor(stream: ReadableStream<Uint8Array>, maxLineChars: number = DEFAULT_MAX_LINE_CHARS) {
    this.#reader = stream.getReader();
    this.#max = maxLineChars;
    this.#done = new Promise((resolve) => (this.#finish = resolve));
  }

  /** Resolves once the stream has ended or been cancelled and is released. Never rejects. */
  get done(): Promise<void> {
    return this.#done;
  }

  /** True once {@link done} has resolved. */
  get finished(): boolean {
    return this.#finished;
  }

  /**
   * Stops reading: a pending iteration yields what it has and ends. Safe to call any time,
   * more than once, and without ever iterating (it then releases the stream).
   */
  async cancel(): Promise<void> {
    if (this.#finished) return;
    await this.#reader.cancel().catch(() => {});
    if (!this.#iterating) this.#release();
  }

  async *[Symbol.asyncIterator](): AsyncIterator<string> {
    if (this.#iterating || this.#finished) return;
    this.#iterating = true;
    const decoder = new TextDecoder();
    const splitter = new LineSplitter(this.#max);
    try {
      for (;;) {
        let chunk: ReadableStreamReadResult<Uint8Array>;
        try {
          chunk = await this.#reader.read();
        } catch {
          break; // a broken pipe ends the output like EOF does
        }
        if (chunk.done) break;
        yield* splitter.push(decoder.decode(chunk.value, { stream: true }));
      }
      yield* splitter.push(decoder.decode());
      yield* splitter.end();
    } finally {
      if (!this.#finished) await this.#reader.cancel().catch(() => {});
      this.#release();
    }
  }

  #release(): void {
    if (this.#finished) return;
    this.#finished = true;
    try {
      this.#reader.releaseLock();
    } catch {
      // already released
    }
    this.#finish();
  }
}
