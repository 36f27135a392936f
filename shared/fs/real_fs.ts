/**
 * The Deno adapter of the {@link Fs} seam. The only file in shared/fs that touches Deno.
 *
 * @module
 */
import { JwError } from "../errors.ts";
import type { FileInfo, Fs, MkdirOptions, WriteOptions } from "./fs.ts";

const encoder = new TextEncoder();

/** Maps a Deno error onto a {@link JwError} naming the operation and path. */
function fsError(op: string, path: string, err: unknown): JwError {
  const message = `${op} ${path}: ${err instanceof Error ? err.message : String(err)}`;
  if (err instanceof Deno.errors.NotFound) return new JwError("not_found", message, { cause: err });
  if (err instanceof Deno.errors.PermissionDenied || err instanceof Deno.errors.NotCapable) {
    return new JwError("forbidden", message, { cause: err });
  }
  return new JwError("internal", message, { cause: err });
}

async function guard<T>(op: string, path: string, fn: () => Promise<T>): Promise<T> {
  try {
    return await fn();
  } catch (err) {
    throw fsError(op, path, err);
  }
}

async function writeWithMode(path: string, text: string, mode: number): Promise<void> {
  // Open (create with `mode`, truncate), fix the mode, then write: the content never sits
  // in a file with wider permissions, even when the file existed or the umask differs.
  using file = await Deno.open(path, { write: true, create: true, truncate: true, mode });
  await Deno.chmod(path, mode);
  const bytes = encoder.encode(text);
  let offset = 0;
  while (offset < bytes.length) offset += await file.write(bytes.subarray(offset));
}

/** The real file system, through `Deno.*`. Needs read/write permission for the paths used. */
export const realFs: Fs = {
  readTextFile: (path) => guard("read", path, () => Deno.readTextFile(path)),
  writeTextFile: (path: string, text: string, options: WriteOptions = {}) =>
    guard("write", path, () => {
      const { mode } = options;
      return mode === undefined ? Deno.writeTextFile(path, text) : writeWithMode(path, text, mode);
    }),
  mkdir: (path: string, options: MkdirOptions = {}) =>
    guard("mkdir", path, () => Deno.mkdir(path, { recursive: options.recursive ?? false })),
  stat: (path) =>
    guard("stat", path, async (): Promise<FileInfo> => {
      const info = await Deno.stat(path);
      return {
        isFile: info.isFile,
        isDirectory: info.isDirectory,
        mode: info.mode === null ? null : info.mode & 0o7777,
        size: info.size,
      };
    }),
  exists: (path) =>
    guard("stat", path, async () => {
      try {
        await Deno.stat(path);
        return true;
      } catch (err) {
        if (err instanceof Deno.errors.NotFound) return false;
        throw err;
      }
    }),
  chmod: (path, mode) => guard("chmod", path, () => Deno.chmod(path, mode)),
};
