/**
 * The Fs seam: an {@link Fs} interface, the real Deno-backed `realFs`, and the in-memory
 * `MemFs` for tests.
 *
 * @module
 */
export type { FileInfo, Fs, MkdirOptions, WriteOptions } from "./fs.ts";
export { realFs } from "./real_fs.ts";
export { MemFs } from "./mem_fs.ts";
