/**
 * The `file` output: every message as one line of JSON (JSON lines) appended to a file,
 * rotated by size and/or age, with a choice of when data is forced to disk.
 *
 * A batch is encoded once and appended with one write (continued only if the OS takes
 * part of it), so lines never interleave and a batch is either wholly in the file or (after
 * a failed write, which is cut back off) not at all. `send` resolves once the bytes are
 * written and, with `fsync: always`, on disk; with `interval` they are synced at most once a
 * second (on the Clock) and on close; with `never` the OS decides.
 *
 * Rotation renames `path` to `path.1`, shifting `path.1` to `path.2` and so on; files beyond
 * `rotate.keep` are deleted. It happens before a batch that would take the file past
 * `rotate.size` (a batch bigger than `rotate.size` still goes whole into one file), or once
 * `rotate.every` has passed on the Clock since the file was opened (an empty file is not
 * rotated; its period restarts with its first batch). Should the file be moved or deleted
 * by someone else (logrotate), the next batch opens a new one at `path`; a file truncated
 * in place (copytruncate) is simply appended to.
 *
 * Disk errors (ENOSPC, EACCES, a missing or unwritable directory) fail the batch as
 * `unavailable` with the OS's reason; the file is reopened on the next send.
 *
 * @module
 */
import { dirname } from "node:path";
import type { FileOutputConfig } from "../../shared/config/outputs.ts";
import { JwError } from "../../shared/errors.ts";
import type { Backend, BackendDeps, OutboxItem } from "./backend.ts";

/** Permission bits of a file the backend creates. */
const FILE_MODE = 0o640;
/** Permission bits of directories the backend creates. */
const DIR_MODE = 0o750;
/** `fsync: interval`: the most often data is synced. */
const SYNC_INTERVAL_MS = 1000;

const encoder = new TextEncoder();

interface OpenFile {
  file: Deno.FsFile;
  /** Bytes in the file. */
  size: number;
  /** Clock time it was opened (for `rotate.every`). */
  openedAt: number;
  /** Its inode, to notice the path being moved or deleted under us. */
  ino: number | null;
}

/**
 * Creates a file backend writing to `config.path` (its directory is created on the first
 * send). Nothing is opened until then. `send` is not reentrant (the pipeline never calls it
 * twice at once); `close` waits for a running send's file work to finish.
 */
export function createFileBackend(
  config: FileOutputConfig,
  deps: BackendDeps,
): Backend & AsyncDisposable {
  return new FileBackend(config, deps);
}

class FileBackend implements Backend, AsyncDisposable {
  readonly name: string;
  #config: FileOutputConfig;
  #deps: BackendDeps;
  #open: OpenFile | null = null;
  #closed = false;
  /** Data written and not yet synced (`fsync: interval`). */
  #dirty = false;
  #lastSync = 0;
  #syncTimer: number | null = null;
  /** A sync started by the interval timer. */
  #syncing: Promise<void> | null = null;
  /** The last send failed (logged once until one succeeds). */
  #failing = false;
  /** The send in progress, so close() can wait for it. */
  #sending: Promise<void> | null = null;

  constructor(config: FileOutputConfig, deps: BackendDeps) {
    this.name = config.name;
    this.#config = config;
    this.#deps = deps;
  }

  send(batch: readonly OutboxItem[]): Promise<void> {
    if (this.#closed) {
      return Promise.reject(new JwError("closed", `output ${this.name}: closed`));
    }
    if (batch.length === 0) return Promise.resolve();
    const p = this.#send(batch);
    this.#sending = p.then(() => {}, () => {});
    return p;
  }

  async #send(batch: readonly OutboxItem[]): Promise<void> {
    let text = "";
    for (const item of batch) text += item.body + "\n";
    const bytes = encoder.encode(text);
    const path = this.#config.path;
    try {
      let f = await this.#ensureOpen();
      if (this.#mustRotate(f, bytes.length)) {
        await this.#rotate(f);
        f = await this.#ensureOpen();
      }
      await this.#append(f, bytes);
      await this.#afterWrite(f);
      if (this.#failing) {
        this.#failing = false;
        this.#deps.logger.info("output file writable again", { output: this.name, path });
      }
    } catch (err) {
      await this.#closeFile(); // start afresh on the next send
      throw this.#unavailable(`cannot write ${path}`, err);
    }
  }

  /** The open file, opening (and creating) it when needed or when `path` changed under us. */
  async #ensureOpen(): Promise<OpenFile> {
    const path = this.#config.path;
    if (this.#open) {
      const now = await statOrNull(path);
      if (now && (this.#open.ino === null || now.ino === this.#open.ino)) {
        this.#open.size = now.size; // someone may have truncated it (logrotate copytruncate)
        return this.#open;
      }
      this.#deps.logger.warn("output file moved or deleted; opening a new one", {
        output: this.name,
        path,
      });
      await this.#closeFile();
    }
    await Deno.mkdir(dirname(path), { recursive: true, mode: DIR_MODE });
    const existed = (await statOrNull(path)) !== null;
    const file = await Deno.open(path, { append: true, create: true, mode: FILE_MODE });
    try {
      if (!existed) {
        // The umask may have narrowed the mode given to open().
        await Deno.chmod(path, FILE_MODE);
        if (this.#config.fsync === "always") await syncDir(dirname(path));
      }
      const info = await file.stat();
      this.#open = {
        file,
        size: info.size,
        openedAt: this.#deps.clock.now(),
        ino: info.ino ?? null,
      };
    } catch (err) {
      file.close();
      throw err;
    }
    this.#deps.logger.info("output file opened", {
      output: this.name,
      path,
      size: this.#open.size,
    });
    return this.#open;
  }

  #mustRotate(f: OpenFile, adding: number): boolean {
    const every = this.#config.rotate.every;
    const aged = every !== undefined && this.#deps.clock.now() - f.openedAt >= every;
    if (f.size === 0) {
      // Nothing to rotate away: the new period starts with this batch.
      if (aged) f.openedAt = this.#deps.clock.now();
      return false;
    }
    return aged || f.size + adding > this.#config.rotate.size;
  }

  /** Closes the current file and shifts `path` → `path.1` → … → `path.KEEP`. */
  async #rotate(f: OpenFile): Promise<void> {
    const path = this.#config.path;
    const keep = this.#config.rotate.keep;
    if (this.#config.fsync !== "never") await this.#sync(f);
    await this.#closeFile();
    // Drop the oldest, and any left over from a larger `keep` before.
    for (let n = keep; n < keep + 1000; n++) {
      if (n === 0) continue;
      if (!(await removeIfExists(`${path}.${n}`)) && n > keep) break;
    }
    for (let n = keep - 1; n >= 1; n--) await renameIfExists(`${path}.${n}`, `${path}.${n + 1}`);
    if (keep > 0) await Deno.rename(path, `${path}.1`);
    else await removeIfExists(path);
    if (this.#config.fsync === "always") await syncDir(dirname(path));
    this.#deps.logger.info("output file rotated", { output: this.name, path, size: f.size });
  }

  async #append(f: OpenFile, bytes: Uint8Array): Promise<void> {
    let done = 0;
    try {
      while (done < bytes.length) done += await f.file.write(bytes.subarray(done));
    } catch (err) {
      // Cut a partial batch back off, so the retry does not leave half a line behind.
      if (done > 0) await f.file.truncate(f.size).catch(() => {});
      throw err;
    }
    f.size += bytes.length;
  }

  async #afterWrite(f: OpenFile): Promise<void> {
    switch (this.#config.fsync) {
      case "always":
        await this.#sync(f);
        return;
      case "interval": {
        this.#dirty = true;
        const wait = this.#lastSync + SYNC_INTERVAL_MS - this.#deps.clock.now();
        if (wait <= 0) {
          await this.#sync(f);
        } else if (this.#syncTimer === null) {
          this.#syncTimer = this.#deps.clock.setTimeout(() => this.#syncLater(), wait);
        }
        return;
      }
      case "never":
        return;
    }
  }

  /** The interval timer: syncs in the background; a failure is logged (the next send tells). */
  #syncLater(): void {
    this.#syncTimer = null;
    const f = this.#open;
    if (!f || !this.#dirty || this.#syncing) return;
    this.#syncing = this.#sync(f)
      .catch((err) => {
        this.#deps.logger.warn("output file sync failed", {
          output: this.name,
          path: this.#config.path,
          error: errorText(err),
        });
      })
      .finally(() => this.#syncing = null);
  }

  async #sync(f: OpenFile): Promise<void> {
    if (this.#syncing) await this.#syncing;
    this.#dirty = false;
    this.#lastSync = this.#deps.clock.now();
    try {
      await f.file.syncData();
    } catch (err) {
      this.#dirty = true;
      throw err;
    }
  }

  async #closeFile(): Promise<void> {
    if (this.#syncTimer !== null) {
      this.#deps.clock.clearTimeout(this.#syncTimer);
      this.#syncTimer = null;
    }
    if (this.#syncing) await this.#syncing;
    const f = this.#open;
    this.#open = null;
    if (!f) return;
    try {
      f.file.close();
    } catch {
      // already closed
    }
  }

  #unavailable(what: string, err: unknown): JwError {
    const reason = errorText(err);
    if (!this.#failing) {
      this.#failing = true;
      this.#deps.logger.warn("output file failing", {
        output: this.name,
        error: `${what}: ${reason}`,
      });
    }
    return new JwError("unavailable", `output ${this.name}: ${what}: ${reason}`, { cause: err });
  }

  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    if (this.#sending) await this.#sending;
    const f = this.#open;
    if (f && this.#dirty && this.#config.fsync !== "never") {
      await this.#sync(f).catch((err) => {
        this.#deps.logger.warn("output file sync failed", {
          output: this.name,
          error: errorText(err),
        });
      });
    }
    await this.#closeFile();
  }

  [Symbol.asyncDispose](): Promise<void> {
    return this.close();
  }
}

async function statOrNull(path: string): Promise<Deno.FileInfo | null> {
  try {
    return await Deno.stat(path);
  } catch (err) {
    if (err instanceof Deno.errors.NotFound) return null;
    throw err;
  }
}

async function removeIfExists(path: string): Promise<boolean> {
  try {
    await Deno.remove(path);
    return true;
  } catch (err) {
    if (err instanceof Deno.errors.NotFound) return false;
    throw err;
  }
}

async function renameIfExists(from: string, to: string): Promise<void> {
  try {
    await Deno.rename(from, to);
  } catch (err) {
    if (!(err instanceof Deno.errors.NotFound)) throw err;
  }
}

/** Makes a directory entry change (create, rename) durable. Best effort. */
async function syncDir(dir: string): Promise<void> {
  try {
    using d = await Deno.open(dir, { read: true });
    await d.sync();
  } catch {
    // Not every platform or file system can sync a directory.
  }
}

/** An OS error as "No space left on device (ENOSPC)". */
function errorText(err: unknown): string {
  if (!(err instanceof Error)) return String(err);
  const code = (err as { code?: unknown }).code;
  const msg = err.message.replace(/ \(os error \d+\)/, "");
  return typeof code === "string" && !msg.includes(code) ? `${msg} (${code})` : msg;
}
