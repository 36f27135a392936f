/**
 * The Fs seam: the few file operations core logic needs (key files, configs), so tests run
 * on {@link MemFs} and production on `realFs`. Paths are POSIX paths; relative paths are
 * resolved by the implementation (the process cwd for `realFs`, "/" for `MemFs`).
 *
 * Every failure is a {@link JwError}: `not_found` when the path (or its parent) does not
 * exist, `forbidden` when the OS refuses access, `internal` for anything else. Messages
 * name the path.
 *
 * @module
 */

/** What {@link Fs.stat} reports. */
export interface FileInfo {
  /** A regular file. */
  isFile: boolean;
  /** A directory. */
  isDirectory: boolean;
  /** Permission bits (`mode & 0o7777`), or `null` where the platform has none (Windows). */
  mode: number | null;
  /** Size in bytes (files); 0 for directories in `MemFs`. */
  size: number;
}

/** Options for {@link Fs.writeTextFile}. */
export interface WriteOptions {
  /**
   * Permission bits the file must end with, exactly (not narrowed by the umask), whether it
   * is created or already existed. The mode is applied before any content is written, so the
   * content is never readable under wider permissions. Default: the platform default for a
   * new file (0o666 less the umask), an existing file keeps its mode.
   */
  mode?: number;
}

/** Options for {@link Fs.mkdir}. */
export interface MkdirOptions {
  /** Create missing parents and accept an existing directory. Default false. */
  recursive?: boolean;
}

/**
 * File operations. Implementations are safe to call concurrently; they give no ordering
 * guarantees between concurrent calls on the same path.
 */
export interface Fs {
  /** The whole file as UTF-8 text. */
  readTextFile(path: string): Promise<string>;
  /** Replaces the file's content (creating it; its parent directory must exist). */
  writeTextFile(path: string, text: string, options?: WriteOptions): Promise<void>;
  /** Creates a directory. Without `recursive`, the parent must exist and the path must not. */
  mkdir(path: string, options?: MkdirOptions): Promise<void>;
  /** Facts about a path (symlinks followed). */
  stat(path: string): Promise<FileInfo>;
  /** True when the path exists (symlinks followed); never throws for a missing path. */
  exists(path: string): Promise<boolean>;
  /** Sets the permission bits. */
  chmod(path: string, mode: number): Promise<void>;
}
